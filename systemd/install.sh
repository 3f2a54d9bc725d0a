#!/bin/sh
# Install Liquid Gateway as a systemd service on a Debian gateway. Idempotent: run it again
# to upgrade. Needs root.
#
#   sudo systemd/install.sh [--wheelhouse DIR] [--no-start]
#
#   user      liquid-gateway (system, no login, in dialout for serial ports)
#   code      /opt/liquid-gateway/venv (its own venv: PEP 668 leaves Debian's Python alone)
#   config    /etc/liquid-gateway/liquid-gateway.yaml (0640), secrets/ (0700)
#   state     /var/lib/liquid-gateway (systemd StateDirectory)
#   unit      /etc/systemd/system/liquid-gateway.service
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/liquid-gateway
ETC=/etc/liquid-gateway
UNIT_DIR=/etc/systemd/system
WHEELHOUSE=""
START=1

while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

if ! id liquid-gateway >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/liquid-gateway --no-create-home \
          --shell /usr/sbin/nologin --groups dialout liquid-gateway
fi
usermod -a -G dialout liquid-gateway

command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3 python3-venv" >&2; exit 1; }
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
if [ -n "$WHEELHOUSE" ]; then
  "$PREFIX/venv/bin/pip" install --no-index --find-links "$WHEELHOUSE" --upgrade "$SRC"
else
  "$PREFIX/venv/bin/pip" install --upgrade "$SRC"
fi
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

install -d -m 0750 -o root -g liquid-gateway "$ETC"
install -d -m 0700 -o root -g root "$ETC/secrets"
if [ ! -e "$ETC/liquid-gateway.yaml" ]; then
  install -m 0640 -o root -g liquid-gateway "$SRC/config/production.example.yaml" "$ETC/liquid-gateway.yaml"
  echo "installed an example config at $ETC/liquid-gateway.yaml: edit it, then run this again"
  START=0
fi
[ -e "$ETC/secrets/mqtt-upstream" ] || install -m 0600 /dev/null "$ETC/secrets/mqtt-upstream"

install -m 0644 "$SRC/systemd/liquid-gateway.service" "$UNIT_DIR/liquid-gateway.service"
systemctl daemon-reload

if [ "$START" = 1 ]; then
  # Validate as the service will (credentials are only there under systemd, so point at them).
  CREDENTIALS_DIRECTORY="$ETC/secrets" "$PREFIX/venv/bin/liquid-gateway" config validate "$ETC/liquid-gateway.yaml"
  systemctl enable --now liquid-gateway.service
  systemctl --no-pager status liquid-gateway.service || true
fi
