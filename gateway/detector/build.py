"""Compile the detector's C core (``_kernel.c``) for the running interpreter.

Two callers: the wheel build (``hatch_build.py`` loads this file by path, so it must use the
standard library only) and a source checkout, where the tests import the package from the
tree::

    python -m gateway.detector.build            # in place, next to _kernel.c; exit 1 on failure
    python -m gateway.detector.build --optional # warn instead (the Python core still works)

No setuptools: one C file, one compiler call, with the flags that keep the arithmetic equal
to Python's (-O2, no -ffast-math, no fused multiply-add contraction).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("_kernel.c")
MODULE = "_kernel"
# -ffp-contract=off: no a*b+c fused into one rounding (aarch64 compilers do it by default),
# which would make results differ from Python's in the last bit.
CFLAGS = ["-O2", "-std=c99", "-fPIC", "-ffp-contract=off", "-fno-strict-aliasing"]


class BuildError(Exception):
    pass


def extension_name() -> str:
    return MODULE + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def source_sha256() -> str:
    """Stamped into the module: a build of an older _kernel.c is not used (engine.py)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def compiler() -> list[str]:
    """$CC, else the compiler Python was built with, else cc/gcc/clang from PATH."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if not candidate:
            continue
        argv = shlex.split(candidate)
        if argv and shutil.which(argv[0]):
            return argv
    raise BuildError("no C compiler found (install gcc, e.g. apt-get install gcc)")


def build(out_dir: Path | None = None) -> Path:
    """Compile into ``out_dir`` (default: next to the source); the path of the module."""
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        raise BuildError(
            f"no Python headers at {include} (install them, e.g. apt-get install python3-dev)"
        )
    if not SOURCE.is_file():
        raise BuildError(f"{SOURCE} is missing")
    out_dir = SOURCE.parent if out_dir is None else Path(out_dir)
    target = out_dir / extension_name()
    partial = target.with_name(target.name + ".partial")
    stamp = f'-DKERNEL_SOURCE_SHA256="{source_sha256()}"'
    argv = [*compiler(), *CFLAGS, stamp, "-shared", f"-I{include}", str(SOURCE), "-o", str(partial)]
    if sys.platform == "darwin":
        argv[-2:-2] = ["-undefined", "dynamic_lookup"]
    argv.append("-lm")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run the compiler {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError("the compiler took more than 5 minutes") from exc
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(
            f"compiling {SOURCE.name} failed ({shlex.join(argv)}):\n{result.stderr.strip()}"
        )
    os.replace(partial, target)  # atomic: a running process keeps the old file mapped
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optional", action="store_true", help="warn instead of failing")
    args = parser.parse_args(argv)
    try:
        target = build()
    except BuildError as exc:
        print(f"warning: detector core not compiled, the Python core will be used: {exc}",
              file=sys.stderr)  # fmt: skip
        return 0 if args.optional else 1
    print(f"built {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
