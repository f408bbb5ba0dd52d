#!/usr/bin/env bash
# Installs what building fleetlog needs on a fresh Debian 12 machine with Rust: a C++ compiler and
# libclang (RocksDB is compiled from source; its bindings are generated with bindgen). The tests
# also use openssl (certificates for the TLS tests) and fallocate and mount (the full-disk test).
set -euo pipefail

missing=()
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v fallocate >/dev/null 2>&1 || missing+=(util-linux)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"
  fi
fi
