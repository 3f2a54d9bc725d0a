#!/usr/bin/env bash
# Build liquid-gateway_VERSION_ARCH.deb: the tree systemd/install.sh --destdir stages (one
# source for every file, mode and path), plus the maintainer scripts in systemd/deb/.
#
#   tools/build_deb.sh [--version V] [--wheelhouse DIR] [--out DIR] [--python PY] [--compress C]
#
#   --version V        the package version (also $DEB_VERSION); default: the gateway's own
#                      version with Debian revision 1 (0.1.0-1)
#   --wheelhouse DIR   build offline from wheels (passed to install.sh); default: pip installs
#                      this source tree and its dependencies (pip's cache makes a rebuild quick)
#   --out DIR          where the .deb goes (default: dist/)
#   --python PY        Debian's interpreter the venv is made with (default /usr/bin/python3);
#                      the package depends on its exact python3.X
#   --compress C       dpkg-deb's compressor: xz (default), zstd, gzip, none
#
# Needs dpkg-deb; not root (files are owned by root in the package whoever builds it).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${DEB_VERSION:-}
WHEELHOUSE=""
OUT=$SRC/dist
PYTHON=/usr/bin/python3
COMPRESS=xz
PREFIX=/opt/liquid-gateway

while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION=$2; shift 2 ;;
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --compress) COMPRESS=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build_deb.sh: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (apt-get install dpkg)"
# The venv's python is a link to this interpreter: it must be one a Debian package provides.
INTERP=$(readlink -f "$(command -v "$PYTHON" || true)")
[ -x "$INTERP" ] || die "no interpreter $PYTHON"
dpkg -S "$INTERP" >/dev/null 2>&1 \
  || die "$INTERP is not from a Debian package (a pyenv or a venv?): pass --python /usr/bin/python3.X"
PYVER=$("$INTERP" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -n "$VERSION" ]; then
  dpkg --validate-version "$VERSION" || die "not a Debian version: $VERSION"
fi
if [ -n "$WHEELHOUSE" ]; then WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd); fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/liquid-gateway-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root

# --- the tree: install.sh, staged, in the layout a package owns ---------------------------
# A package's unit goes to /usr/lib/systemd/system (/etc/systemd/system is the admin's) and its
# command to /usr/bin (never /usr/local).
args=(--destdir "$ROOT" --prefix "$PREFIX" --python "$INTERP"
  --unitdir /usr/lib/systemd/system --bindir /usr/bin)
if [ -n "$WHEELHOUSE" ]; then args+=(--wheelhouse "$WHEELHOUSE"); fi
(umask 022 && sh "$SRC/systemd/install.sh" "${args[@]}") >&2

if [ -z "$VERSION" ]; then
  VERSION="$("$ROOT$PREFIX/venv/bin/python" -P -c 'import gateway; print(gateway.__version__)')-1"
fi
ARCH=$(dpkg --print-architecture)  # numpy, LiteRT and the compiled detector core are native

# --- control files ----------------------------------------------------------------------
DEB=$ROOT/DEBIAN
install -d -m 0755 "$DEB"
for script in postinst prerm postrm; do
  install -m 0755 "$SRC/systemd/deb/$script" "$DEB/$script"
done
# Everything under /etc is the site's once installed: dpkg keeps an edited file on upgrade
# (and asks when the package's own copy changed too), removes them only at purge.
(cd "$ROOT" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') > "$DEB/conffiles"
chmod 0644 "$DEB/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat > "$DEB/control" <<CONTROL
Package: liquid-gateway
Version: $VERSION
Architecture: $ARCH
Maintainer: Liquid Gateway maintainers <liquid-gateway@localhost>
Installed-Size: $SIZE
Depends: python$PYVER, systemd, init-system-helpers
Section: net
Priority: optional
Description: sensor gateway: liquid-network anomaly detection, store-and-forward
 Reads sensors over serial, Modbus or MQTT, scores every reading with a small
 closed-form continuous-time (CfC) network, buffers readings and alerts in SQLite
 and forwards alerts upstream over MQTT. A systemd service with its own venv under
 $PREFIX; configured in /etc/liquid-gateway/liquid-gateway.yaml.
CONTROL
chmod 0644 "$DEB/control"

mkdir -p "$OUT"
DEBFILE=$OUT/liquid-gateway_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$ROOT" "$DEBFILE" >/dev/null
echo "$DEBFILE"
