#!/usr/bin/env bash
# cross-deps.sh ARCH installs what `make cross`, `make dist` and `make
# test-arm64` need to build ledge for ARCH (amd64 or arm64) on a Debian 12
# amd64 machine (run as root). Like deps.sh it is idempotent: a second run
# checks and returns in about a second. It runs only when a target for ARCH
# is asked for; `make deps` (the amd64 developer set-up) never calls it.
#
#   both:   cmake ninja-build dpkg-dev (the minimal OpenCV build, packaging)
#           and the FFmpeg, libjpeg, libpng, zlib headers for ARCH
#   arm64:  dpkg --add-architecture arm64, crossbuild-essential-arm64,
#           qemu-user-static, libstdc++6:arm64 and the :arm64 -dev packages;
#           ONNX Runtime for arm64 (npm onnxruntime-node, linux/arm64) in
#           $LEDGE_LIB_DIR/arm64 (default /usr/local/lib/ledge/arm64)
#
# Why not Debian's :arm64 OpenCV packages: libopencv-imgcodecs406 and
# libopencv-videoio406 depend on GDAL and friends, which are not
# Multi-Arch: same, so installing libopencv-*-dev:arm64 would remove the
# amd64 libopencv-dev that `make test` needs. Cross builds link the minimal
# OpenCV that deploy/opencv.sh builds from Debian's own OpenCV source instead.
#
# Adding arm64 makes apt keep Multi-Arch: same libraries at one version on
# both architectures: the first run may upgrade a few dozen amd64 libraries
# to the current Debian 12 point release. Nothing amd64 is removed.
set -euo pipefail

ARCH="${1:-}"
ORT_VERSION="${ORT_VERSION:-1.24.3}"
LIB_DIR="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}"

say() { printf 'cross-deps: %s\n' "$*" >&2; }
die() { printf 'cross-deps: error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
  amd64) triplet=x86_64-linux-gnu; ort_arch=x64; ort_dir="$LIB_DIR" ;;
  arm64) triplet=aarch64-linux-gnu; ort_arch=arm64; ort_dir="$LIB_DIR/arm64" ;;
  *) die "usage: cross-deps.sh amd64|arm64 (got '${ARCH}')" ;;
esac
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "cross builds are set up for a Debian amd64 build machine"
[ "$(id -u)" -eq 0 ] || die "run as root: apt, dpkg --add-architecture and /usr/local need it"

# The developer set-up comes first: Go, the amd64 ONNX Runtime, pkg-config.
bash "$(dirname "$0")/deps.sh"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

pkgs=(cmake ninja-build dpkg-dev fakeroot)
for p in libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev; do
  pkgs+=("$p:$ARCH")
done
if [ "$ARCH" = arm64 ]; then
  pkgs+=(crossbuild-essential-arm64 qemu-user-static binfmt-support libc6:arm64 libstdc++6:arm64)
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding the arm64 architecture to dpkg"
    dpkg --add-architecture arm64
    added=1
  fi
fi
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  lock() { while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1; do say "dpkg is busy, waiting"; sleep 10; done; }
  say "installing ${missing[*]}"
  lock
  if [ -n "${added:-}" ] || ! apt-cache show "libc6:$ARCH" >/dev/null 2>&1; then
    apt-get update -q
  fi
  lock
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$ARCH" = arm64 ]; then
  command -v "$triplet-gcc" >/dev/null || die "$triplet-gcc missing after install"
  command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static missing after install"
  # binfmt: arm64 programs run as if native (a test that starts itself
  # again needs it; go test -exec covers the rest). Without systemd nobody
  # mounts binfmt_misc: do it here.
  if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
      say "warning: cannot mount binfmt_misc: arm64 programs run only through qemu-aarch64-static"
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
fi

# --- ONNX Runtime for ARCH ---------------------------------------------------
if [ "$(cat "$ort_dir/onnxruntime.version" 2>/dev/null)" != "$ORT_VERSION" ] || [ ! -f "$ort_dir/libonnxruntime.so.1" ]; then
  command -v npm >/dev/null || die "npm is needed once to fetch ONNX Runtime (apt-get install npm)"
  say "fetching ONNX Runtime $ORT_VERSION ($ort_arch) from npm onnxruntime-node"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
  tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" "package/bin/napi-v6/linux/$ort_arch/libonnxruntime.so.1"
  mkdir -p "$ort_dir"
  install -m 0644 "$tmp/package/bin/napi-v6/linux/$ort_arch/libonnxruntime.so.1" "$ort_dir/libonnxruntime.so.1"
  echo "$ORT_VERSION" >"$ort_dir/onnxruntime.version"
  say "ONNX Runtime ($ort_arch) installed in $ort_dir"
fi
