#!/usr/bin/env bash
# Installs what building and testing kubeledger needs on a Debian/Ubuntu
# machine: protoc (gRPC code generation), libclang (RocksDB's bindgen), and Go,
# openssl and curl for the test control plane.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# bindgen loads libclang.so / libclang-N.so (not libclang-cpp, which other
# packages bring along and which bindgen cannot use).
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  find /usr/lib /usr/lib64 /usr/local/lib -maxdepth 3 -regextype posix-extended \
    -regex '.*/libclang(-[0-9.]+)?\.so(\.[0-9.]+)?' -print -quit 2>/dev/null | grep -q .
}
have_libclang || need+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The test control plane (tests/k8s): Go builds it, openssl makes its
# throwaway certificates, curl waits for its health endpoints.
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v ss >/dev/null 2>&1 || need+=(iproute2)

if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
