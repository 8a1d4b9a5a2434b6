#!/usr/bin/env bash
# debian-mirror.sh prints the Debian mirror that apt on this machine uses for
# the main archive (e.g. http://deb.debian.org/debian), read from
# /etc/apt/sources.list and /etc/apt/sources.list.d/ (one-line and deb822
# formats). $LEDGE_DEBIAN_MIRROR overrides it. Exits 1 when none is found.
set -euo pipefail

if [ -n "${LEDGE_DEBIAN_MIRROR:-}" ]; then
  echo "$LEDGE_DEBIAN_MIRROR"
  exit 0
fi
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
# deb822: a stanza whose Suites has the release itself (not -security).
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  uri=$(awk -v s="$suite" '
    /^[[:space:]]*$/ { if (u != "" && ok) { exit } u=""; ok=0; next }
    tolower($1) == "uris:" { u=$2 }
    tolower($1) == "suites:" { for (i=2;i<=NF;i++) if ($i==s) ok=1 }
    tolower($1) == "enabled:" && tolower($2) == "no" { ok=0; u="" }
    END { if (u != "" && ok) print u }' "$f")
  if [ -n "$uri" ]; then echo "${uri%/}"; exit 0; fi
done
# one-line: deb [options] URI SUITE COMPONENTS
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  uri=$(awk -v s="$suite" '$1 == "deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == s) { print $i; exit } }' "$f")
  if [ -n "$uri" ]; then echo "${uri%/}"; exit 0; fi
done
echo "debian-mirror: no Debian mirror for $suite in /etc/apt/sources.list*; set LEDGE_DEBIAN_MIRROR" >&2
exit 1
