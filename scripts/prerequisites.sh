#!/usr/bin/env bash
# Installs what building and testing fleetlog needs on a fresh Debian 12 machine with Rust:
# - g++ and make: RocksDB is compiled from source;
# - libclang (the development package): bindgen generates RocksDB's bindings and loads libclang
#   at build time, as the clang-sys crate finds it (see find_libclang below);
# - python3 and openssl: the independent audit script and the TLS tests' certificates;
# - curl: the hands-off tests and demo post Alertmanager's webhook with it, as Alertmanager would
#   (Debian 12's base image has no curl);
# - fallocate and mount (util-linux): the full-disk test fills a small tmpfs;
# - /dev/fuse: the power-cut test mounts a test-only FUSE file system (the kernel's, no package);
# - with --tests only: chromium and chromium-driver, which the browser tests drive over WebDriver
#   (tests/common/webdriver.rs). They are left out otherwise, so `make run` and `make build` do not
#   pull a browser onto a machine that only serves;
# - with --tests only: systemd, whose systemd-analyze checks the packaged units (a container image
#   may have none);
# - with --tests only: Schemathesis (from PyPI, pinned below), which tests/openapi.rs runs against a
#   real server with the served OpenAPI document. It goes into a virtual environment of its own
#   under the tools directory (FLEETLOG_TOOLS_DIR, default ~/.cache/fleetlog-tools), so it needs
#   no root and leaves the system's Python alone; python3-venv is asked for where the Python has
#   no venv module (Debian's own python3).
#
# Usage: prerequisites.sh [--tests] [--print-missing], the flags in any order.
# `--print-missing` only prints the packages it would install, one per line, and installs nothing:
# tests use it to check the detection itself.
set -euo pipefail

# clang-sys (which bindgen uses) looks for exactly these file names, without a suffix after `.so`:
# `libclang.so` or `libclang-<version>.so`. Debian's images ship `libclang-cpp.so.14`, which matches
# neither and cannot be loaded by bindgen: only libclang-dev provides a name that clang-sys accepts.
# FLEETLOG_LIBCLANG_DIRS replaces the directories searched (a test points it at a directory of its own).
libclang_directories() {
  if [ -n "${FLEETLOG_LIBCLANG_DIRS:-}" ]; then
    printf '%s\n' $FLEETLOG_LIBCLANG_DIRS
    return
  fi
  [ -n "${LIBCLANG_PATH:-}" ] && printf '%s\n' "$LIBCLANG_PATH"
  if command -v llvm-config >/dev/null 2>&1; then llvm-config --libdir; fi
  printf '%s\n' /usr/lib/llvm-*/lib /usr/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu \
    /usr/local/lib /usr/local/llvm*/lib
}

find_libclang() {
  local directory file name
  while IFS= read -r directory; do
    [ -d "$directory" ] || continue
    for file in "$directory"/libclang.so "$directory"/libclang-*.so; do
      [ -e "$file" ] || continue
      name=${file##*/}
      # `libclang-*.so` must carry a version number: `libclang-cpp.so` is another library.
      if [ "$name" = libclang.so ] || [[ "$name" =~ ^libclang-[0-9][0-9.]*\.so$ ]]; then
        echo "$file"
        return 0
      fi
    done
  done < <(libclang_directories)
  return 1
}

# The Schemathesis the tests run: tests/openapi.rs finds it at this path.
SCHEMATHESIS_VERSION=4.32.5
tools_directory=${FLEETLOG_TOOLS_DIR:-$HOME/.cache/fleetlog-tools}
schemathesis_environment=$tools_directory/schemathesis

# Whether the pinned Schemathesis is installed; a venv of another version counts as missing.
have_schemathesis() {
  local version
  version=$("$schemathesis_environment/bin/schemathesis" --version 2>/dev/null) || return 1
  [[ "$version" == *" $SCHEMATHESIS_VERSION" ]]
}

install_schemathesis() {
  echo "installing: schemathesis $SCHEMATHESIS_VERSION into $schemathesis_environment" >&2
  rm -rf "$schemathesis_environment"
  mkdir -p "$tools_directory"
  python3 -m venv "$schemathesis_environment"
  "$schemathesis_environment/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
  if ! have_schemathesis; then
    echo "schemathesis $SCHEMATHESIS_VERSION was installed, yet $schemathesis_environment/bin/schemathesis does not run" >&2
    exit 1
  fi
}

print_missing=false
tests=false
for argument in "$@"; do
  case "$argument" in
    --print-missing) print_missing=true ;;
    --tests) tests=true ;;
    *)
      echo "usage: $0 [--tests] [--print-missing]" >&2
      exit 2
      ;;
  esac
done

missing=()
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v fallocate >/dev/null 2>&1 || missing+=(util-linux)
find_libclang >/dev/null || missing+=(libclang-dev)
if [ "$tests" = true ]; then
  # Debian names the packages chromium and chromium-driver; the commands are chromium and chromedriver.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi
# Tools from PyPI rather than Debian: installed after the packages, with the Python they bring.
missing_python_tools=()
if [ "$tests" = true ]; then
  have_schemathesis || missing_python_tools+=(schemathesis)
fi

if [ "$print_missing" = true ]; then
  [ ${#missing[@]} -gt 0 ] && printf '%s\n' "${missing[@]}"
  [ ${#missing_python_tools[@]} -gt 0 ] && printf '%s\n' "${missing_python_tools[@]}"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if [ ! -e /dev/fuse ]; then
  echo "warning: /dev/fuse is missing: the power-cut test will fail (load the kernel's fuse module)" >&2
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"
  fi
  if ! find_libclang >/dev/null; then
    echo "libclang-dev is installed, yet no libclang.so or libclang-N.so was found" >&2
    exit 1
  fi
fi
if [ ${#missing_python_tools[@]} -gt 0 ]; then
  install_schemathesis
fi
