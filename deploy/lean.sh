#!/usr/bin/env bash
# lean.sh (`make bench-lean`, run by `make bench`) measures how lean a ledge
# process is, for the developer build (bin/ledge: Debian's OpenCV) and the
# packaged build (bin/linux-ARCH/ledge of `make cross`: the minimal OpenCV),
# side by side in the same run, and prints each number with its goal:
#
#   libs      shared objects `ledge version` loads (LD_DEBUG=files), ONNX
#             Runtime included                                   goal <= 80
#   version   median wall time of 5 `ledge version` runs         goal <= 0.10 s
#   idle      RssAnon / RssFile of `ledge run` with no pipeline, 5 s after start
#   yolox     RssAnon / RssFile of `ledge run` with one YOLOX-nano pipeline on
#             the 640x480 test pattern at 15 fps, after 100 frames
#             (the largest of 5 samples a second apart)        goal total <= 120 MiB
#   libs run  shared objects mapped by that daemon
#
# LEAN_BUILDS narrows it ("dev", "packaged"). Numbers are absolute, so the
# machine's load shows in them: compare the two builds of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
ARCH="${ARCH:-$(dpkg --print-architecture)}"
ORT="${LEDGE_ORT_LIB:-${LEDGE_LIB_DIR:-/usr/local/lib/ledge}/libonnxruntime.so.1}"
say() { printf 'lean: %s\n' "$*" >&2; }
die() { printf 'lean: error: %s\n' "$*" >&2; exit 1; }
[ -f "$ORT" ] || die "no ONNX Runtime at $ORT: make deps"
model=../shared/models/yolox_nano.onnx
[ -f "$model" ] || die "$model missing (../shared beside the repo)"
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")

builds=(${LEAN_BUILDS:-dev packaged})
declare -A bin
for b in "${builds[@]}"; do
  case "$b" in
    dev) "$GO" build -trimpath -o bin/ledge ./cmd/ledge; bin[dev]=bin/ledge ;;
    packaged) bash deploy/cross.sh "$ARCH"; bin[packaged]="bin/linux-$ARCH/ledge" ;;
    *) die "unknown build $b (dev, packaged)" ;;
  esac
done

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

rss() { awk '/^RssAnon|^RssFile/ { printf "%.1f ", $2/1024 }' "/proc/$1/status"; }
maplibs() { awk '$6 ~ /\.so/ { print $6 }' "/proc/$1/maps" | sort -u | wc -l; }
api() { curl -fsS --unix-socket "$1/ledge.sock" "http://ledge$2"; }

# daemon BIN NAME [PIPELINE-YAML]: starts ledge run, waits for its API.
daemon() {
  local dir="$work/$2"
  mkdir -p "$dir"
  cat >"$dir/ledge.yaml" <<EOF
dataDir: $dir/data
http: {listen: "127.0.0.1:0", listenTLS: "127.0.0.1:0"}
hub: {listen: {mqtt: "127.0.0.1:0", mqtts: "127.0.0.1:0"}}
${3:-}
EOF
  LEDGE_ORT_LIB="$ORT" "$1" run --config "$dir/ledge.yaml" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    api "$dir/data" /healthz >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "ledge run ($2) exited: $(tail -n 5 "$dir/log")"
    sleep 0.1
  done
  die "ledge run ($2) did not answer within 30 s"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

pipeline="pipelines:
  - name: lean
    source: {url: \"testpattern:\", width: 640, height: 480, fps: 15}
    detect: {model: $model, kind: yolox}"

declare -A r
for b in "${builds[@]}"; do
  exe="${bin[$b]}"
  say "measuring the $b build ($exe)"
  r[$b,libs]=$(LEDGE_ORT_LIB="$ORT" LD_DEBUG=files "$exe" version 2>&1 >/dev/null | grep -c "generating link map")
  LEDGE_ORT_LIB="$ORT" "$exe" version >/dev/null # warm the page cache
  times=()
  for _ in 1 2 3 4 5; do
    s=$(date +%s%N); LEDGE_ORT_LIB="$ORT" "$exe" version >/dev/null; e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  r[$b,version]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)

  daemon "$exe" "$b-idle"
  sleep 5
  r[$b,idle]=$(rss "$pid")
  r[$b,idlelibs]=$(maplibs "$pid")
  stop

  daemon "$exe" "$b-yolox" "$pipeline"
  for _ in $(seq 600); do
    out=$(api "$work/$b-yolox/data" /api/v1/pipelines 2>/dev/null | python3 -c 'import json,sys; print(max([p.get("framesOut",0) for p in json.load(sys.stdin)["pipelines"]] or [0]))' 2>/dev/null || echo 0)
    [ "$out" -ge 100 ] && break
    kill -0 "$pid" 2>/dev/null || die "ledge run ($b, yolox) exited: $(tail -n 5 "$work/$b-yolox/log")"
    sleep 0.2
  done
  [ "$out" -ge 100 ] || die "the YOLOX-nano pipeline ($b) processed $out frames in 120 s"
  best=0; best_s=
  for _ in 1 2 3 4 5; do
    s=$(rss "$pid"); t=$(awk '{ print $1 + $2 }' <<<"$s")
    if awk -v a="$t" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$t; best_s=$s; fi
    sleep 1
  done
  r[$b,yolox]=$best_s
  r[$b,runlibs]=$(maplibs "$pid")
  stop
done

printf '\n%-34s' "lean process ($ARCH)"
for b in "${builds[@]}"; do printf '%22s' "$b"; done
printf '%14s\n' goal
row() { # label key format goal
  printf '%-34s' "$1"
  for b in "${builds[@]}"; do printf '%22s' "$(eval "$3" "${r[$b,$2]}")"; done
  printf '%14s\n' "$4"
}
n() { echo "$1"; }
ms() { awk -v v="$1" 'BEGIN { printf "%.3f s", v/1000 }'; }
mib() { awk -v a="$1" -v f="$2" 'BEGIN { printf "%.0f + %.0f = %.0f MiB", a, f, a+f }'; }
row "libs loaded by ledge version" libs n "<= 80"
row "ledge version (median of 5)" version ms "<= 0.10 s"
row "idle RSS anon + file" idle mib ""
row "libs mapped, idle" idlelibs n ""
row "YOLOX-nano RSS anon + file" yolox mib "<= 120 MiB"
row "libs mapped, YOLOX-nano" runlibs n ""
