"""Driver of scripts/bench-reconfiguration.sh (see there)."""
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN, RATE = sys.argv[1], int(sys.argv[2])
PORT = 20000 + random.randrange(12000)
DIR = tempfile.mkdtemp(prefix="kl-reconf.")
EPS = [f"http://127.0.0.1:{PORT + 10 * i}" for i in range(4)]


def kl(*args, key=None, endpoint=EPS[0], check=True):
    cmd = [BIN, "--endpoint", endpoint, "-o", "json"]
    if key:
        cmd += ["--key", key]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise SystemExit(f"kubeledger {' '.join(args)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def admin(org):
    return os.path.join(DIR, org, "admin.key")


def status(i=0):
    return kl("status", endpoint=EPS[i])


def committed():
    s = status()
    return s["txs_committed"], time.time(), s["height"]


def window(label, seconds=None, until=None):
    """Committed tx/s over a phase: a fixed time, or until `until()` returns."""
    c0, t0, h0 = committed()
    if until:
        result = until()
    else:
        time.sleep(seconds)
        result = None
    c1, t1, h1 = committed()
    rate = (c1 - c0) / (t1 - t0)
    print(f"  {label:<44} {rate:8.0f} tx/s  ({t1 - t0:5.1f} s, heights {h0}-{h1})")
    rates.append((label, rate))
    return result


def wait_height(h):
    while status()["height"] < h:
        time.sleep(0.2)


def change(*args, org):
    out = kl(*args, key=admin(org))
    return out


def gaps_around(h, n=6):
    ts = [kl("block", str(x))["timestamp_ms"] for x in range(max(1, h - n), h + n)]
    hs = list(range(max(1, h - n), h + n))
    before = [b - a for (a, b, x) in zip(ts, ts[1:], hs[1:]) if x < h]
    after = [b - a for (a, b, x) in zip(ts, ts[1:], hs[1:]) if x > h]
    return statistics.median(before), statistics.median(after)


rates = []
up = subprocess.Popen(
    [BIN, "up", "--dir", DIR, "--nodes", "4", "--same-host", "--base-port", str(PORT),
     "--block-interval", "200ms", "--admission", "vote", "--vote-threshold", "67",
     "--observers", "1", "--no-restart"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
bench = None
try:
    for _ in range(300):
        try:
            if status()["height"] >= 0:
                break
        except SystemExit:
            time.sleep(0.2)
    duration = 150
    bench = subprocess.Popen(
        [BIN, "--endpoint", EPS[0], "-o", "json", "bench", "--endpoints", ",".join(EPS[1:]),
         "--txs", str(RATE * duration), "--rate", str(RATE), "--value-size", "100",
         "--timeout", "400s"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    print(f"4 replicas on loopback, admission Vote 67% (at least), offered load {RATE} tx/s")
    time.sleep(8)
    window("before any change", 10)

    # A fifth member: keys, proposal by org2, approvals of org3 and org4.
    # Its node, node-4, already runs as an observer (up --observers 1).
    kl("keygen", "--out", os.path.join(DIR, "org5-admin.key"))
    node_pub = os.path.join(DIR, "node-4", "node.key")

    def admit():
        p = change("member", "propose", "--member", "org5", "--organization", "Org 5",
                   "--admin-key", os.path.join(DIR, "org5-admin.key"),
                   "--node", f"node-4={node_pub}@127.0.0.1:{PORT + 41}", org="org2")
        change("member", "vote", str(p["proposal_id"]), org="org3")
        last = change("member", "vote", str(p["proposal_id"]), org="org4")
        return last["message"]

    def promoted(observer):
        """Waits until org5's node has switched role; the epoch's base."""
        while True:
            s = kl("status", endpoint=f"http://127.0.0.1:{PORT + 40}")
            if s["observer"] == observer and s["epoch_base"] > 0:
                return s
            time.sleep(0.2)

    print("  admit org5:", window("during admission (propose + 2 votes)", until=admit))
    grown = window("until the set of 5 takes over (node-4 votes)", until=lambda: promoted(False))
    print(f"  validator set 4 -> 5 after checkpoint {grown['epoch_base']}; node-4 is replica "
          f"{grown['replica_index']} of {grown['validators']}")
    window("after admission: 5 validators", 10)

    def set_interval(ms):
        p = change("config", "set", "--block-interval", f"{ms}ms", org="org1")
        for org in ("org2", "org3", "org4"):
            last = change("member", "vote", str(p["proposal_id"]), org=org)
        props = kl("member", "list")["proposals"]
        eff = next(x for x in props if x["id"] == p["proposal_id"])["effective_height"]
        wait_height(eff + 2)
        return eff

    slow_from = window("during 200 ms -> 1 s (vote until in force)", until=lambda: set_interval(1000))
    window("after: 1 s blocks", 15)
    fast_from = window("during 1 s -> 200 ms (vote until in force)", until=lambda: set_interval(200))
    window("after: 200 ms blocks again", 10)

    def remove():
        p = change("member", "remove", "org5", org="org1")
        for org in ("org2", "org3"):
            last = change("member", "vote", str(p["proposal_id"]), org=org)
        last = change("member", "vote", str(p["proposal_id"]), org="org4")
        return last["message"]

    print("  remove org5:", window("during removal (propose + 3 votes)", until=remove))
    shrunk = window("until the set of 4 takes over (node-4 observes)", until=lambda: promoted(True))
    print(f"  validator set 5 -> 4 after checkpoint {shrunk['epoch_base']}")
    window("after removal: 4 validators", 10)

    report = json.loads(bench.communicate(timeout=600)[0])
    b1, a1 = gaps_around(slow_from)
    b2, a2 = gaps_around(fast_from)
    print(f"block interval 200 ms -> 1 s announced for height {slow_from}: median gap {b1} ms before, {a1} ms after")
    print(f"block interval 1 s -> 200 ms announced for height {fast_from}: median gap {b2} ms before, {a2} ms after")
    print(f"load: {report['txs']} submitted, {report['committed']} committed, {report['failed']} refused, "
          f"{report['not_committed']} not committed; p50 {report['latency_ms']['p50']:.0f} ms, "
          f"p99 {report['latency_ms']['p99']:.0f} ms")
    obs = kl("status", endpoint=f"http://127.0.0.1:{PORT + 40}")
    print(f"node-4 (org5's node, removed again): observer={obs['observer']}, height {obs['height']} "
          f"(validators at {status()['height']}, checkpoint interval 10)")
    tip = min(status(i)["height"] for i in range(4))
    hashes = {kl("block", str(tip), endpoint=EPS[i])["hash"] for i in range(4)}
    print(f"replicas agree at height {tip}: {len(hashes) == 1}")
    cfg = kl("config", "show")
    print(f"configuration version {cfg['version']}, members {', '.join(cfg['members'])}")
    if report["failed"] or report["not_committed"] or len(hashes) != 1:
        sys.exit(1)
finally:
    if bench and bench.poll() is None:
        bench.kill()
    os.killpg(up.pid, signal.SIGINT)
    try:
        up.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
    shutil.rmtree(DIR, ignore_errors=True)
