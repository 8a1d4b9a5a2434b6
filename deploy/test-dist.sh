#!/usr/bin/env bash
# test-dist.sh [ARCH] (`make test-dist [ARCH=arm64]`, as root) installs the
# package for ARCH (default amd64) into a fresh Debian 12 root of that
# architecture made with debootstrap from the mirror apt uses (arm64: its
# programs run under qemu-user-static through binfmt, deploy/cross-deps.sh), and
# checks, in that root (chroot):
#   - apt installs it with the Depends dpkg-shlibdeps computed, and nothing
#     else from the build machine;
#   - the ledge user (in the video and docker groups), its data dir, the
#     enabled unit (deploy/ledge.service as it is: systemd-analyze verify
#     clean, security exposure no worse than 3.5), the conffile;
#   - Docker installed after ledge (docker.io from the mirror) keeps the
#     docker group ledge is in;
#   - `ledge version` as the ledge user loads ONNX Runtime from /usr/lib/ledge;
#   - `ledge detect` finds the bus and the four persons in bus.jpg;
#   - `ledge run` as the ledge user says READY=1 and feeds a watchdog
#     (NOTIFY_SOCKET, WATCHDOG_USEC as systemd sets them), and `ledge
#     status` without flags finds it, as root and as the ledge user;
#   - `dpkg -r` removes every file but the conffile, keeps the data dir;
#     `dpkg -P` removes the conffile, still keeps the data dir.
# It skips (exit 0, saying so) only when the mirror cannot be reached.
# The downloaded .debs are cached in $LEDGE_BUILD_CACHE/debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'test-dist: %s\n' "$*" >&2; }
die() { printf 'test-dist: FAIL: %s\n' "$*" >&2; exit 1; }
ARCH="${1:-amd64}"
case "$ARCH" in amd64 | arm64) ;; *) die "usage: test-dist.sh [amd64|arm64] (got '$ARCH')" ;; esac
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
start=$(date +%s)
CACHE="${LEDGE_BUILD_CACHE:-/var/cache/ledge-build}"
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=$(bash deploy/debian-mirror.sh)

if ! command -v debootstrap >/dev/null; then
  while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1; do say "dpkg is busy, waiting"; sleep 10; done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
fi
deb=$(bash deploy/dist.sh "$ARCH" | tail -n 1)
[ -f "$deb" ] || die "make dist wrote no package"

root=$(mktemp -d /var/tmp/ledge-test-dist.XXXXXX)
chmod 0755 "$root" # it becomes /
ledge_pid=
cleanup() {
  [ -n "$ledge_pid" ] && kill "$ledge_pid" 2>/dev/null || true
  for m in "$root/proc" "$root/dev"; do
    if mountpoint -q "$m"; then umount -l "$m"; fi
  done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

say "debootstrap $suite $ARCH (minbase) from $mirror into $root"
mkdir -p "$CACHE/debootstrap"
if ! nice -n 19 debootstrap --arch="$ARCH" --variant=minbase --cache-dir="$CACHE/debootstrap" "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
  if ! curl -fsS -o /dev/null --max-time 30 "$mirror/dists/$suite/Release"; then
    say "SKIP: debootstrap cannot reach the Debian mirror $mirror (see $root.log); the package test did not run"
    exit 0
  fi
  die "debootstrap failed with the mirror reachable: $(tail -n 5 "$root.log")"
fi
rm -f "$root.log"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No package starts a service in the root (docker.io's init script would).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
# chroot looks --userspec names up outside the root: use the root's ids.
as_ledge() { chroot --userspec="$ledge_ids" "$root" env -i PATH=/usr/bin:/bin HOME=/var/lib/ledge LANG=C.UTF-8 "$@"; }

cp "$deb" "$root/tmp/ledge.deb"
cp ../shared/models/fastestdet.onnx ../shared/media/bus.jpg "$root/tmp/"
say "apt-get install ./$(basename "$deb") in the fresh root"
in_root apt-get update -q >&2
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/ledge.deb 2>&1 |
  tee "$root/tmp/install.log" >&2 || die "apt-get install of the package failed"
# The first install says where the dashboard and its password are.
grep -q "^ledge: /var/lib/ledge/admin-password" "$root/tmp/install.log" || die "the install does not say where the admin password is"

# Installed as the package says.
in_root getent passwd ledge >/dev/null || die "no ledge user"
ledge_ids="$(in_root id -u ledge):$(in_root id -g ledge)"
groups=$(in_root id -nG ledge)
[[ " $groups " == *" video "* ]] || die "ledge is not in the video group: $groups"
[[ " $groups " == *" docker "* ]] || die "ledge is not in the docker group (the Docker socket's): $groups"
owner=$(in_root stat -c %U:%a /var/lib/ledge) # names as the root knows them
[ "$owner" = ledge:750 ] || die "data dir /var/lib/ledge: $owner, want ledge:750"
owner=$(in_root stat -c %U:%G:%a /etc/ledge/ledge.yaml)
[ "$owner" = root:ledge:640 ] || die "/etc/ledge/ledge.yaml: $owner, want root:ledge:640"
[ -L "$root/etc/systemd/system/multi-user.target.wants/ledge.service" ] || die "ledge.service is not enabled"
in_root dpkg-query -W -f='${Conffiles}\n' ledge | grep -q /etc/ledge/ledge.yaml || die "/etc/ledge/ledge.yaml is not a conffile"

# The unit: deploy/ledge.service with its hardening, valid for this
# machine's systemd (the root has none: verify it here, with ExecStart
# pointing into the root).
unit="$root/lib/systemd/system/ledge.service"
cmp -s "$unit" deploy/ledge.service || die "the installed unit differs from deploy/ledge.service"
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$root/tmp/unit"
  sed "s|^ExecStart=/usr/bin/ledge|ExecStart=$root/usr/bin/ledge|" "$unit" >"$root/tmp/unit/ledge.service"
  out=$(systemd-analyze verify "$root/tmp/unit/ledge.service" 2>&1) && [ -z "$out" ] || die "systemd-analyze verify ledge.service: $out"
  out=$(systemd-analyze security --offline=yes --root="$root" --threshold=35 ledge.service 2>&1) ||
    die "systemd-analyze security: exposure above 3.5: $(tail -n 1 <<<"$out")"
  say "unit: systemd-analyze verify clean; $(tail -n 1 <<<"$out" | sed 's/^→ //')"
else
  say "no systemd-analyze on this machine: the unit is not verified"
fi

# Docker after ledge, as apt may configure it (ledge Recommends docker.io):
# its postinst keeps the docker group ledge is in.
gid=$(in_root getent group docker | cut -d: -f3)
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >&2 ||
  die "apt-get install docker.io after ledge failed"
[ "$(in_root getent group docker | cut -d: -f3)" = "$gid" ] || die "docker.io replaced the docker group"
[[ " $(in_root id -nG ledge) " == *" docker "* ]] || die "ledge is not in the docker group after docker.io: $(in_root id -nG ledge)"

# ledge version, as the service's user.
out=$(as_ledge ledge version 2>&1) || die "ledge version: $out"
echo "$out" | sed 's/^/  /' >&2
grep -q "onnxruntime 1\..* (/usr/lib/ledge/libonnxruntime.so.1)" <<<"$out" || die "ledge version did not load ONNX Runtime from /usr/lib/ledge"
libs=$(as_ledge env LD_DEBUG=libs ledge version 2>&1 >/dev/null | grep -c "calling init:" || true)
say "ledge version loads $libs shared libraries in the fresh root"

# ledge detect: the bus and four persons.
out=$(as_ledge ledge detect --model /tmp/fastestdet.onnx --threshold 0.5 /tmp/bus.jpg 2>&1) || die "ledge detect: $out"
echo "$out" | sed 's/^/  /' >&2
[ "$(grep -c '"label":"person"' <<<"$out")" -ge 4 ] && grep -q '"label":"bus"' <<<"$out" ||
  die "ledge detect did not find the bus and four persons"

# ledge run under a watchdog, as systemd would start it.
http_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$root/tmp/run.yaml" <<EOF
dataDir: /var/lib/ledge
http: {listen: "127.0.0.1:$http_port", listenTLS: "127.0.0.1:0"}
hub: {listen: {mqtt: "127.0.0.1:0", mqtts: "127.0.0.1:0"}}
EOF
chmod 0644 "$root/tmp/run.yaml"
notify="$root/run/ledge-notify"
python3 - "$notify" >"$root/tmp/notify.log" 2>&1 <<'EOF' &
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.settimeout(120)
print("listening", flush=True)
got, feeds = set(), 0
while feeds < 2:
    m = s.recv(4096).decode()
    print(repr(m), flush=True)
    got.update(l.split("=")[0] for l in m.split("\n"))
    feeds += m.count("WATCHDOG=1")
print("READY" in got and "ok" or "no READY", flush=True)
EOF
listener=$!
for _ in $(seq 50); do grep -q listening "$root/tmp/notify.log" && break; sleep 0.1; done
chroot --userspec="$ledge_ids" "$root" env -i PATH=/usr/bin:/bin HOME=/var/lib/ledge NOTIFY_SOCKET=/run/ledge-notify \
  WATCHDOG_USEC=3000000 ledge run --config /tmp/run.yaml >"$root/tmp/run.log" 2>&1 &
ledge_pid=$!
wait "$listener" || die "no watchdog feeds from ledge run: $(cat "$root/tmp/notify.log"; tail -n 20 "$root/tmp/run.log")"
grep -qx ok "$root/tmp/notify.log" || die "ledge run did not say READY=1: $(cat "$root/tmp/notify.log")"
# Secure by default, as the package starts it: the API wants credentials
# (on loopback too: no --dev), the admin password is in a file only ledge
# reads, and not in the log.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/api/v1/pipelines")
[ "$code" = 401 ] || die "GET /api/v1/pipelines without credentials: HTTP $code, want 401"
[ "$(in_root stat -c %U:%a /var/lib/ledge/admin-password)" = ledge:600 ] || die "admin-password: $(in_root stat -c %U:%a /var/lib/ledge/admin-password 2>&1)"
! grep -qF "$(cat "$root/var/lib/ledge/admin-password")" "$root/tmp/run.log" || die "the admin password is in the log"
# ledge status without flags, as an operator types it: as root (no run
# record of the ledge user: /etc/ledge/ledge.yaml's dataDir), and as the
# ledge user, also without its run record (the service's /tmp is private).
# Exit 1 is a failing component: there is no Docker engine in the root.
for who in root ledge ledge-private-tmp; do
  case $who in
    root) cmd=(in_root ledge status) ;;
    ledge) cmd=(as_ledge ledge status) ;;
    *) cmd=(as_ledge env LEDGE_RUNTIME_DIR=/nonexistent ledge status) ;;
  esac
  rc=0; out=$("${cmd[@]}" 2>&1) || rc=$?
  [ "$rc" -le 1 ] && grep -q "^data dir */var/lib/ledge$" <<<"$out" || die "ledge status ($who, no flags): exit $rc: $out"
done
kill "$ledge_pid"; wait "$ledge_pid" 2>/dev/null || true; ledge_pid=
say "ledge run: READY=1 and watchdog feeds, as the ledge user"
[ -f "$root/var/lib/ledge/ledge.db" ] || die "ledge run left no database in /var/lib/ledge"

# dpkg -r: everything but the conffile goes, the data dir stays.
files=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./|/|' | grep -v '/$')
in_root dpkg -r ledge >&2 || die "dpkg -r ledge failed"
for f in $files; do
  [ "$f" = /etc/ledge/ledge.yaml ] && continue
  [ ! -e "$root$f" ] && [ ! -L "$root$f" ] || die "dpkg -r left $f behind"
done
[ -d "$root/usr/lib/ledge" ] && die "dpkg -r left /usr/lib/ledge"
[ "$(in_root dpkg-query -W -f='${Status}' ledge)" = "deinstall ok config-files" ] || die "after dpkg -r: $(in_root dpkg-query -W -f='${Status}' ledge)"
[ -f "$root/etc/ledge/ledge.yaml" ] || die "dpkg -r removed the conffile"
[ -f "$root/var/lib/ledge/ledge.db" ] || die "dpkg -r removed the data dir"
in_root dpkg -P ledge >&2 || die "dpkg -P ledge failed"
[ ! -e "$root/etc/ledge/ledge.yaml" ] || die "dpkg -P left the conffile"
[ -f "$root/var/lib/ledge/ledge.db" ] || die "dpkg -P removed the data dir"
say "ok: installed, ran, removed cleanly, data dir kept ($(( $(date +%s) - start )) s)"
