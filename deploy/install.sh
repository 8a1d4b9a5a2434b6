#!/usr/bin/env bash
# install.sh builds the package of this checkout and installs it with apt,
# as the ledge service (run as root on a Debian 12 amd64 machine):
#   sudo deploy/install.sh
# The same as `make dist` followed by `apt-get install ./dist/ledge_<version>_<arch>.deb`
# (the package it just wrote: dist/ keeps older builds).
# See docs/development.md (Packages) for what the package holds.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(bash deploy/dist.sh "$(dpkg --print-architecture)" | tail -n 1)
apt-get install -y "./$deb"
echo "ledge installed: systemctl status ledge; config in /etc/ledge/ledge.yaml"
