"""Load the CfC step model on whatever runtime this box has, behind one small interface.

The detector only needs ``step(x, h, dt) -> (pred, log_var, h_new)`` over a batch of streams and
an id to stamp on alerts and persisted state. Which engine runs it is a deployment detail:
LiteRT (``ai-edge-litert``) by default, ``tflite-runtime`` as a legacy fallback, ``tensorflow.lite``
if TensorFlow happens to be installed, and the pure-numpy cell (same weights) where no TFLite
wheel exists. ``auto`` tries them in that order; naming one explicitly means exactly that one.

Measured, not guessed (see DESIGN.md): tensors must be mapped by name (the flatbuffer order is not
the signature order), and plain ``set_tensor``/``invoke``/``get_tensor`` with ``num_threads=1``
is the fastest path. Resizing (``resize_tensor_input`` + ``allocate_tensors``) costs
several small invokes, and the pipeline's batch size changes almost every tick; so batches of
up to ``_PAD_UP_TO`` streams are padded to a power of two (rows are independent) and the
outputs sliced, which keeps the interpreter's shape stable where a resize would cost more than
the padding. Larger batches get their exact size: there, padding costs more than a resize.
An interpreter is not thread-safe: a loaded model belongs to the one thread that steps it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

import gateway
from gateway.errors import ModelError
from gateway.model.card import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    ModelCard,
    card_path_for,
    expected_shapes,
    file_sha256,
    load_card,
    verify_file,
)
from gateway.model.cell import NumpyCfc

log = logging.getLogger(__name__)

Runtime = Literal["auto", "litert", "tflite-runtime", "tensorflow", "numpy"]
RUNTIMES: tuple[str, ...] = ("auto", "litert", "tflite-runtime", "tensorflow", "numpy")
TFLITE_RUNTIMES: tuple[str, ...] = ("litert", "tflite-runtime", "tensorflow")
DEFAULT_MODEL = "cfc-default.tflite"
MAX_MODEL_BYTES = 64 * 1024 * 1024
# LiteRT and the numpy reference agree this closely over 1,000 fed-back float32 steps with
# irregular dt (rounding differs in the order of ops); a broken export is off by far more.
PARITY_TOLERANCE = 1e-4
# Batches up to this many streams are padded rather than resized for (measured: a resize costs
# about as much as 30-60 padded rows at B <= 16; beyond that, exact sizes win).
_PAD_UP_TO = 16
_INTERPRETER_MODULES = {
    "litert": ("ai_edge_litert.interpreter", "pip install ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "pip install 'tflite-runtime' 'numpy<2'"),
    "tensorflow": ("tensorflow.lite", "pip install tensorflow-cpu"),
}

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class StepModel(Protocol):
    """One CfC step over a batch of streams; float32 in and out, ``B`` may change per call."""

    model_id: str
    name: str
    sha256: str
    hidden_size: int
    features: int
    runtime: str
    path: Path
    card: ModelCard | None

    def step(self, x: np.ndarray, h: np.ndarray, dt: np.ndarray) -> Outputs: ...


class _Base:
    """Identity and argument checks shared by both backends."""

    runtime = ""

    def __init__(self, path: Path, sha256: str, card: ModelCard | None, name: str) -> None:
        self.path = path
        self.sha256 = sha256
        self.card = card
        self.name = name
        self.model_id = f"{name}@{sha256[:8]}"
        self.hidden_size = 0
        self.features = 0

    def _inputs(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        h = np.ascontiguousarray(h, dtype=np.float32)
        dt = np.ascontiguousarray(dt, dtype=np.float32)
        b = x.shape[0] if x.ndim == 2 else -1
        if x.shape != (b, self.features) or h.shape != (b, self.hidden_size) or dt.shape != (b, 1):
            raise ValueError(
                f"{self.model_id}: step wants x[B,{self.features}], h[B,{self.hidden_size}], "
                f"dt[B,1]; got {x.shape}, {h.shape}, {dt.shape}"
            )
        return x, h, dt

    def _empty(self) -> Outputs:
        f, hs = self.features, self.hidden_size
        return (np.empty((0, f), np.float32), np.empty((0, f), np.float32),
                np.empty((0, hs), np.float32))  # fmt: skip

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id} on {self.runtime}>"


class TfliteModel(_Base):
    """A TFLite interpreter (LiteRT, tflite-runtime or tf.lite) driven tensor by tensor."""

    def __init__(
        self,
        interpreter: Any,
        runtime: str,
        path: Path,
        sha256: str,
        card: ModelCard | None,
        name: str,
    ) -> None:
        super().__init__(path, sha256, card, name)
        self.runtime = runtime
        self._interp = interpreter
        index = _tensor_indices(interpreter, path)
        details = {d["index"]: d for d in interpreter.get_input_details()}
        details.update({d["index"]: d for d in interpreter.get_output_details()})
        shapes = {n: tuple(int(s) for s in details[i]["shape_signature"]) for n, i in index.items()}
        for n, i in index.items():
            if np.dtype(details[i]["dtype"]) != np.float32:
                raise ModelError(f"model {path}: tensor {n} is {details[i]['dtype']}, not float32")
        if card is not None:
            expected = card.expected_shapes()
        else:
            expected = expected_shapes(shapes["x"][-1], shapes["h"][-1])
        for n, want in expected.items():
            if shapes[n] != want:
                source = f" (from {card.path.name})" if card is not None else ""
                raise ModelError(
                    f"model {path}: tensor {n} has shape {list(shapes[n])}, "
                    f"expected {list(want)}{source}"
                )
        self.features, self.hidden_size = expected["x"][1], expected["h"][1]
        self._x, self._h, self._dt = index["x"], index["h"], index["dt"]
        self._pred, self._log_var, self._h_new = index["pred"], index["log_var"], index["h_new"]
        self._capacity = 0  # batch rows the interpreter is allocated for
        self._pad = self._empty()
        self.resizes = 0
        # The public set_tensor/get_tensor/invoke are one-line wrappers around the native
        # SetTensor/GetTensor/Invoke (invoke() first checks that no numpy view of an internal
        # buffer is alive, by counting the references to the native object; this class never
        # takes a view). At a few us per reading the wrappers' ~2 us count, so step() calls
        # the native ones, bound once, where the runtime has them. Bound methods hold the
        # native object, which fails that check: ``_resize`` lets go of them while the public
        # API reallocates, and binds them again after.
        self._calls: tuple[Any, Any, Any] | None = None
        self._bind()

    def _bind(self) -> None:
        """(set, get, invoke): the native calls where the runtime has them, else the public."""
        interp = self._interp
        native: Any = getattr(interp, "_interpreter", None)
        if all(hasattr(native, n) for n in ("SetTensor", "GetTensor", "Invoke")):
            self._calls = (native.SetTensor, native.GetTensor, native.Invoke)
        else:
            self._calls = (interp.set_tensor, interp.get_tensor, interp.invoke)

    def step(self, x: np.ndarray, h: np.ndarray, dt: np.ndarray) -> Outputs:
        x, h, dt = self._inputs(x, h, dt)
        b = len(x)
        cap = self._capacity
        if b != cap:  # the common case (one replay file, one steady batch) skips all this
            if b == 0:
                return self._empty()
            if not b < cap <= _PAD_UP_TO:
                cap = b if b > _PAD_UP_TO else 1 << (b - 1).bit_length()
                self._resize(cap)
            if b < cap:
                px, ph, pdt = self._pad
                px[:b], ph[:b], pdt[:b] = x, h, dt  # the rows past b keep earlier, finite inputs
                x, h, dt = px, ph, pdt
        put, get, run = self._calls  # type: ignore[misc]
        put(self._x, x)
        put(self._h, h)
        put(self._dt, dt)
        run()
        # get_tensor copies: the outputs stay valid after the next invoke.
        if b < cap:
            return get(self._pred)[:b], get(self._log_var)[:b], get(self._h_new)[:b]
        return get(self._pred), get(self._log_var), get(self._h_new)

    def _resize(self, cap: int) -> None:
        self._calls = None  # the public API below refuses while the native calls are held
        interp = self._interp
        try:
            interp.resize_tensor_input(self._x, [cap, self.features])
            interp.resize_tensor_input(self._h, [cap, self.hidden_size])
            interp.resize_tensor_input(self._dt, [cap, 1])
            interp.allocate_tensors()
        finally:
            self._bind()
        self._capacity = cap
        self.resizes += 1
        self._pad = (
            np.zeros((cap, self.features), np.float32),
            np.zeros((cap, self.hidden_size), np.float32),
            np.ones((cap, 1), np.float32),
        )


class NumpyModel(_Base):
    """The same cell in numpy, from the ``.npz`` next to the ``.tflite``."""

    runtime = "numpy"

    def __init__(
        self, cell: NumpyCfc, path: Path, sha256: str, card: ModelCard | None, name: str
    ) -> None:
        super().__init__(path, sha256, card, name)
        self._cell = cell
        self.hidden_size = cell.hidden_size
        self.features = cell.features

    def step(self, x: np.ndarray, h: np.ndarray, dt: np.ndarray) -> Outputs:
        x, h, dt = self._inputs(x, h, dt)
        if x.shape[0] == 0:
            return self._empty()
        pred, log_var, h_new = self._cell.step(x, h, dt)
        return np.ascontiguousarray(pred), log_var, h_new


def _probe(model: StepModel) -> None:
    """One step on zeros at load time: a broken model fails here, not on the first reading."""
    x = np.zeros((1, model.features), np.float32)
    h = np.zeros((1, model.hidden_size), np.float32)
    try:
        outputs = model.step(x, h, np.ones((1, 1), np.float32))
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"model {model.path} fails on {model.runtime}: {exc}") from exc
    if not all(np.all(np.isfinite(o)) for o in outputs):
        raise ModelError(
            f"model {model.path} gives non-finite outputs on {model.runtime} "
            "(variable ops without weights?)"
        )


def default_model_path() -> Path:
    """The packaged default: ``gateway/_models`` in a wheel, ``<repo>/models`` in a checkout."""
    package = Path(gateway.__file__).resolve().parent
    candidates = [package / "_models" / DEFAULT_MODEL, package.parent / "models" / DEFAULT_MODEL]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelError(
        "no packaged default model: looked for " + " and ".join(str(c) for c in candidates)
    )


def _resolve(path: Path | None) -> Path:
    if path is None:
        return default_model_path()
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / DEFAULT_MODEL
    elif path.suffix in (".json", ".npz"):
        path = path.with_suffix(".tflite")
    return path


def _check_model_file(path: Path) -> None:
    """Cheap checks before any library sees the file: present, sane size, TFLite identifier."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError as exc:
        raise ModelError(f"model file {path} not found") from exc
    except OSError as exc:
        raise ModelError(f"model file {path} is unreadable: {exc.strerror or exc}") from exc
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model file {path} is {size} bytes, more than {MAX_MODEL_BYTES}")
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(f"model file {path} is not a TFLite flatbuffer (truncated or corrupt)")


def _identify(path: Path) -> tuple[str, ModelCard | None, str]:
    """(sha256, card or None, name) after checking the file against its card if it has one."""
    _check_model_file(path)
    sha = file_sha256(path)
    card_path = card_path_for(path)
    if not card_path.exists():
        log.warning("model %s has no card (%s): tensor shapes unchecked", path, card_path.name)
        return sha, None, path.stem
    card = load_card(card_path)
    verify_file(card, path, sha)
    return sha, card, card.name


def _interpreter_class(runtime: str) -> Any:
    module_name, _ = _INTERPRETER_MODULES[runtime]
    module = importlib.import_module(module_name)
    return module.Interpreter


def _unavailable(exc: BaseException) -> bool:
    """True when a backend cannot run here at all (missing, or built for another numpy)."""
    return isinstance(exc, ImportError) or "numpy" in str(exc).lower()


def _tensor_indices(interpreter: Any, path: Path) -> dict[str, int]:
    """Tensor name -> index, from the signature def if present, else from tensor names."""
    index: dict[str, int] = {}
    try:
        signatures = interpreter._get_full_signature_list() or {}
    except (AttributeError, RuntimeError, ValueError):
        signatures = {}
    if signatures:
        sig = signatures.get("serving_default") or next(iter(signatures.values()))
        index.update({str(k): int(v) for k, v in sig.get("inputs", {}).items()})
        index.update({str(k): int(v) for k, v in sig.get("outputs", {}).items()})
    wanted = INPUT_NAMES + OUTPUT_NAMES
    if not all(n in index for n in wanted):
        for d in interpreter.get_input_details() + interpreter.get_output_details():
            name = _plain_name(d["name"])
            if name in wanted:
                index.setdefault(name, int(d["index"]))
    missing = [n for n in wanted if n not in index]
    if missing:
        found = [
            d["name"] for d in interpreter.get_input_details() + interpreter.get_output_details()
        ]
        raise ModelError(f"model {path}: no tensor named {', '.join(missing)} (has {found})")
    return {n: index[n] for n in wanted}


def _plain_name(name: str) -> str:
    """``serving_default_x:0`` -> ``x``: drop the signature prefix and the output suffix."""
    name = name.split(":", 1)[0]
    for prefix in ("serving_default_",):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _load_numpy(path: Path, sha: str, card: ModelCard | None, name: str) -> NumpyModel:
    weights = path.with_suffix(".npz")
    if card is not None and card.weights_file and card.weights_file != weights.name:
        weights = path.with_name(card.weights_file)
    if not weights.is_file():
        raise ModelError(f"the numpy runtime needs the weights {weights} next to {path.name}")
    if card is not None:
        verify_file(card, weights)
    cell = NumpyCfc.load(weights)
    if card is not None and (cell.hidden_size, cell.features) != (card.hidden_size, card.features):
        raise ModelError(
            f"weights {weights}: H={cell.hidden_size} F={cell.features}, but the card says "
            f"H={card.hidden_size} F={card.features}"
        )
    return NumpyModel(cell, path, sha, card, name)


@contextlib.contextmanager
def _native_info_to_log() -> Iterator[None]:
    """TFLite's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    straight to file descriptor 2, outside the log's format (and there is no API to silence
    it). While a model is loaded, descriptor 2 goes to a scratch file; its INFO lines then
    become debug records of this logger, and anything else is written back as it was."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else -1
    except (OSError, ValueError):
        fd = -1
    if fd < 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            scratch.seek(0)
            others = []
            for line in scratch.read(1 << 20).decode("utf-8", "replace").splitlines(True):
                if line.startswith("INFO: "):
                    log.debug("tflite: %s", line[6:].rstrip())
                else:
                    others.append(line)
            if others:
                os.write(fd, "".join(others).encode("utf-8", "replace"))


def load_model(path: Path | None = None, runtime: str = "auto") -> StepModel:
    """Load a model (``None`` = packaged default) on ``runtime``; any problem is a ModelError."""
    with _native_info_to_log():
        return _load_model(path, runtime)


def _load_model(path: Path | None, runtime: str) -> StepModel:
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown model runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    path = _resolve(path)
    sha, card, name = _identify(path)
    if runtime == "numpy":
        model: StepModel = _load_numpy(path, sha, card, name)
        _probe(model)
        log.info("loaded %s from %s on numpy", model.model_id, path)
        return model
    skipped: list[str] = []
    for backend in TFLITE_RUNTIMES if runtime == "auto" else (runtime,):
        try:
            interpreter = _interpreter_class(backend)(model_path=str(path), num_threads=1)
        except Exception as exc:
            if not _unavailable(exc):
                raise ModelError(f"{backend} cannot load model {path}: {exc}") from exc
            hint = _INTERPRETER_MODULES[backend][1]
            if runtime != "auto":
                raise ModelError(
                    f"model runtime {backend!r} is not available here ({exc}); install it "
                    f"({hint}) or set model.runtime to auto or numpy"
                ) from exc
            skipped.append(f"{backend}: {exc}")
            continue
        model = TfliteModel(interpreter, backend, path, sha, card, name)
        _probe(model)
        log.info("loaded %s from %s on %s", model.model_id, path, backend)
        return model
    log.warning("no TFLite runtime usable (%s); using the numpy cell", "; ".join(skipped))
    model = _load_numpy(path, sha, card, name)
    _probe(model)
    return model


def op_names(path: Path | None = None) -> list[str]:
    """The op of every node in the model, in execution order (for tests and ``model info``)."""
    path = _resolve(path)
    _check_model_file(path)
    for backend in TFLITE_RUNTIMES:
        try:
            cls = _interpreter_class(backend)
            interpreter = cls(model_path=str(path), num_threads=1)
        except Exception as exc:
            if _unavailable(exc):
                continue
            raise ModelError(f"{backend} cannot load model {path}: {exc}") from exc
        return [str(op["op_name"]) for op in interpreter._get_ops_details()]
    raise ModelError("listing model ops needs a TFLite runtime (pip install ai-edge-litert)")
