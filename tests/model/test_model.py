"""The shipped CfC model and its runtimes: what the detector relies on.

A model that converted "fine" can still carry variable ops and no weights (NaN, or a crash at
load), so every property here is checked on the file we actually ship: no variable ops, finite
outputs, LiteRT/numpy parity over long fed-back runs with irregular dt, a dynamic batch, a card
that vouches for the file, clear errors for damaged files, and a model that is actually useful
(beats "next = current" on held-out synthetic signals).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import ModelError
from gateway.model import default_model_path, load_card, load_model, op_names
from gateway.model import runtime as rt
from gateway.model.card import file_sha256
from gateway.model.runtime import PARITY_TOLERANCE as PARITY
from tools import signals

VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}


@pytest.fixture(scope="module")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def lite(model_path: Path) -> rt.StepModel:
    return load_model(model_path, runtime="litert")


@pytest.fixture(scope="module")
def ref(model_path: Path) -> rt.StepModel:
    return load_model(model_path, runtime="numpy")


@pytest.fixture
def model_copy(tmp_path: Path, model_path: Path) -> Path:
    """The shipped model, card and weights copied somewhere we may damage them."""
    for suffix in (".tflite", ".json", ".npz"):
        shutil.copy(model_path.with_suffix(suffix), tmp_path / f"m{suffix}")
    return tmp_path / "m.tflite"


def signal_inputs(seed: int, b: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, b, 1]`` z inputs, dt and targets from irregularly sampled synthetic series."""
    batch = signals.make_batch(np.random.default_rng(seed), b, n + 1)
    z, dt, y = signals.model_arrays(batch.t, batch.x)
    return z.T[..., None], dt.T[..., None], y.T[..., None]


def test_shipped_model_has_no_variable_ops(model_path: Path) -> None:
    ops = op_names(model_path)
    assert ops, "the model has no ops"
    assert not VARIABLE_OPS & set(ops)
    assert set(ops) == set(load_card(model_path.with_suffix(".json")).ops)


def test_card_vouches_for_the_shipped_files(model_path: Path, lite: rt.StepModel) -> None:
    card = load_card(model_path.with_suffix(".json"))
    sha = file_sha256(model_path)
    assert card.sha256 == sha
    assert card.size_bytes == model_path.stat().st_size
    assert card.weights_sha256 == file_sha256(model_path.with_name(str(card.weights_file)))
    assert lite.model_id == f"{card.name}@{sha[:8]}"
    assert (lite.hidden_size, lite.features) == (card.hidden_size, card.features)
    assert lite.sha256 == sha


def test_default_path_and_auto_runtime() -> None:
    model = load_model(None)
    assert model.path == default_model_path()
    assert model.runtime == "litert"


@pytest.mark.parametrize("runtime", ["litert", "numpy"])
def test_outputs_finite_for_extreme_inputs(runtime: str, model_path: Path) -> None:
    model = load_model(model_path, runtime=runtime)
    rng = np.random.default_rng(1)
    b, f, hs = 64, model.features, model.hidden_size
    x = rng.uniform(-8, 8, (b, f)).astype(np.float32)
    h = rng.uniform(-1, 1, (b, hs)).astype(np.float32)
    dt = np.exp(rng.uniform(-6, 9, (b, 1))).astype(np.float32)
    dt[:4, 0] = [0.0, -1.0, 1e6, 1.0]
    for out in model.step(x, h, dt):
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out))


@pytest.mark.parametrize("runtime", ["litert", "numpy"])
def test_long_fed_back_run_stays_finite_and_bounded(runtime: str, model_path: Path) -> None:
    model = load_model(model_path, runtime=runtime)
    rng = np.random.default_rng(2)
    h = np.zeros((4, model.hidden_size), np.float32)
    pred = np.zeros((4, model.features), np.float32)
    for _ in range(5000):
        dt = rng.exponential(1.0, (4, 1)).astype(np.float32)
        pred, log_var, h = model.step(pred, h, dt)
        assert np.all(np.abs(h) <= 1.0)
    assert np.all(np.isfinite(pred)) and np.all(np.isfinite(log_var))


@pytest.mark.parametrize("batch", [1, 7])
def test_litert_and_numpy_agree_over_fed_back_steps(
    batch: int, lite: rt.StepModel, ref: rt.StepModel
) -> None:
    z, dt, _ = signal_inputs(100 + batch, batch, 1000)
    assert dt.max() > 2.0, "the run should have gaps"
    h_l = np.zeros((batch, lite.hidden_size), np.float32)
    h_n = h_l.copy()
    worst = 0.0
    for k in range(1000):
        p_l, v_l, h_l = lite.step(z[k], h_l, dt[k])
        p_n, v_n, h_n = ref.step(z[k], h_n, dt[k])
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in
                             ((p_l, p_n), (v_l, v_n), (h_l, h_n))))  # fmt: skip
    assert worst < PARITY


@pytest.mark.parametrize("runtime", ["litert", "numpy"])
def test_batch_size_may_change_between_calls(
    runtime: str, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(model_path, runtime=runtime)
    rng = np.random.default_rng(3)
    hs, f = model.hidden_size, model.features
    for b in (1, 7, 0, 3, 3, 16, 0, 1):
        x = rng.normal(size=(b, f)).astype(np.float32)
        h = rng.uniform(-1, 1, (b, hs)).astype(np.float32)
        dt = rng.uniform(0.5, 2.0, (b, 1)).astype(np.float32)
        pred, log_var, h_new = model.step(x, h, dt)
        assert pred.shape == (b, f) and log_var.shape == (b, f) and h_new.shape == (b, hs)
        for i in range(min(b, 2)):
            alone = model.step(x[i : i + 1], h[i : i + 1], dt[i : i + 1])
            assert np.allclose(alone[0], pred[i : i + 1], atol=1e-6)
            assert np.allclose(alone[2], h_new[i : i + 1], atol=1e-6)
    if runtime == "litert":

        def no_invoke() -> None:
            raise AssertionError("B=0 must not invoke the interpreter")

        monkeypatch.setattr(model._interp, "invoke", no_invoke)  # type: ignore[attr-defined]
    empty = model.step(np.empty((0, f)), np.empty((0, hs)), np.empty((0, 1)))
    assert [a.shape for a in empty] == [(0, f), (0, f), (0, hs)]


def test_only_a_batch_past_the_capacity_or_far_below_it_resizes(model_path: Path) -> None:
    """step() holds the native calls, and a resize lets go of them while the public API
    reallocates (it refuses while any are held); a steady or padded batch size never does."""
    model = load_model(model_path, runtime="litert")
    assert isinstance(model, rt.TfliteModel)
    rng = np.random.default_rng(5)
    hs, f = model.hidden_size, model.features
    start = model.resizes
    kept = []
    for b in (8, 8, 8, 5, 8, 7, 2, 2, 3, 1, 20, 20, 2):
        x = rng.normal(size=(b, f)).astype(np.float32)
        h = rng.uniform(-1, 1, (b, hs)).astype(np.float32)
        dt = rng.uniform(0.5, 2.0, (b, 1)).astype(np.float32)
        out = model.step(x, h, dt)
        assert [a.shape for a in out] == [(b, f), (b, f), (b, hs)]
        kept.append((out, [a.copy() for a in out]))
    # To 8 (5 to 2 padded to it), to 20 (exact, over the padding limit), to 2 (far below 20).
    assert model.resizes - start == 3
    for out, copies in kept:  # outputs are copies: a later step does not overwrite them
        assert all(np.array_equal(a, c) for a, c in zip(out, copies, strict=True))


def test_wrong_input_shapes_are_rejected(lite: rt.StepModel) -> None:
    with pytest.raises(ValueError, match="step wants"):
        lite.step(np.zeros((2, 1)), np.zeros((2, 3)), np.zeros((2, 1)))


def test_model_beats_naive_predictor_on_held_out_signals(lite: rt.StepModel) -> None:
    z, dt, y = signal_inputs(987_654, 48, 1024)
    h = np.zeros((z.shape[1], lite.hidden_size), np.float32)
    preds = np.empty_like(y)
    log_vars = np.empty_like(y)
    for k in range(z.shape[0]):
        preds[k], log_vars[k], h = lite.step(z[k], h, dt[k])
    sl = slice(signals.WARMUP, None)
    mse = float(np.mean((preds[sl] - y[sl]) ** 2))
    naive = float(np.mean((z[sl] - y[sl]) ** 2))
    assert mse / naive < 1.0
    nll = 0.5 * (
        log_vars[sl] + (preds[sl] - y[sl]) ** 2 * np.exp(-log_vars[sl]) + np.log(2 * np.pi)
    )
    assert np.isfinite(nll.mean())


@pytest.mark.parametrize("runtime", ["auto", "litert", "numpy"])
def test_truncated_model_is_a_model_error(runtime: str, model_copy: Path) -> None:
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="sha256"):
        load_model(model_copy, runtime=runtime)


def test_corrupt_model_without_card_is_a_model_error(model_copy: Path) -> None:
    model_copy.with_suffix(".json").unlink()
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError):
        load_model(model_copy, runtime="litert")
    model_copy.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        load_model(model_copy)
    model_copy.write_bytes(b"")
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        op_names(model_copy)


def test_flipped_byte_is_caught_by_the_card(model_copy: Path) -> None:
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its card"):
        load_model(model_copy)


def test_missing_files_and_bad_cards(model_copy: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_model(model_copy.with_name("absent.tflite"))
    card = model_copy.with_suffix(".json")
    text = card.read_text()
    card.write_text(text.replace('"hidden_size": 32', '"hidden_size": 31'))
    with pytest.raises(ModelError, match="h"):
        load_model(model_copy, runtime="litert")
    card.write_text(text[: len(text) // 2])
    with pytest.raises(ModelError, match="unreadable"):
        load_model(model_copy)
    card.write_text(text)
    model_copy.with_suffix(".npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="weights"):
        load_model(model_copy, runtime="numpy")
    model_copy.with_suffix(".npz").unlink()
    with pytest.raises(ModelError, match="needs the weights"):
        load_model(model_copy, runtime="numpy")


def test_explicit_runtimes(model_path: Path) -> None:
    assert load_model(model_path, runtime="numpy").runtime == "numpy"
    assert load_model(model_path, runtime="litert").runtime == "litert"
    with pytest.raises(ModelError, match="unknown model runtime"):
        load_model(model_path, runtime="onnx")


@pytest.mark.skipif(
    importlib.util.find_spec("tflite_runtime") is not None, reason="tflite-runtime is installed"
)
def test_absent_backend_is_a_clear_model_error(model_path: Path) -> None:
    with pytest.raises(ModelError, match="'tflite-runtime' is not available"):
        load_model(model_path, runtime="tflite-runtime")


def test_auto_falls_back_to_numpy_without_any_tflite_runtime(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected_id = load_model(model_path, runtime="litert").model_id

    def missing(runtime: str) -> None:
        raise ImportError(f"No module for {runtime}")

    monkeypatch.setattr(rt, "_interpreter_class", missing)
    model = load_model(model_path, runtime="auto")
    assert model.runtime == "numpy"
    assert model.model_id == expected_id


def test_the_runtimes_info_line_goes_to_the_log_not_to_stderr() -> None:
    """LiteRT's C++ logger printed "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    on descriptor 2, outside the log's format; it is a debug record of ours now."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(name)s %(message)s')\n"
        "from gateway.model import load_model\n"
        "load_model(None, 'litert')\n"
        "print('after', file=sys.stderr)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr and result.stderr.strip() == "after", result.stderr
    assert "gateway.model.runtime tflite: Created TensorFlow Lite XNNPACK" in result.stdout
