#!/usr/bin/env bash
# test-arm64.sh (`make test-arm64`) runs the inference and pipeline tests as
# arm64 binaries under qemu-user-static (go test -exec), against the arm64
# ONNX Runtime and the arm64 minimal OpenCV, then `ledge detect` on both
# shared models with the arm64 binary of `make cross ARCH=arm64`, whose
# detections must match the amd64 build's. Slow under emulation, so `make
# test` does not run it; docs/development.md says how long it takes.
#
# TEST_ARM64_PKGS narrows the packages (default ./inference/ ./pipeline/...),
# TEST_ARM64_RUN passes -run; TEST_ARM64_TIMEOUT is go test's -timeout
# (default 180m: the pipeline package alone took 49-73 min with other
# builds on the machine, and 76+ min on 2026-12-05: too close to the 90m it was).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
say() { printf 'test-arm64: %s\n' "$*" >&2; }
die() { printf 'test-arm64: FAIL: %s\n' "$*" >&2; exit 1; }
start=$(date +%s)

bash deploy/cross.sh arm64
mapfile -d '' -t cross_env < <(bash deploy/cross.sh arm64 env)
prefix=$(printf '%s\n' "${cross_env[@]}" | sed -n 's/^OPENCV_PREFIX=//p')
ort="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}/arm64/libonnxruntime.so.1"
[ -f "$ort" ] || die "no arm64 ONNX Runtime at $ort: run deploy/cross-deps.sh arm64"
qemu=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static missing: apt-get install qemu-user-static"
# Test binaries run from a temporary folder, so the OpenCV libraries come
# through LD_LIBRARY_PATH (qemu hands it to the arm64 loader).
# Tests wait up to LEDGE_TEST_SLOWDOWN times longer for their signals: one
# YOLOX-nano run takes about 40 times as long under qemu.
cross_env+=(LEDGE_ORT_LIB="$ort" LD_LIBRARY_PATH="$prefix/lib" LEDGE_TEST_SLOWDOWN="${LEDGE_TEST_SLOWDOWN:-30}")

# shellcheck disable=SC2086
pkgs=(${TEST_ARM64_PKGS:-./inference/ ./pipeline/...})
run=()
[ -n "${TEST_ARM64_RUN:-}" ] && run=(-run "$TEST_ARM64_RUN")
say "go test ${pkgs[*]} as arm64 binaries under $qemu"
env "${cross_env[@]}" nice -n 19 "$GO" test -tags customenv -exec "$qemu" -count=1 -timeout "${TEST_ARM64_TIMEOUT:-180m}" "${run[@]}" "${pkgs[@]}"
tests_done=$(date +%s)

# ledge detect, arm64 under qemu against amd64 natively, on both models.
native=bin/ledge
"$GO" build -trimpath -o "$native" ./cmd/ledge
amd64_ort="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}/libonnxruntime.so.1"
for model in fastestdet yolox_nano; do
  args=(detect --model "../shared/models/$model.onnx" --threshold 0.5 ../shared/media/bus.jpg ../shared/media/zidane.jpg)
  arm=$(LEDGE_ORT_LIB="$ort" "$qemu" bin/linux-arm64/ledge "${args[@]}" 2>/dev/null) || die "arm64 ledge detect ($model) failed"
  x86=$(LEDGE_ORT_LIB="$amd64_ort" "$native" "${args[@]}" 2>/dev/null) || die "amd64 ledge detect ($model) failed"
  # The same objects, boxes within a pixel, scores within 0.01.
  python3 - "$model" "$arm" "$x86" <<'EOF' || exit 1
import json, sys
model, arm, x86 = sys.argv[1], [json.loads(l) for l in sys.argv[2].splitlines()], [json.loads(l) for l in sys.argv[3].splitlines()]
def key(d): return (d["image"], d["label"])
if sorted(map(key, arm)) != sorted(map(key, x86)):
    sys.exit(f"test-arm64: FAIL: {model}: arm64 found {sorted(map(key, arm))}, amd64 {sorted(map(key, x86))}")
for a, b in zip(sorted(arm, key=lambda d: (key(d), d["box"]["x1"])), sorted(x86, key=lambda d: (key(d), d["box"]["x1"]))):
    if abs(a["score"] - b["score"]) > 0.01 or any(abs(a["box"][k] - b["box"][k]) > 1 for k in a["box"]):
        sys.exit(f"test-arm64: FAIL: {model}: arm64 {a} differs from amd64 {b}")
# What each model finds in bus.jpg natively: YOLOX-nano misses the man
# cut by the left edge (at any threshold), FastestDet does not.
persons = {"fastestdet": 4, "yolox_nano": 3}[model]
bus = [d["label"] for d in arm if d["image"].endswith("bus.jpg")]
if "bus" not in bus or bus.count("person") < persons:
    sys.exit(f"test-arm64: FAIL: {model}: bus.jpg gave {bus}, want the bus and {persons} persons")
print(f"test-arm64: {model}: arm64 and amd64 agree: {len(arm)} detections, bus.jpg: {', '.join(sorted(bus))}")
EOF
done
end=$(date +%s)
say "ok: go test $((tests_done - start)) s, detect $((end - tests_done)) s, $((end - start)) s in all"
