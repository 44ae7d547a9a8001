#!/usr/bin/env bash
# Installs the Debian packages PocketSAM builds against, when missing: OpenBLAS (fp32 path),
# libturbojpeg and libpng (image I/O), valgrind (the C ABI memory test), the aarch64 cross compiler
# and qemu-user (the NEON kernel tests run under qemu-aarch64), cmake and pkg-config (the install test builds the C
# example against an installed prefix both ways), and python3-pip (to fetch test assets from PyPI).
set -euo pipefail
pkgs=(libopenblas-dev libturbojpeg0-dev libpng-dev valgrind gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
      cmake pkg-config)
command -v pip >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
