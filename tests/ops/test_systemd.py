"""The unit file, its hardening score, the installer (into a scratch root) and completions."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import site
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "liquid-gateway.service"
INSTALL = REPO / "systemd" / "install.sh"


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_has_what_operations_need() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"] and d["RestartPreventExitStatus"] == ["78"]
    assert d["User"] == ["liquid-gateway"] and "dialout" in d["SupplementaryGroups"][0]
    assert "DynamicUser" not in d  # a static user, so dialout membership and files persist
    assert d["StateDirectory"] == ["liquid-gateway"]
    assert d["ConfigurationDirectory"] == ["liquid-gateway"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "WatchdogSec" in d
    assert any(v.startswith("mqtt-upstream:") for v in d["LoadCredential"])
    # Serial ports: tty devices allowed, /dev not private, no user namespace (dialout mapping).
    assert "PrivateDevices" not in d and "PrivateUsers" not in d
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw"} <= set(d["DeviceAllow"])
    assert d["PrivateMounts"] == ["yes"]  # systemd-analyze counted it against us when unset
    assert d["EnvironmentFile"] == ["-/etc/default/liquid-gateway"]  # optional, site-owned


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_security_exposure_is_2_or_better(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def _wheel(dest: Path) -> Path:
    """A wheel of the package, built with zipfile (no build backend needed offline)."""
    name = "liquid_gateway-0.1.0"
    path = dest / f"{name}-py3-none-any.whl"
    info = f"{name}.dist-info"
    files: dict[str, bytes] = {}
    for f in (REPO / "gateway").rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            files[f.relative_to(REPO).as_posix()] = f.read_bytes()
    files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: liquid-gateway\nVersion: 0.1.0\n"
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = (
        b"[console_scripts]\nliquid-gateway = gateway.cli.app:main\n"
    )
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
    return path


def _run_install(root: Path, wheelhouse: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PIP_NO_DEPS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [
            "sh",
            str(INSTALL),
            "--destdir",
            str(root),
            "--wheelhouse",
            str(wheelhouse),
            "--python",
            sys.executable,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


@pytest.mark.slow
def test_installer_into_a_scratch_root_is_idempotent_and_validates(tmp_path: Path) -> None:
    root, wheelhouse = tmp_path / "root", tmp_path / "wheels"
    wheelhouse.mkdir()
    _wheel(wheelhouse)
    first = _run_install(root, wheelhouse)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "not enabling the service until the config is edited" in first.stdout
    etc = root / "etc" / "liquid-gateway"
    assert stat.S_IMODE((etc / "liquid-gateway.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((etc / "secrets" / "mqtt-upstream").stat().st_mode) == 0o600
    unit = root / "etc" / "systemd" / "system" / "liquid-gateway.service"
    assert unit.read_text() == UNIT.read_text()
    assert (root / "usr/lib/sysusers.d/liquid-gateway.conf").exists()
    envfile = root / "etc" / "default" / "liquid-gateway"
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600 and envfile.read_text().startswith("#")
    assert (root / "usr/share/bash-completion/completions/liquid-gateway").exists()
    venv = root / "opt" / "liquid-gateway" / "venv"
    assert (venv / "bin" / "liquid-gateway").exists()
    assert os.readlink(root / "usr/local/bin/liquid-gateway") == (
        "/opt/liquid-gateway/venv/bin/liquid-gateway"
    )
    # The scratch venv got only our wheel (PIP_NO_DEPS); lend it the test venv's packages.
    purelib = next(venv.glob("lib/python*/site-packages"))
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    # Second run: keeps the edited config, validates it, stages without systemctl.
    (etc / "liquid-gateway.yaml").write_text("gateway: {id: edited}\n")
    again = _run_install(root, wheelhouse)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ok (0 sources" in again.stdout and "staged under" in again.stdout
    assert (etc / "liquid-gateway.yaml").read_text() == "gateway: {id: edited}\n"

    # A broken config: exit 78, not enabled.
    (etc / "liquid-gateway.yaml").write_text("gateway: {id: 'bad id'}\n")
    broken = _run_install(root, wheelhouse)
    assert broken.returncode == 78 and "not enabling" in broken.stderr

    # Uninstall keeps config and secrets; --purge removes them.
    gone = subprocess.run(
        ["sh", str(INSTALL), "--destdir", str(root), "--uninstall"], capture_output=True, text=True
    )
    assert gone.returncode == 0, gone.stderr
    assert not venv.exists() and not unit.exists() and etc.exists()
    purge = subprocess.run(
        ["sh", str(INSTALL), "--destdir", str(root), "--uninstall", "--purge"],
        capture_output=True,
        text=True,
    )
    assert purge.returncode == 0 and not etc.exists() and not envfile.exists()


@pytest.mark.slow
def test_a_staged_tree_runs_once_moved_into_place(tmp_path: Path) -> None:
    """--destdir builds an image's tree: once moved to /, its scripts must run (their #!
    lines name the prefix, not the staging dir), and the config must reach the service's
    group at first boot (tmpfiles.d), since staging has no such user."""
    stage, wheelhouse = tmp_path / "stage", tmp_path / "wheels"
    prefix = tmp_path / "final" / "lg"  # stands in for /opt/liquid-gateway
    wheelhouse.mkdir()
    _wheel(wheelhouse)
    done = _run_install(stage, wheelhouse, "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    staged_venv = Path(f"{stage}{prefix}") / "venv"
    leftovers = [
        p.name
        for p in (staged_venv / "bin").iterdir()
        if p.is_file() and not p.is_symlink() and str(stage).encode() in p.read_bytes()
    ]
    assert leftovers == []
    prefix.parent.mkdir(parents=True)
    shutil.move(staged_venv.parent, prefix)
    purelib = next((prefix / "venv").glob("lib/python*/site-packages"))
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    moved = subprocess.run(
        [str(prefix / "venv" / "bin" / "liquid-gateway"), "version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip()
    tmpfiles = (stage / "usr/lib/tmpfiles.d/liquid-gateway.conf").read_text()
    rules = {tuple(line.split()[:5]) for line in tmpfiles.splitlines() if line[:1] == "z"}
    assert (
        "z",
        "/etc/liquid-gateway/liquid-gateway.yaml",
        "0640",
        "root",
        "liquid-gateway",
    ) in rules
    assert ("z", "/etc/liquid-gateway", "0750", "root", "liquid-gateway") in rules


def test_shipped_completions_match_the_cli() -> None:
    from typer._completion_shared import get_completion_script

    files = {"bash": "liquid-gateway.bash", "zsh": "_liquid-gateway", "fish": "liquid-gateway.fish"}
    for shell, name in files.items():
        expected = get_completion_script(
            prog_name="liquid-gateway", complete_var="_LIQUID_GATEWAY_COMPLETE", shell=shell
        )
        shipped = (REPO / "systemd" / "completions" / name).read_text()
        assert shipped.strip() == expected.strip(), name


def test_bash_completion_offers_subcommands() -> None:
    env = os.environ | {
        "_LIQUID_GATEWAY_COMPLETE": "complete_bash",
        "COMP_WORDS": "liquid-gateway db ",
        "COMP_CWORD": "2",
    }
    out = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert {"check", "prune", "vacuum"} <= set(out.stdout.split()), out.stdout + out.stderr
