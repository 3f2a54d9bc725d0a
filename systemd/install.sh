#!/bin/sh
# Install (or uninstall) Liquid Gateway as a systemd service on a Debian gateway.
# Idempotent: run it again to upgrade; an existing config and secrets are never overwritten.
#
#   sudo systemd/install.sh [--wheelhouse DIR] [--prefix DIR] [--destdir DIR] [--python PY] [--no-start]
#                           [--unitdir DIR] [--bindir DIR]
#   sudo systemd/install.sh --uninstall [--purge]
#
#   user      liquid-gateway (static system user via sysusers.d, in dialout for serial ports)
#   code      PREFIX/venv, PREFIX=/opt/liquid-gateway (its own venv: PEP 668 leaves Debian's
#             Python alone), with /usr/local/bin/liquid-gateway linked to it
#   config    /etc/liquid-gateway/liquid-gateway.yaml (0640), secrets/ (0700)
#   state     /var/lib/liquid-gateway (systemd StateDirectory)
#   unit      /etc/systemd/system/liquid-gateway.service, shell completions
#   --wheelhouse DIR   install offline from wheels (pip --no-index --find-links DIR)
#   --destdir DIR      stage everything under DIR (also $DESTDIR): no user, no systemctl;
#                      the tree runs once moved to / (scripts name PREFIX, not DIR), and
#                      tmpfiles.d gives the config to the service's group at first boot
#   --unitdir DIR      where the unit goes (default /etc/systemd/system; a .deb: /usr/lib/systemd/system)
#   --bindir DIR       where the liquid-gateway link goes (default /usr/local/bin; a .deb: /usr/bin)
#   --uninstall        remove code, unit, completions; keep config and state unless --purge
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/liquid-gateway
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
WHEELHOUSE=""
START=1
ACTION=install
PURGE=0
UNITDIR=/etc/systemd/system
BINDIR=/usr/local/bin

while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --destdir) DESTDIR=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    --unitdir) UNITDIR=$2; shift 2 ;;
    --bindir) BINDIR=$2; shift 2 ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
done

ROOT=${DESTDIR%/}
ETC=$ROOT/etc/liquid-gateway
VENV=$ROOT$PREFIX/venv
UNIT=$ROOT${UNITDIR%/}/liquid-gateway.service
SYSUSERS=$ROOT/usr/lib/sysusers.d/liquid-gateway.conf
TMPFILES=$ROOT/usr/lib/tmpfiles.d/liquid-gateway.conf
ENVFILE=$ROOT/etc/default/liquid-gateway
LINK=$ROOT${BINDIR%/}/liquid-gateway
BASH_COMP=$ROOT/usr/share/bash-completion/completions/liquid-gateway
ZSH_COMP=$ROOT/usr/share/zsh/vendor-completions/_liquid-gateway
FISH_COMP=$ROOT/usr/share/fish/vendor_completions.d/liquid-gateway.fish

say() { echo "install.sh: $*"; }
live() { [ -z "$ROOT" ]; }  # installing into the running system, not staging

if live; then
  [ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
fi

if [ "$ACTION" = uninstall ]; then
  if live && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now liquid-gateway.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$LINK" "$BASH_COMP" "$ZSH_COMP" "$FISH_COMP" "$TMPFILES"
  rm -rf "$VENV" "$ROOT$PREFIX/README.md"
  rmdir "$ROOT$PREFIX" 2>/dev/null || true
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ETC" "$ROOT/var/lib/liquid-gateway" "$SYSUSERS" "$ENVFILE"
    if live && id liquid-gateway >/dev/null 2>&1; then userdel liquid-gateway || true; fi
    say "removed everything, config, secrets and data included"
  else
    say "removed; kept $ETC and /var/lib/liquid-gateway (--purge removes them)"
  fi
  if live && command -v systemctl >/dev/null 2>&1; then systemctl daemon-reload; fi
  exit 0
fi

# --- the system user -------------------------------------------------------------------
install -d -m 0755 "$(dirname "$SYSUSERS")"
install -m 0644 "$SRC/systemd/liquid-gateway.sysusers" "$SYSUSERS"
if live; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers "$SYSUSERS"
  elif ! id liquid-gateway >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/liquid-gateway --no-create-home \
            --shell /usr/sbin/nologin --groups dialout liquid-gateway
  fi
  usermod -a -G dialout liquid-gateway
fi

# --- code: a venv of its own -----------------------------------------------------------
command -v "$PYTHON" >/dev/null || { echo "$PYTHON is missing: apt-get install python3 python3-venv" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ -n "$WHEELHOUSE" ]; then
  # Offline: everything, the gateway included, comes from the wheelhouse.
  "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" --upgrade liquid-gateway
else
  "$VENV/bin/python" -m pip install --quiet --upgrade "$SRC"
fi
if ! live; then
  # pip wrote the staging path into every script's #! line (and activate's VIRTUAL_ENV),
  # venv into pyvenv.cfg: point them at where the tree will run, so it works once moved to /.
  grep -rlIF "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" | while IFS= read -r script; do
    sed "s|$VENV|$PREFIX/venv|g" "$script" > "$script.tmp"
    chmod --reference="$script" "$script.tmp"
    mv "$script.tmp" "$script"
  done
fi
install -m 0644 "$SRC/README.md" "$ROOT$PREFIX/README.md"
install -d -m 0755 "$(dirname "$LINK")"
ln -sf "$PREFIX/venv/bin/liquid-gateway" "$LINK"
for pair in "liquid-gateway.bash:$BASH_COMP" "_liquid-gateway:$ZSH_COMP" "liquid-gateway.fish:$FISH_COMP"; do
  install -d -m 0755 "$(dirname "${pair#*:}")"
  install -m 0644 "$SRC/systemd/completions/${pair%%:*}" "${pair#*:}"
done

# --- config and secrets ----------------------------------------------------------------
GROUP_OPT=""
if live; then GROUP_OPT="-o root -g liquid-gateway"; fi
# shellcheck disable=SC2086  # GROUP_OPT is two options or none
install -d -m 0750 $GROUP_OPT "$ETC"
if live; then install -d -m 0700 -o root -g root "$ETC/secrets"; else install -d -m 0700 "$ETC/secrets"; fi
NEW_CONFIG=0
if [ ! -e "$ETC/liquid-gateway.yaml" ]; then
  # shellcheck disable=SC2086
  install -m 0640 $GROUP_OPT "$SRC/config/production.example.yaml" "$ETC/liquid-gateway.yaml"
  say "installed an example config at $ETC/liquid-gateway.yaml: edit it, then run this again"
  NEW_CONFIG=1
fi
chmod 0640 "$ETC/liquid-gateway.yaml"
for secret in mqtt-upstream mqtt-local; do  # the unit loads both as credentials
  [ -e "$ETC/secrets/$secret" ] || install -m 0600 /dev/null "$ETC/secrets/$secret"
done
if [ ! -e "$ENVFILE" ]; then  # the unit's EnvironmentFile: site settings, never overwritten
  install -d -m 0755 "$(dirname "$ENVFILE")"
  install -m 0600 /dev/null "$ENVFILE"
  printf '%s\n' "# KEY=value lines for liquid-gateway.service (e.g. a password_env variable)." > "$ENVFILE"
fi
install -d -m 0755 "$(dirname "$TMPFILES")"
install -m 0644 "$SRC/systemd/liquid-gateway.tmpfiles" "$TMPFILES"

# --- the unit --------------------------------------------------------------------------
install -d -m 0755 "$(dirname "$UNIT")"
sed "s|/opt/liquid-gateway|$PREFIX|g" "$SRC/systemd/liquid-gateway.service" > "$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"

# --- validate, then enable -------------------------------------------------------------
if [ "$NEW_CONFIG" = 1 ]; then
  say "not enabling the service until the config is edited"
  exit 0
fi
# As the service will see it: relative password_file names resolve in the secrets folder,
# and every other file must be readable by the service user (staging has no such user).
AS_USER=""
if live; then AS_USER="--user liquid-gateway"; fi
# The venv's python, not its script (a staged script names the final prefix); -P: the
# installed package, never a `gateway` folder in the directory this runs from.
# shellcheck disable=SC2086  # AS_USER is two words or none
if ! CREDENTIALS_DIRECTORY="$ETC/secrets" "$VENV/bin/python" -P -m gateway config validate $AS_USER "$ETC/liquid-gateway.yaml"; then
  echo "install.sh: $ETC/liquid-gateway.yaml is invalid: not enabling the service" >&2
  exit 78
fi
if ! live; then
  say "staged under $ROOT (no user created, systemctl not run)"
  exit 0
fi
systemctl daemon-reload
if [ "$START" = 1 ]; then
  systemctl enable liquid-gateway.service
  systemctl restart liquid-gateway.service
  systemctl --no-pager status liquid-gateway.service || true
else
  say "installed; start with: systemctl enable --now liquid-gateway"
fi
