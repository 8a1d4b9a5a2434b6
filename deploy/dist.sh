#!/usr/bin/env bash
# dist.sh ARCH (`make dist ARCH=amd64|arm64`) writes
# dist/ledge_<version>_<ARCH>.deb:
#
#   /usr/bin/ledge                       bin/linux-ARCH/ledge (deploy/cross.sh)
#   /usr/lib/ledge/                      the minimal OpenCV it links (found
#                                        through its RUNPATH), the FFmpeg
#                                        videoio plugin, ONNX Runtime
#   /lib/systemd/system/ledge.service    deploy/ledge.service
#   /etc/ledge/ledge.yaml                deploy/package/ledge.yaml (conffile)
#   /usr/share/doc/ledge/                README and docs
#
# Depends: the Debian libraries these link, as dpkg-shlibdeps computes them,
# and adduser (for the postinst's ledge user).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH="${1:-}"
say() { printf 'dist: %s\n' "$*" >&2; }
die() { printf 'dist: error: %s\n' "$*" >&2; exit 1; }
case "$ARCH" in
  amd64) triplet=x86_64-linux-gnu; ort_dir="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}" ;;
  arm64) triplet=aarch64-linux-gnu; ort_dir="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}/arm64" ;;
  *) die "usage: dist.sh amd64|arm64 (got '${ARCH}')" ;;
esac

bash deploy/cross.sh "$ARCH"

# A Debian version: tag v1.2.3 -> 1.2.3, 5 commits later -> 1.2.3+git5.gabcdef;
# no tag -> 0~git<date>.<commit>; uncommitted changes add +dirty.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git diff --quiet HEAD 2>/dev/null || echo +dirty)
if describe=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
  version=$(sed -E 's/^v//; s/-([0-9]+)-g/+git\1./' <<<"$describe")$dirty
else
  version="0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$commit$dirty"
fi

stage="dist/stage-$ARCH"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/ledge" "$stage/lib/systemd/system" \
  "$stage/etc/ledge" "$stage/usr/share/doc/ledge"
install -m 0755 "bin/linux-$ARCH/ledge" "$stage/usr/bin/ledge"
cp -a "bin/linux-$ARCH/lib/." "$stage/usr/lib/ledge/"
install -m 0644 "$ort_dir/libonnxruntime.so.1" "$stage/usr/lib/ledge/libonnxruntime.so.1"
"$triplet-strip" --strip-unneeded "$stage"/usr/lib/ledge/libopencv_*.so.*.*.* "$stage"/usr/lib/ledge/libopencv_videoio_ffmpeg*.so
install -m 0644 deploy/ledge.service "$stage/lib/systemd/system/ledge.service"
install -m 0640 deploy/package/ledge.yaml "$stage/etc/ledge/ledge.yaml"
install -m 0644 README.md "$stage/usr/share/doc/ledge/README.md"
cp -r docs "$stage/usr/share/doc/ledge/docs"
cat >"$stage/usr/share/doc/ledge/copyright" <<EOF
ledge, with OpenCV $(basename "$(ls "$stage"/usr/lib/ledge/libopencv_core.so.*.*.*)" | sed 's/.*\.so\.//') (Apache-2.0, built from
Debian's opencv source package) and ONNX Runtime $(cat "$ort_dir/onnxruntime.version") (MIT, from the
onnxruntime-node npm package) in /usr/lib/ledge.
EOF
install -m 0755 deploy/package/postinst deploy/package/prerm deploy/package/postrm "$stage/DEBIAN/"
echo /etc/ledge/ledge.yaml >"$stage/DEBIAN/conffiles"

# Depends from the ELF files, with dpkg-shlibdeps (which wants a
# debian/control to read). Libraries in /usr/lib/ledge are the package's own.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
printf 'Source: ledge\n\nPackage: ledge\nArchitecture: any\n' >"$work/debian/control"
abs="$PWD/$stage"
elves=(-e"$abs/usr/bin/ledge")
for f in "$abs"/usr/lib/ledge/*; do [ -L "$f" ] || elves+=(-e"$f"); done
shlibs=$(cd "$work" && DEB_HOST_ARCH="$ARCH" dpkg-shlibdeps -O -l"$abs/usr/lib/ledge" "${elves[@]}" 2>"$work/shlibdeps.err") ||
  die "dpkg-shlibdeps: $(cat "$work/shlibdeps.err")"
grep -v "^$" "$work/shlibdeps.err" >&2 || true
depends="${shlibs#shlibs:Depends=}"
[ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies"

cat >"$stage/DEBIAN/control" <<EOF
Package: ledge
Version: $version
Architecture: $ARCH
Maintainer: ledge developers <ledge@localhost>
Section: net
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $depends, adduser
Recommends: docker.io
Description: edge appliance for ML inference
 One daemon for gateways, Raspberry Pis and Jetsons: an agent that keeps
 Docker-container modules in the state a deployment manifest asks for, an
 MQTT hub that speaks the Azure IoT Hub device API, a vision pipeline engine
 (OpenCV capture, ONNX Runtime detection, actions), a model store and a web
 dashboard. Runs as the ledge service; configuration in /etc/ledge/ledge.yaml.
EOF
mkdir -p dist
deb="dist/ledge_${version}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
rm -rf "$stage"
say "wrote $deb ($(du -h "$deb" | cut -f1)); Depends: $depends, adduser"
echo "$deb"
