"""Wheel build hook: compile the detector's core with mypyc into the wheel when this machine can.

``pip install .`` must never fail for want of a compiler: where gcc or the Python headers are
missing (a Raspberry Pi without build-essential/python3-dev), the wheel is pure Python and the
detector runs ``core.py`` as it is, slower but the same. The compile itself is
``gateway/detector/build.py``, loaded by path (the package's dependencies are not installed in
the isolated build environment).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _load_build_module(root: Path) -> Any:
    path = root / "gateway" / "detector" / "build.py"
    spec = importlib.util.spec_from_file_location("_liquid_gateway_kernel_build", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class KernelBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        build = _load_build_module(Path(self.root))
        self._tmp = tempfile.TemporaryDirectory()
        try:
            modules = build.build(Path(self._tmp.name))
        except build.BuildError as exc:
            print(
                f"WARNING: liquid-gateway: the compiled detector core was not built ({exc}); "
                "installing the interpreted core (same results, about 10x slower).",
                file=sys.stderr,
            )
            return
        for module in modules:
            build_data["force_include"][str(module)] = f"gateway/detector/{module.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
