#!/usr/bin/env bash
# opencv.sh ARCH builds the minimal OpenCV that packaged ledge binaries link
# (`make cross`, `make dist`) for ARCH (amd64 or arm64) and prints its
# install prefix. The build happens once: later runs find it in the cache and
# return at once.
#
#   source:  Debian's own OpenCV source package (the version libopencv-dev
#            has, which gocv matches), fetched with `apt-get source` from the
#            mirror apt uses, signature-checked, with Debian's patches that
#            touch the modules built here
#   modules: core, imgproc, imgcodecs (JPEG, PNG and the built-in formats),
#            videoio (V4L2 built in; FFmpeg as a plugin,
#            libopencv_videoio_ffmpeg.so, loaded when a video file or stream
#            is first opened). No GDAL, GStreamer, GUI, OpenCL, TBB, IPP.
#            The headers of the modules gocv wraps but ledge does not call
#            (dnn, calib3d, ...) are installed too: gocv compiles its wrappers
#            against them, and the link (-Wl,--gc-sections) drops them.
#   cache:   $LEDGE_BUILD_CACHE (default /var/cache/ledge-build), one prefix
#            per architecture and version of this script:
#            opencv-4.6.0-ARCH-<hash>/{include,lib}; the build log beside it.
#   cost:    a cold build takes about 10 minutes of CPU per architecture
#            (see docs/development.md for measured wall times); it runs
#            under nice 19 on all cores.
set -euo pipefail

ARCH="${1:-}"
DEB_VERSION=4.6.0+dfsg-12
CV_VERSION=4.6.0
CACHE="${LEDGE_BUILD_CACHE:-/var/cache/ledge-build}"
here="$(cd "$(dirname "$0")" && pwd)"

say() { printf 'opencv: %s\n' "$*" >&2; }
die() { printf 'opencv: error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) die "usage: opencv.sh amd64|arm64 (got '${ARCH}')" ;;
esac
# What is built: DEB_VERSION, these options and HEADER_MODULES make the
# cache key, so changing any of them builds anew.
cv_opts=(
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_SKIP_BUILD_RPATH=OFF
  -DBUILD_LIST=core,imgproc,imgcodecs,videoio -DBUILD_SHARED_LIBS=ON
  -DOPENCV_GENERATE_PKGCONFIG=ON -DOPENCV_SKIP_PYTHON_LOADER=ON
  -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF -DBUILD_opencv_apps=OFF
  -DBUILD_JAVA=OFF -DBUILD_opencv_python2=OFF -DBUILD_opencv_python3=OFF -DBUILD_opencv_js=OFF
  -DBUILD_ZLIB=OFF -DBUILD_JPEG=OFF -DBUILD_PNG=OFF -DBUILD_TIFF=OFF -DBUILD_WEBP=OFF -DBUILD_OPENJPEG=OFF
  -DBUILD_OPENEXR=OFF -DBUILD_PROTOBUF=OFF -DBUILD_ITT=OFF -DBUILD_IPP_IW=OFF
  -DWITH_JPEG=ON -DWITH_PNG=ON -DWITH_SPNG=OFF -DWITH_TIFF=OFF -DWITH_WEBP=OFF -DWITH_OPENJPEG=OFF
  -DWITH_JASPER=OFF -DWITH_OPENEXR=OFF -DWITH_GDAL=OFF -DWITH_GDCM=OFF -DWITH_IMGCODEC_HDR=ON
  -DWITH_IMGCODEC_SUNRASTER=ON -DWITH_IMGCODEC_PXM=ON -DWITH_IMGCODEC_PFM=ON
  -DWITH_FFMPEG=ON -DVIDEOIO_PLUGIN_LIST=ffmpeg -DWITH_V4L=ON -DWITH_GSTREAMER=OFF -DWITH_1394=OFF
  -DWITH_GPHOTO2=OFF -DWITH_ARAVIS=OFF -DWITH_XIMEA=OFF -DWITH_XINE=OFF -DWITH_OPENNI2=OFF
  -DWITH_LIBREALSENSE=OFF -DWITH_UEYE=OFF -DWITH_VA=OFF -DWITH_VA_INTEL=OFF -DWITH_MFX=OFF
  -DWITH_GTK=OFF -DWITH_QT=OFF -DWITH_OPENGL=OFF -DWITH_VTK=OFF -DWITH_WAYLAND=OFF
  -DWITH_TBB=OFF -DWITH_OPENMP=OFF -DWITH_PTHREADS_PF=ON -DWITH_IPP=OFF -DWITH_ITT=OFF
  -DWITH_OPENCL=OFF -DWITH_OPENCLAMDFFT=OFF -DWITH_OPENCLAMDBLAS=OFF -DWITH_CUDA=OFF -DWITH_VULKAN=OFF
  -DWITH_LAPACK=OFF -DWITH_EIGEN=OFF -DWITH_PROTOBUF=OFF -DWITH_QUIRC=OFF -DWITH_ADE=OFF
  -DWITH_CAROTENE=OFF -DWITH_OPENVX=OFF -DWITH_HALIDE=OFF -DWITH_ONNX=OFF -DWITH_TENGINE=OFF
  -DCV_TRACE=OFF -DENABLE_PRECOMPILED_HEADERS=OFF -DOPENCV_ENABLE_NONFREE=OFF
)
if [ "$ARCH" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
  cv_opts+=(
    -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
    -DCMAKE_C_COMPILER="$triplet-gcc" -DCMAKE_CXX_COMPILER="$triplet-g++"
    -DCMAKE_LIBRARY_ARCHITECTURE="$triplet"
  )
  export PKG_CONFIG_LIBDIR="/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig"
fi
HEADER_MODULES=(calib3d dnn features2d flann highgui objdetect photo video)
key=$(printf '%s\n' "$DEB_VERSION" "${cv_opts[@]}" "${HEADER_MODULES[@]}" | sha256sum | cut -c1-12)
prefix="$CACHE/opencv-$CV_VERSION-$ARCH-$key"
if [ -f "$prefix/.complete" ]; then
  echo "$prefix"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/opencv-$ARCH.lock"
flock 9 # another make dist may be building the same thing
if [ -f "$prefix/.complete" ]; then
  echo "$prefix"
  exit 0
fi
command -v cmake >/dev/null && command -v ninja >/dev/null || die "cmake and ninja missing: run deploy/cross-deps.sh $ARCH"

# --- source ------------------------------------------------------------------
src="$CACHE/src"
orig="$src/opencv_${DEB_VERSION%-*}.orig.tar.xz"
debian="$src/opencv_$DEB_VERSION.debian.tar.xz"
if [ ! -f "$orig" ] || [ ! -f "$debian" ]; then
  mirror=$(bash "$here/debian-mirror.sh")
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  say "fetching the OpenCV $DEB_VERSION source package from $mirror"
  apt_dir="$src/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1
            -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -q >&2
  # --download-only checks the files against the signed Sources index.
  (cd "$src" && apt-get "${apt_opts[@]}" source --download-only -q "opencv=$DEB_VERSION" >&2)
  rm -f "$src"/opencv_*orig-contrib.tar.xz
fi

build="$CACHE/build-opencv-$ARCH"
rm -rf "$build" "$prefix"
mkdir -p "$build"
log="$CACHE/opencv-$CV_VERSION-$ARCH-$key.log"
say "building OpenCV $CV_VERSION for $ARCH in $build (log: $log)"
start=$(date +%s)
tar -xJf "$orig" -C "$build"
tar -xJf "$debian" -C "$build"
srcdir="$build/opencv-$CV_VERSION"
# Debian's patches, those whose files are in the main tree (the others are
# for contrib modules).
while read -r p; do
  [ -n "$p" ] || continue
  files=$(sed -n 's|^+++ b/||p' "$build/debian/patches/$p" | cut -f1)
  ok=1
  for f in $files; do [ -e "$srcdir/$f" ] || ok=0; done
  if [ "$ok" = 1 ]; then patch -d "$srcdir" -p1 -s <"$build/debian/patches/$p"; fi
done <"$build/debian/patches/series"

{
  cmake -G Ninja -S "$srcdir" -B "$build/out" -DCMAKE_INSTALL_PREFIX="$prefix" "${cv_opts[@]}"
  nice -n 19 cmake --build "$build/out" -j "$(nproc)"
  cmake --install "$build/out"
} >"$log" 2>&1 || die "build failed: see $log"
grep -q "FFMPEG:.*YES" "$log" || die "OpenCV found no FFmpeg for $ARCH: see $log"
[ -f "$prefix/lib/libopencv_videoio_ffmpeg.so" ] || ls "$prefix"/lib/libopencv_videoio_ffmpeg*.so >/dev/null 2>&1 ||
  die "the FFmpeg videoio plugin was not built: see $log"

# Headers of the modules gocv wraps that this build leaves out.
for m in "${HEADER_MODULES[@]}"; do
  cp -a "$srcdir/modules/$m/include/opencv2/." "$prefix/include/opencv4/opencv2/"
done
echo "$(( $(date +%s) - start )) s wall, $(nproc) cores, nice 19" >"$prefix/build-time.txt"
touch "$prefix/.complete"
rm -rf "$build"
say "OpenCV for $ARCH ready in $prefix ($(cat "$prefix/build-time.txt"))"
echo "$prefix"
