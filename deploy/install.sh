#!/usr/bin/env bash
# install.sh installs a built ledge as a systemd service:
#   make build && sudo deploy/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/ledge ] || { echo "install: build first: make build" >&2; exit 1; }
bash deploy/deps.sh
install -m 0755 bin/ledge /usr/local/bin/ledge
install -d -m 0755 /etc/ledge
[ -f /etc/ledge/ledge.yaml ] || install -m 0640 deploy/examples/ledge.yaml /etc/ledge/ledge.yaml
install -m 0644 deploy/ledge.service /etc/systemd/system/ledge.service
systemctl daemon-reload
systemctl enable --now ledge
echo "ledge installed: systemctl status ledge; config in /etc/ledge/ledge.yaml"
