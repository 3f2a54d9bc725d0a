"""The .deb from tools/build_deb.sh, installed on this machine with dpkg, upgraded, removed and
purged: files, modes, the user, the installed gateway running, and the site's config, secrets,
database and outbox kept until purge.

Root and dpkg-deb only (CI has both). Offline: the wheelhouse holds the gateway's wheel, built
from this tree by its own build backend, and the dependencies this test's venv has installed,
repacked as wheels, so the package gets the exact versions the suite runs against.
"""

from __future__ import annotations

import email.parser
import grp
import hashlib
import importlib.metadata
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway import __version__
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tools" / "build_deb.sh"
PACKAGE = "liquid-gateway"
USER = "liquid-gateway"
ETC = Path("/etc/liquid-gateway")
CONFIG = ETC / "liquid-gateway.yaml"
SECRET = ETC / "secrets" / "mqtt-upstream"
ENVFILE = Path("/etc/default/liquid-gateway")
DATA = Path("/var/lib/liquid-gateway")
PREFIX = Path("/opt/liquid-gateway")
GATEWAY = PREFIX / "venv" / "bin" / "liquid-gateway"
UNIT = Path("/usr/lib/systemd/system/liquid-gateway.service")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/liquid-gateway.service")
MASK = Path("/etc/systemd/system/liquid-gateway.service")
DSH_STATE = Path("/var/lib/systemd/deb-systemd-helper-enabled/liquid-gateway.service.dsh-also")
# Debian's interpreter of this venv's minor version: the repacked wheels carry its tags.
DEBIAN_PYTHON = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="installs a .deb with dpkg -i: needs root",
    ),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb missing (not Debian)"),
]


def _run(*cmd: str | Path, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; fail the test with its output when it fails."""
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "PIP_NO_INDEX": "1"}
    done = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
        **kw,  # type: ignore[arg-type]
    )
    assert done.returncode == 0, f"{cmd} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


# --- an offline wheelhouse ------------------------------------------------------------------


def _record_line(arc: str, data: bytes) -> str:
    digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def _repack(dist: importlib.metadata.Distribution, dest: Path) -> None:
    """An installed distribution as the wheel it came from: its files under site-packages
    (scripts are made again from entry_points.txt, bytecode is compiled again)."""
    info = next(
        (Path(str(f)).parts[0] for f in dist.files or () if str(f).endswith(".dist-info/WHEEL")),
        None,
    )
    assert info is not None, f"{dist.metadata['Name']}: no .dist-info/WHEEL to take tags from"
    wheel_meta = dist.locate_file(f"{info}/WHEEL").read_text()  # type: ignore[union-attr]
    tags = [t.split("-") for t in re.findall(r"^Tag: (\S+)$", wheel_meta, re.M)]
    assert tags, f"{dist.metadata['Name']}: WHEEL names no tag"
    # The compressed tag set (py2.py3-none-any), as the original file name had it.
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    record: list[str] = []
    with zipfile.ZipFile(dest / f"{name}-{dist.version}-{tag}.whl", "w") as wheel:
        for f in dist.files or ():
            arc = Path(str(f)).as_posix()
            if arc.startswith("..") or arc in skip or "__pycache__" in arc or arc.endswith(".pyc"):
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            wheel.writestr(arc, data)
            record.append(_record_line(arc, data))
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


def _wheelhouse(dest: Path) -> None:
    """The gateway's wheel, and every distribution it needs as installed here."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(dest), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, "building the wheel (needs the dev extra: hatchling)\n" + (
        built.stderr
    )
    (ours,) = dest.glob("liquid_gateway-*.whl")
    with zipfile.ZipFile(ours) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(wheel.read(meta_name).decode())
    installed = {
        canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()
    }
    todo = [Requirement(r) for r in meta.get_all("Requires-Dist") or ()]
    done: set[str] = set()
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in done or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        assert key in installed, f"{req.name} is not installed in the test venv"
        done.add(key)
        _repack(installed[key], dest)
        todo += [Requirement(r) for r in installed[key].requires or ()]


# --- the test --------------------------------------------------------------------------------


def _build(wheelhouse: Path, out: Path, *args: str) -> Path:
    # zstd where this dpkg reads it: seconds instead of xz's ~45 s for the same install.
    help_text = subprocess.run(["dpkg-deb", "--help"], capture_output=True, text=True).stdout
    compress = "zstd" if "zstd" in help_text else "gzip"
    built = _run(
        "bash", BUILD, "--wheelhouse", wheelhouse, "--out", out, "--python", DEBIAN_PYTHON,
        "--compress", compress, *args, timeout=600,
    )  # fmt: skip
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.parent == out, built.stdout
    return deb


def _field(deb: Path, name: str) -> str:
    return _run("dpkg-deb", "--field", deb, name).stdout.strip()


def _mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return (
        stat.S_IMODE(st.st_mode),
        pwd.getpwuid(st.st_uid).pw_name,
        grp.getgrgid(st.st_gid).gr_name,
    )


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def _outbox() -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{DATA / 'gateway.db'}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT msg_id, kind, delivered_ts IS NULL FROM outbox ORDER BY seq"
        ).fetchall()


def _site_config(port: int) -> str:
    # Simulated sensors with a fault from the start (events), an upstream nobody answers
    # on loopback: the events wait in the outbox, as they would while the uplink is down.
    return f"""gateway: {{id: deb-test, data_dir: {DATA}}}
sources:
  - {{type: simulate, name: sim, streams: 2, rate_hz: 20, seed: 1, faults: true,
     fault_after: 0s, fault_every: 1s, fault_length: 500ms}}
upstream:
  broker: {{host: 127.0.0.1, port: {port}}}
  topic_prefix: deb-test
"""


@pytest.fixture
def clean_machine() -> Iterator[None]:
    """Refuse to run over a real install (purge would take its data), purge after."""
    found = [str(p) for p in (ETC, DATA, PREFIX, ENVFILE) if p.exists()]
    listed = subprocess.run(["dpkg-query", "-W", PACKAGE], capture_output=True, text=True)
    if listed.returncode == 0 or found or _user_exists():
        pytest.fail(
            "this machine has Liquid Gateway installed (package, user or "
            f"{', '.join(found) or 'files'}): this test installs and purges the package, "
            "so it runs only where there is none"
        )
    yield
    subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, timeout=300)


@pytest.mark.slow
def test_deb_installs_upgrades_keeps_site_data_and_purges(
    tmp_path: Path, clean_machine: None
) -> None:
    if not DEBIAN_PYTHON.exists():
        pytest.fail(f"{DEBIAN_PYTHON} is missing: the package's venv needs Debian's python")
    wheelhouse, out = tmp_path / "wheels", tmp_path / "out"
    wheelhouse.mkdir()
    _wheelhouse(wheelhouse)

    # --- version X: install ----------------------------------------------------------------
    first = _build(wheelhouse, out)
    version = _field(first, "Version")
    assert version == f"{__version__}-1"
    installed = _run("dpkg", "-i", first)
    assert "not enabling the service until the config is edited" in installed.stdout
    status = _run("dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE).stdout
    assert status == f"install ok installed {version}"
    listed = _run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert {str(CONFIG), str(SECRET), str(ENVFILE)} <= set(listed.split())

    user = pwd.getpwnam(USER)
    assert user.pw_dir == str(DATA) and user.pw_shell.endswith("nologin")
    assert USER in grp.getgrnam("dialout").gr_mem
    assert _mode(ETC) == (0o750, "root", USER)
    assert _mode(CONFIG) == (0o640, "root", USER)
    assert _mode(ETC / "secrets") == (0o700, "root", "root")
    assert _mode(SECRET) == (0o600, "root", "root")
    assert _mode(ENVFILE) == (0o600, "root", "root")
    assert _mode(DATA) == (0o750, USER, USER)
    assert UNIT.is_file() and os.readlink("/usr/bin/liquid-gateway") == str(GATEWAY)
    assert not WANTS.exists()  # the example config as shipped: not enabled
    # Nothing names the build's staging dir (install.sh points the venv at its prefix).
    assert "liquid-gateway-deb." not in (PREFIX / "venv" / "pyvenv.cfg").read_text()

    assert _run(GATEWAY, "version", cwd="/").stdout.strip() == __version__

    # --- the site: its config, a secret, a setting; a run that leaves an outbox ---------------
    port = free_port()  # closed again: the uplink is down
    site = _site_config(port)
    CONFIG.write_text(site)  # in place: keeps the file's owner and mode
    SECRET.write_text("not-a-real-password\n")
    ENVFILE.write_text("LIQUID_GATEWAY_TEST=kept\n")
    valid = _run(GATEWAY, "config", "validate", "--user", USER, CONFIG, cwd="/")
    assert "ok (1 sources, upstream configured)" in valid.stdout
    info = _run(GATEWAY, "model", "info", "-c", CONFIG, cwd="/").stdout
    assert "cfc-default" in info, info  # the packaged model, found and loaded
    assert "compiled core" in info, info  # mypyc's extension runs under Debian's python
    _run("runuser", "-u", USER, "--", GATEWAY, "run", "-c", CONFIG, "--duration", "3s", cwd="/")
    queued = _outbox()
    assert queued and all(pending for _, _, pending in queued), queued
    assert _mode(DATA / "gateway.db")[1] == USER
    # README's step after editing the config: validated, then enabled.
    reconfigured = _run("dpkg-reconfigure", PACKAGE)
    assert "ok (1 sources, upstream configured)" in reconfigured.stdout
    assert WANTS.is_symlink()

    # --- version X+1: an upgrade keeps it all ------------------------------------------------
    second = _build(wheelhouse, out, "--version", f"{version}+1")
    newer = _field(second, "Version")
    _run("dpkg", "--compare-versions", newer, "gt", version)
    upgraded = _run("dpkg", "-i", second)
    assert "ok (1 sources, upstream configured)" in upgraded.stdout
    status = _run("dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE).stdout
    assert status == f"install ok installed {newer}"
    assert CONFIG.read_text() == site and _mode(CONFIG) == (0o640, "root", USER)
    assert SECRET.read_text() == "not-a-real-password\n" and _mode(SECRET)[0] == 0o600
    assert ENVFILE.read_text() == "LIQUID_GATEWAY_TEST=kept\n"
    assert not list(ETC.rglob("*.dpkg-*")) and not list(ENVFILE.parent.glob("*.dpkg-*"))
    assert _outbox() == queued
    assert WANTS.is_symlink()  # still enabled
    assert _run(GATEWAY, "version", cwd="/").stdout.strip() == __version__

    # --- remove: the code goes, the site's config and data stay -----------------------------
    _run("dpkg", "-r", PACKAGE)
    status = _run("dpkg-query", "-W", "-f=${Status}", PACKAGE).stdout
    assert status == "deinstall ok config-files"
    assert not PREFIX.exists() and not UNIT.exists()
    assert not os.path.lexists("/usr/bin/liquid-gateway")
    assert CONFIG.read_text() == site and SECRET.read_text() == "not-a-real-password\n"
    assert ENVFILE.read_text() == "LIQUID_GATEWAY_TEST=kept\n"
    assert _outbox() == queued
    assert _user_exists()

    # --- purge: nothing left, user included -------------------------------------------------
    _run("dpkg", "--purge", PACKAGE)
    gone = subprocess.run(["dpkg-query", "-W", PACKAGE], capture_output=True, text=True)
    assert gone.returncode != 0
    for path in (ETC, DATA, PREFIX, ENVFILE, WANTS, MASK, DSH_STATE):
        assert not os.path.lexists(path), path
    assert not _user_exists()
    with pytest.raises(KeyError):
        grp.getgrnam(USER)
    assert USER not in grp.getgrnam("dialout").gr_mem
