#!/usr/bin/env bash
# deps.sh installs and starts what ledge needs on Debian 12 / Raspberry Pi OS
# (run as root). It is idempotent: a second run checks and returns in well
# under two seconds.
#
#   apt:   build-essential libopencv-dev ffmpeg docker.io mosquitto
#          mosquitto-clients chromium docker-registry apache2-utils git
#          systemd (for systemd-notify; only the ones missing)
#   ORT:   libonnxruntime.so.1 from the npm package onnxruntime-node into
#          $LEDGE_LIB_DIR (default /usr/local/lib/ledge)
#   dockerd: started when no Docker engine answers (CI has no systemd)
#   npm:   the Azure IoT SDK for Node into appliance/testdata/azure-sdk and
#          MQTT.js into hub/testdata/mqttjs (tests)
#
# `deps.sh run` (what `make run` and `make build` call) installs only what the
# appliance itself needs to build and run: no mosquitto broker, Chromium,
# docker-registry, htpasswd or Node packages, which only the tests drive.
# `deps.sh` (`make deps`, `make test`) installs everything.
set -euo pipefail

PROFILE="${1:-all}"
case "$PROFILE" in
  all|run) ;;
  *) printf 'deps: unknown profile %q: want run or nothing (everything)\n' "$PROFILE" >&2; exit 2 ;;
esac
ORT_VERSION="${ORT_VERSION:-1.24.3}"
LIB_DIR="${LEDGE_LIB_DIR:-/usr/local/lib/ledge}"
# The appliance: a C/C++ compiler for cgo (without one, go builds gocv with
# cgo off and fails with "undefined: MatType"), OpenCV to build against,
# ffmpeg for video sources, Docker for container modules, mosquitto_pub/sub
# for the Quickstart, npm for ONNX Runtime, systemd-notify for the
# service's watchdog.
APT_PACKAGES=(build-essential libopencv-dev pkg-config ffmpeg docker.io mosquitto-clients npm systemd)
if [ "$PROFILE" = all ]; then
  # What the tests drive besides: a broker to compare with and to stand in
  # for the cloud, a browser, an OCI registry with htpasswd, and git
  # (TestQuickstart).
  APT_PACKAGES+=(mosquitto chromium docker-registry apache2-utils git)
fi

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root (or install sudo): apt and /usr/local need it"
  sudo_cmd=(sudo)
fi

# --- apt packages ----------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # npm fetches ONNX Runtime and the Azure IoT SDK for the tests; any npm
    # on the PATH does.
    if [ "$p" = npm ] && command -v npm >/dev/null; then
      continue
    fi
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Where systemd runs, the Debian packages start mosquitto (port 1883, which
  # ledge's own hub uses) and docker-registry as services. ledge needs them
  # only as programs: its tests start their own instances on free ports.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for svc in mosquitto docker-registry; do
      if printf '%s\n' "${missing[@]}" | grep -qx "$svc" && systemctl is-active --quiet "$svc"; then
        say "stopping the $svc service Debian just started (ledge's hub serves MQTT on 1883)"
        "${sudo_cmd[@]}" systemctl disable --now "$svc" || true
      fi
    done
  fi
fi

# --- ONNX Runtime ----------------------------------------------------------
case "$(uname -m)" in
  x86_64|amd64) ort_arch=x64 ;;
  aarch64|arm64) ort_arch=arm64 ;;
  *) die "no ONNX Runtime build in onnxruntime-node for $(uname -m); set LEDGE_ORT_LIB to your own libonnxruntime.so" ;;
esac
if [ "$(cat "$LIB_DIR/onnxruntime.version" 2>/dev/null)" != "$ORT_VERSION" ] || [ ! -f "$LIB_DIR/libonnxruntime.so.1" ]; then
  command -v npm >/dev/null || die "npm is needed once to fetch ONNX Runtime (apt-get install npm)"
  say "fetching ONNX Runtime $ORT_VERSION ($ort_arch) from npm onnxruntime-node"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # npm's own error (registry unreachable, a TLS proxy it does not trust)
  # is what the user needs to see: --silent would hide it.
  (cd "$tmp" && npm pack --loglevel=error "onnxruntime-node@$ORT_VERSION" >/dev/null) ||
    die "npm could not fetch onnxruntime-node@$ORT_VERSION (npm says why above)"
  tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" "package/bin/napi-v6/linux/$ort_arch/libonnxruntime.so.1"
  "${sudo_cmd[@]}" mkdir -p "$LIB_DIR"
  "${sudo_cmd[@]}" install -m 0644 "$tmp/package/bin/napi-v6/linux/$ort_arch/libonnxruntime.so.1" "$LIB_DIR/libonnxruntime.so.1"
  echo "$ORT_VERSION" | "${sudo_cmd[@]}" tee "$LIB_DIR/onnxruntime.version" >/dev/null
  say "ONNX Runtime installed in $LIB_DIR"
fi

# --- Node packages for the tests ------------------------------------------
# appliance/azure_sdk_test.go runs a stock Azure IoT SDK module against
# ledge, hub/mqttjs_test.go stock MQTT.js; their packages (pinned in each
# package-lock.json) live next to the tests, never committed. Each is
# installed again only when its lock file changes. Not for `deps.sh run`.
root="$(cd "$(dirname "$0")/.." && pwd)"
for sdk_dir in "$root/appliance/testdata/azure-sdk" "$root/hub/testdata/mqttjs"; do
  [ "$PROFILE" = all ] && [ -f "$sdk_dir/package-lock.json" ] || continue
  want=$(sha256sum "$sdk_dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$sdk_dir/node_modules/.ledge-lock" 2>/dev/null)" != "$want" ]; then
    command -v npm >/dev/null || die "npm is needed for the tests with Node clients (apt-get install npm)"
    say "installing the test's Node packages into $sdk_dir (npm ci)"
    (cd "$sdk_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
    echo "$want" > "$sdk_dir/node_modules/.ledge-lock"
  fi
done

# --- Docker engine ---------------------------------------------------------
docker_up() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if ! docker_up; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    say "starting docker with systemctl"
    "${sudo_cmd[@]}" systemctl start docker || true
  fi
  if ! docker_up; then
    say "starting dockerd (log: /var/log/ledge-dockerd.log)"
    "${sudo_cmd[@]}" bash -c 'nohup setsid dockerd >/var/log/ledge-dockerd.log 2>&1 </dev/null &'
    for _ in $(seq 1 60); do docker_up && break; sleep 0.5; done
    docker_up || die "dockerd did not start: see /var/log/ledge-dockerd.log"
  fi
fi
