#!/usr/bin/env bash
# cross.sh ARCH builds bin/linux-ARCH/ledge, the binary that packages ship,
# for ARCH (amd64 or arm64) on this amd64 machine (`make cross ARCH=...`).
#
# It links the minimal OpenCV of deploy/opencv.sh (core, imgproc, imgcodecs,
# videoio; built once and cached), only the modules ledge calls: gocv's
# wrappers for the others are compiled into sections the linker drops
# (-ffunction-sections, -Wl,--gc-sections). The binary finds its libraries
# through its RUNPATH, $ORIGIN/../lib/ledge (the package puts them in
# /usr/lib/ledge) then $ORIGIN/lib (bin/linux-ARCH/lib, where this script
# copies them), and ONNX Runtime at /usr/lib/ledge/libonnxruntime.so.1 unless
# inference.library or $LEDGE_ORT_LIB says otherwise.
#
#   deploy/cross.sh ARCH            build bin/linux-ARCH/ledge
#   deploy/cross.sh ARCH env        print the Go build environment, NUL
#                                   separated VAR=value (for `make
#                                   test-arm64`: go test -exec qemu)
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${1:-}"
what="${2:-build}"
GO="${GO:-go}"
say() { printf 'cross: %s\n' "$*" >&2; }
die() { printf 'cross: error: %s\n' "$*" >&2; exit 1; }
case "$ARCH" in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) die "usage: cross.sh amd64|arm64 [env] (got '${ARCH}')" ;;
esac

bash deploy/cross-deps.sh "$ARCH" >&2
prefix=$(bash deploy/opencv.sh "$ARCH")
cv_libs="-lopencv_videoio -lopencv_imgcodecs -lopencv_imgproc -lopencv_core"
# gocv reaches every module through opencv2/opencv.hpp, which includes those
# opencv_modules.hpp names: name the header-only ones too (HEADER_MODULES
# in deploy/opencv.sh).
header_only="-DHAVE_OPENCV_CALIB3D -DHAVE_OPENCV_DNN -DHAVE_OPENCV_FEATURES2D -DHAVE_OPENCV_FLANN
  -DHAVE_OPENCV_HIGHGUI -DHAVE_OPENCV_OBJDETECT -DHAVE_OPENCV_PHOTO -DHAVE_OPENCV_VIDEO"
header_only="${header_only//$'\n'  / }"
sections="-O2 -g -ffunction-sections -fdata-sections"
build_env=(
  CGO_ENABLED=1 GOOS=linux GOARCH="$ARCH" CC="$triplet-gcc" CXX="$triplet-g++"
  CGO_CFLAGS="$sections" CGO_CXXFLAGS="$sections"
  CGO_CPPFLAGS="-I$prefix/include/opencv4 $header_only"
  CGO_LDFLAGS="-L$prefix/lib -Wl,--gc-sections -Wl,--as-needed -Wl,-rpath,\$ORIGIN/../lib/ledge:\$ORIGIN/lib $cv_libs"
  OPENCV_PREFIX="$prefix"
)
if [ "$what" = env ]; then
  printf '%s\0' "${build_env[@]}"
  exit 0
fi

version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
commit="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
out="bin/linux-$ARCH"
mkdir -p "$out/lib"
say "building $out/ledge ($version) against $prefix"
env "${build_env[@]}" nice -n 19 "$GO" build -tags customenv -trimpath \
  -ldflags "-s -w -X main.version=$version -X main.commit=$commit -X ledge/inference.DefaultLibrary=/usr/lib/ledge/libonnxruntime.so.1" \
  -o "$out/ledge" ./cmd/ledge
# The libraries it links (and the FFmpeg plugin videoio loads from beside
# libopencv_videoio), for running it from the tree.
rm -f "$out"/lib/libopencv_*
cp -a "$prefix"/lib/libopencv_{core,imgproc,imgcodecs,videoio}.so.* "$prefix"/lib/libopencv_videoio_ffmpeg*.so "$out/lib/"
say "built $out/ledge: $(readelf -d "$out/ledge" | grep -c NEEDED) direct libraries, RUNPATH $(readelf -d "$out/ledge" | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')"
