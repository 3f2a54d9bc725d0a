"""Compile the detector's one source, ``core.py``, with mypyc into ``_core_compiled``.

Two callers: the wheel build (``hatch_build.py`` loads this file by path, so it uses the
standard library only and imports mypyc and setuptools only inside ``build``) and a source
checkout, where the tests import the package from the tree::

    python -m gateway.detector.build            # in place, next to core.py; exit 1 on failure
    python -m gateway.detector.build --optional # warn instead (core.py still runs as it is)

The build copies ``core.py`` to ``_core_compiled.py`` with one line added, the SHA-256 of the
source it came from, compiles that copy, and deletes it: the copy is a build artefact, never a
second source. ``gateway.detector.engine`` uses the result only when the stamp matches the
``core.py`` beside it. mypyc writes two extension modules: ``_core_compiled`` and its runtime
library ``_core_compiled__mypyc``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "core.py"
MODULE = "_core_compiled"
ROOT = HERE.parents[1]  # the folder that holds the gateway package

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="liquid-gateway-detector-core",
    packages=[],
    py_modules=[],
    ext_modules=mypycify(
        ["--config-file", sys.argv[3], sys.argv[1]], opt_level="3", target_dir=sys.argv[2]
    ),
    script_args=["build_ext", "--inplace", "--build-temp", sys.argv[2]],
)
"""


_MYPY_SETTINGS = """
[mypy]
ignore_missing_imports = True
follow_imports = silent
"""


class BuildError(Exception):
    pass


def source_sha256() -> str:
    """Stamped into the build: a build of another core.py is not used (engine.py)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def built_files(folder: Path) -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return [folder / f"{MODULE}{suffix}", folder / f"{MODULE}__mypyc{suffix}"]


def build(out_dir: Path | None = None) -> list[Path]:
    """Compile into ``out_dir`` (default: next to core.py); the paths of the modules."""
    try:
        import mypyc  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            f"mypyc and setuptools are needed to compile ({exc.name} missing)"
        ) from exc
    if not SOURCE.is_file():
        raise BuildError(f"{SOURCE} is missing")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        raise BuildError("no Python headers (install them, e.g. apt-get install python3-dev)")
    if shutil.which(os.environ.get("CC", "cc").split()[0]) is None and not shutil.which("gcc"):
        raise BuildError("no C compiler found (install gcc, e.g. apt-get install gcc)")
    if out_dir is None or Path(out_dir).resolve() == HERE:
        return _compile_in_place()
    # A build elsewhere (the wheel's) must leave the in-place build of a checkout as it was:
    # pip builds a local folder in place, and the tests use that build.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="core-kept-") as kept:
        saved = []
        for path in built_files(HERE):
            if path.is_file():
                os.replace(path, Path(kept) / path.name)
                saved.append(path)
        try:
            moved = []
            for path in _compile_in_place():
                target = out / path.name
                os.replace(path, target)
                moved.append(target)
        finally:
            for path in saved:
                os.replace(Path(kept) / path.name, path)
    return moved


def _compile_in_place() -> list[Path]:
    """mypyc on a stamped copy of core.py; the modules land next to core.py."""
    # Unlink rather than overwrite: a running gateway keeps the old files mapped.
    for old in built_files(HERE):
        old.unlink(missing_ok=True)
    copy = HERE / f"{MODULE}.py"
    text = SOURCE.read_text(encoding="utf-8")
    copy.write_text(
        f"{text}\n\n# Written by gateway/detector/build.py; never edit, never commit.\n"
        f'COMPILED_FROM: Final = "{source_sha256()}"\n',
        encoding="utf-8",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="mypyc-") as tmp:
            setup = Path(tmp) / "setup_core.py"
            setup.write_text(_SETUP, encoding="utf-8")
            # Its own mypy settings, not the project's: those name plugins (pydantic's) that
            # the wheel's isolated build environment does not have, and core.py needs none.
            settings = Path(tmp) / "mypy.ini"
            settings.write_text(_MYPY_SETTINGS, encoding="utf-8")
            argv = [sys.executable, str(setup), str(copy.relative_to(ROOT)), str(Path(tmp) / "b"),
                    str(settings)]  # fmt: skip
            try:
                result = subprocess.run(
                    argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BuildError(f"cannot run mypyc: {exc}") from exc
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
                raise BuildError(f"mypyc failed on {SOURCE.name}:\n{tail}")
    finally:
        copy.unlink(missing_ok=True)
    produced = built_files(HERE)
    missing = [p.name for p in produced if not p.is_file()]
    if missing:
        raise BuildError(f"mypyc ran but did not write {', '.join(missing)}")
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optional", action="store_true", help="warn instead of failing")
    args = parser.parse_args(argv)
    try:
        targets = build()
    except BuildError as exc:
        print(f"warning: detector core not compiled, core.py runs as it is: {exc}",
              file=sys.stderr)  # fmt: skip
        return 0 if args.optional else 1
    print("built " + ", ".join(str(t) for t in targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
