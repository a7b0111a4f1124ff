"""A minimal Kubernetes API server on loopback, enough for `helm install` to run
offline: discovery, create, get, list and update of the kinds the chart uses.
It records every object created (Helm's own protobuf release records aside).
Test scaffolding only: no validation, no watches, no admission."""

import json, threading, re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

RESOURCES = {
    ("", "v1"): [("namespaces", "Namespace", False), ("secrets", "Secret", True), ("services", "Service", True),
                 ("serviceaccounts", "ServiceAccount", True), ("configmaps", "ConfigMap", True),
                 ("pods", "Pod", True), ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    ("apps", "v1"): [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    ("rbac.authorization.k8s.io", "v1"): [("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
                                          ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    ("apiextensions.k8s.io", "v1"): [("customresourcedefinitions", "CustomResourceDefinition", False)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("coordination.k8s.io", "v1"): [("leases", "Lease", True)],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True),
                                      ("podmonitors", "PodMonitor", True)],
    ("kubeledger.io", "v1alpha1"): [("consortia", "Consortium", False), ("members", "Member", True)],
}

class Store:
    def __init__(self):
        self.objects = {}  # path -> object
        self.created = []  # objects in creation order
        self.lock = threading.Lock()

def make_handler(store):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def _send(self, code, obj):
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
        def _not_found(self):
            self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404})
        def _body(self):
            n = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(n)
            if "protobuf" in (self.headers.get("Content-Type") or ""):
                # Helm's release records (Secrets) come as protobuf; they are
                # Helm's own bookkeeping, not chart output: keep them opaque.
                return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": f"helm-release-{len(store.created)}"}, "opaque": True}
            return json.loads(raw or b"{}")
        def do_GET(self):
            path = urlparse(self.path).path.rstrip("/")
            if path == "/version":
                return self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            if path == "/apis":
                groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                           "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for (g, v) in RESOURCES if g]
                return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            for (g, v), res in RESOURCES.items():
                gv = f"/api/{v}" if not g else f"/apis/{g}/{v}"
                if path == gv:
                    return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{g}/{v}" if g else v,
                        "resources": [{"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
                                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} for (n, k, ns) in res]})
            with store.lock:
                if path in store.objects:
                    return self._send(200, store.objects[path])
                prefix = path + "/"
                items = [o for p, o in store.objects.items() if p.startswith(prefix) and "/" not in p[len(prefix):]]
            if self._is_collection(path):
                return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
            return self._not_found()
        def _is_collection(self, path):
            return any(path.endswith("/" + n) for res in RESOURCES.values() for (n, _, _) in res)
        def do_POST(self):
            path = urlparse(self.path).path.rstrip("/")
            obj = self._body()
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", f"uid-{len(store.created)}")
            meta["resourceVersion"] = "1"
            if obj.get("kind") == "CustomResourceDefinition":
                obj["status"] = {"conditions": [{"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}],
                                 "acceptedNames": obj["spec"]["names"]}
            with store.lock:
                store.objects[f"{path}/{meta['name']}"] = obj
                if not obj.get("opaque"):
                    store.created.append(obj)
            self._send(201, obj)
        def do_PUT(self):
            path = urlparse(self.path).path.rstrip("/")
            obj = self._body()
            with store.lock:
                store.objects[path] = obj
            self._send(200, obj)
        def log_message(self, *args):
            pass
    return H

def start():
    store = Store()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(store))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, store
