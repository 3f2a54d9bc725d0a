"""Train the gateway's default CfC model on synthetic signals and export it as one TFLite step.

Why it looks like this:
- The cell is a hand-written ``tf.Module`` with ``tf.Variable`` s it tracks, not Keras layers:
  untracked Keras-3 variables convert *without error* into a model with variable ops and no
  weights (NaN or a crash on the gateway). The export is checked for that, for finite outputs,
  and for parity with the gateway's own numpy cell over long fed-back runs; any failure exits 1.
- Inputs are what the gateway feeds the model, computed by the gateway's own detector
  (``tools/signals.model_arrays``: its baseline, its cycle, elapsed time in typical
  intervals), so the state learns dynamics in exactly the units the daemon uses. The series are
  generated and passed through the detector once (``--series`` of them), then sampled in
  batches for ``--steps`` optimiser steps.
- Adam is written out here (a few lines) so nothing depends on Keras optimiser/variable plumbing.

Run (TensorFlow CPU only needed here, never on the gateway)::

    PYTHONPATH=. /work/tfvenv/bin/python tools/train_cfc.py --out models

Writes ``<name>.tflite``, ``<name>.npz`` (float32 weights for the numpy cell) and ``<name>.json``
(the model card) into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from gateway.model.runtime import PARITY_TOLERANCE  # noqa: E402
from tools import signals  # noqa: E402

log = logging.getLogger("train_cfc")

LECUN_SCALE = 1.7159
LECUN_SLOPE = 0.666
VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}


class CfcCell(tf.Module):
    """CfC cell (ncps "default" mode) with a Gaussian readout: pred and log-variance."""

    def __init__(
        self,
        features: int,
        hidden: int,
        units: int,
        layers: int,
        rng: np.random.Generator,
        log_var_range: tuple[float, float] = (-8.0, 4.0),
        dt_max: float = 16.0,
    ) -> None:
        super().__init__(name="cfc")
        self.features, self.hidden = features, hidden
        self.log_var_range = log_var_range
        self.dt_max = dt_max

        def glorot(fan_in: int, fan_out: int) -> np.ndarray:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

        self.backbone: list[tuple[tf.Variable, tf.Variable]] = []
        width = features + hidden
        for i in range(layers):
            self.backbone.append(
                (
                    tf.Variable(glorot(width, units), name=f"backbone_{i}_kernel"),
                    tf.Variable(np.zeros(units, np.float32), name=f"backbone_{i}_bias"),
                )
            )
            width = units
        heads = np.concatenate([glorot(width, hidden) for _ in range(4)], axis=1)
        self.heads_w = tf.Variable(heads, name="heads_kernel")
        self.heads_b = tf.Variable(np.zeros(4 * hidden, np.float32), name="heads_bias")
        self.readout_w = tf.Variable(glorot(hidden, 2 * features) * 0.1, name="readout_kernel")
        self.readout_b = tf.Variable(np.zeros(2 * features, np.float32), name="readout_bias")

    def __call__(
        self, x: tf.Tensor, h: tf.Tensor, dt: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = tf.concat([x, h], axis=1)
        for kernel, bias in self.backbone:
            z = LECUN_SCALE * tf.tanh(LECUN_SLOPE * (tf.matmul(z, kernel) + bias))
        heads = tf.matmul(z, self.heads_w) + self.heads_b
        ff1, ff2, t_a, t_b = tf.split(heads, 4, axis=1)
        ff1, ff2 = tf.tanh(ff1), tf.tanh(ff2)
        dt = tf.clip_by_value(dt, 0.0, self.dt_max)
        gate = tf.sigmoid(-t_a * dt + t_b)
        h_new = ff1 * (1.0 - gate) + gate * ff2
        out = tf.matmul(h_new, self.readout_w) + self.readout_b
        pred, log_var = tf.split(out, 2, axis=1)
        log_var = tf.clip_by_value(log_var, *self.log_var_range)
        return pred, log_var, h_new

    def weights(self) -> dict[str, np.ndarray]:
        """Fused float32 weights in the layout ``gateway.model.cell.NumpyCfc`` reads."""
        out: dict[str, np.ndarray] = {}
        for i, (kernel, bias) in enumerate(self.backbone):
            out[f"backbone.{i}.kernel"] = kernel.numpy()
            out[f"backbone.{i}.bias"] = bias.numpy()
        out["heads.kernel"] = self.heads_w.numpy()
        out["heads.bias"] = self.heads_b.numpy()
        out["readout.kernel"] = self.readout_w.numpy()
        out["readout.bias"] = self.readout_b.numpy()
        out["log_var_range"] = np.asarray(self.log_var_range, np.float32)
        out["dt_range"] = np.asarray((0.0, self.dt_max), np.float32)
        return {k: np.asarray(v, np.float32) for k, v in out.items()}


class Adam(tf.Module):
    def __init__(self, variables: list[tf.Variable], beta1: float = 0.9, beta2: float = 0.999):
        super().__init__(name="adam")
        self.variables_ = variables
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)
        self.beta1, self.beta2 = beta1, beta2

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.t.assign_add(1.0)
        c1 = 1.0 - tf.pow(self.beta1, self.t)
        c2 = 1.0 - tf.pow(self.beta2, self.t)
        for var, g, m, v in zip(self.variables_, grads, self.m, self.v, strict=True):
            m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            var.assign_sub(lr * (m / c1) / (tf.sqrt(v / c2) + 1e-8))


def gaussian_nll(y: tf.Tensor, pred: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    return 0.5 * (log_var + tf.square(y - pred) * tf.exp(-log_var) + math.log(2.0 * math.pi))


def multichannel(rng: np.random.Generator, b: int, n: int, f: int) -> tuple[np.ndarray, ...]:
    """``[b, n-1, f]`` inputs/targets and ``[b, n-1, 1]`` dt; the channels share timestamps.
    Generated and passed through the detector in chunks (one detector per chunk)."""
    t_all, zs, ys, dts = signals.sample_times(rng, b, n), [], [], []
    for start in range(0, b, 256):
        t = t_all[start : start + 256]
        z_ch, y_ch = [], []
        for _ in range(f):
            batch = signals.make_batch(rng, len(t), n, t=t)
            z, dt, y = signals.model_arrays(batch.t, batch.x)
            z_ch.append(z)
            y_ch.append(y)
        zs.append(np.stack(z_ch, -1))
        ys.append(np.stack(y_ch, -1))
        dts.append(dt[..., None])
    return np.concatenate(zs), np.concatenate(dts), np.concatenate(ys)


def evaluate(cell: Any, z: np.ndarray, dt: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Held-out metrics with a numpy step function, fed back over whole series."""
    b, n, _ = z.shape
    h = np.zeros((b, cell.hidden_size), np.float32)
    preds, lvs = np.empty_like(y), np.empty_like(y)
    for k in range(n):
        preds[:, k], lvs[:, k], h = cell.step(z[:, k], h, dt[:, k])
    sl = slice(signals.WARMUP, None)
    err = (preds[:, sl] - y[:, sl]) ** 2
    naive = (z[:, sl] - y[:, sl]) ** 2
    nll = 0.5 * (lvs[:, sl] + err * np.exp(-lvs[:, sl]) + math.log(2 * math.pi))
    return {
        "mse": float(err.mean()),
        "naive_mse": float(naive.mean()),
        "mse_ratio": float(err.mean() / naive.mean()),
        "nll": float(nll.mean()),
        "per_series_mse_ratio_median": float(np.median(err.mean((1, 2)) / naive.mean((1, 2)))),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def op_list(model: bytes) -> list[str]:
    interp = Interpreter(model_content=model)
    return sorted({op["op_name"] for op in interp._get_ops_details()})


def tensor_specs(details: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Signature name -> {name, shape (-1 = dynamic batch), dtype}."""
    return {
        name: {
            "name": name,
            "shape": [int(s) for s in d["shape_signature"]],
            "dtype": np.dtype(d["dtype"]).name,
        }
        for name, d in details.items()
    }


def parity_check(model_path: Path, features: int, hidden: int, seed: int) -> dict[str, float]:
    """TFLite (through the gateway's own loader) vs the numpy cell, 1000 fed-back steps."""
    from gateway.model.runtime import load_model

    lite = load_model(model_path, runtime="litert")
    ref = load_model(model_path, runtime="numpy")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in (1, 7):
        z, dt, _ = multichannel(rng, b, 1001, features)
        h_l = np.zeros((b, hidden), np.float32)
        h_n = h_l.copy()
        for k in range(1000):
            p_l, v_l, h_l = lite.step(z[:, k], h_l, dt[:, k])
            p_n, v_n, h_n = ref.step(z[:, k], h_n, dt[:, k])
            for a in (p_l, v_l, h_l):
                if not np.all(np.isfinite(a)):
                    raise SystemExit(f"export check failed: non-finite TFLite output at step {k}")
            worst = max(
                worst,
                float(np.abs(p_l - p_n).max()),
                float(np.abs(v_l - v_n).max()),
                float(np.abs(h_l - h_n).max()),
            )
    if worst > PARITY_TOLERANCE:
        raise SystemExit(f"export check failed: TFLite vs numpy max abs error {worst:.3g}")
    return {"tflite_vs_numpy_max_abs": worst, "steps": 1000, "batch_sizes": [1, 7]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("models"))
    p.add_argument("--name", default="cfc-default")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--features", type=int, default=1)
    p.add_argument("--backbone-units", type=int, default=64)
    p.add_argument("--backbone-layers", type=int, default=1)
    p.add_argument(
        "--dt-max",
        type=float,
        default=16.0,
        help="the cell clips dt to [0, dt-max]: bounded float32 error and no unseen dt",
    )
    p.add_argument("--seq-len", type=int, default=1025, help="samples per training series")
    p.add_argument("--unroll", type=int, default=128, help="truncated-BPTT window")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--series", type=int, default=8192, help="series generated for training")
    p.add_argument("--steps", type=int, default=5000, help="optimiser steps (windows)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--eval-series", type=int, default=256)
    p.add_argument("--eval-len", type=int, default=2049)
    p.add_argument("--no-xla", action="store_true", help="disable jit_compile for the train step")
    return p.parse_args(argv)


def export_tflite(cell: CfcCell, f: int, hs: int) -> tuple[bytes, list[str]]:
    """One step, explicit state, dynamic batch, builtin ops only; fails on variable ops
    (Keras variables a tf.Module does not track convert silently into them)."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, f], tf.float32, name="x"),
            tf.TensorSpec([None, hs], tf.float32, name="h"),
            tf.TensorSpec([None, 1], tf.float32, name="dt"),
        ]
    )
    def serve(x, h, dt):
        pred, log_var, h_new = cell(x, h, dt)
        return {"pred": pred, "log_var": log_var, "h_new": h_new}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], cell
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    tflite = converter.convert()
    ops = op_list(tflite)
    if VARIABLE_OPS & set(ops):
        raise SystemExit(f"export check failed: variable ops in the model: {sorted(ops)}")
    return tflite, ops


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    f, hs, t_win = args.features, args.hidden, args.unroll
    if (args.seq_len - 1) % t_win:
        raise SystemExit("--seq-len minus 1 must be a multiple of --unroll")

    cell = CfcCell(f, hs, args.backbone_units, args.backbone_layers, rng, dt_max=args.dt_max)
    params = list(cell.trainable_variables)
    opt = Adam(params)
    n_params = int(sum(np.prod(v.shape) for v in params))
    log.info(
        "CfC F=%d H=%d backbone=%dx%d: %d parameters",
        f,
        hs,
        args.backbone_layers,
        args.backbone_units,
        n_params,
    )

    @tf.function(jit_compile=not args.no_xla, reduce_retracing=True)
    def train_step(z, dt, y, mask, h, lr):
        with tf.GradientTape() as tape:
            total = tf.constant(0.0)
            for k in range(t_win):
                pred, log_var, h = cell(z[:, k], h, dt[:, k])
                total += tf.reduce_sum(gaussian_nll(y[:, k], pred, log_var) * mask[:, k])
            loss = total / tf.maximum(tf.reduce_sum(mask) * f, 1.0)
        grads = tape.gradient(loss, params)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        opt.apply(grads, lr)
        return loss, h

    windows = (args.seq_len - 1) // t_win
    prepared = time.monotonic()
    data_z, data_dt, data_y = multichannel(rng, args.series, args.seq_len, f)
    log.info("%d series through the detector in %.0fs", args.series, time.monotonic() - prepared)
    started = time.monotonic()
    step, losses = 0, []
    while step < args.steps:
        pick = rng.integers(0, args.series, args.batch)
        z, dt, y = data_z[pick], data_dt[pick], data_y[pick]
        mask = (np.arange(args.seq_len - 1) >= signals.WARMUP).astype(np.float32)
        mask = np.broadcast_to(mask[None, :, None], z.shape).astype(np.float32)
        h = tf.zeros((args.batch, hs))
        for w in range(windows):
            if step >= args.steps:
                break
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
            sl = slice(w * t_win, (w + 1) * t_win)
            loss, h = train_step(
                z[:, sl], dt[:, sl], y[:, sl], mask[:, sl], h, tf.constant(lr, tf.float32)
            )
            losses.append(float(loss))
            step += 1
            if step % 100 == 0:
                log.info(
                    "step %d/%d  nll %.4f  (%.0fs)",
                    step,
                    args.steps,
                    float(np.mean(losses[-100:])),
                    time.monotonic() - started,
                )
    train_seconds = time.monotonic() - started

    tflite, ops = export_tflite(cell, f, hs)

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / f"{args.name}.tflite"
    weights_path = args.out / f"{args.name}.npz"
    card_path = args.out / f"{args.name}.json"
    model_path.write_bytes(tflite)
    np.savez(weights_path, **cell.weights())

    from gateway.model.cell import NumpyCfc

    ref = NumpyCfc.load(weights_path)
    eval_rng = np.random.default_rng(args.seed + 1)
    ez, edt, ey = multichannel(eval_rng, args.eval_series, args.eval_len, f)
    metrics = evaluate(ref, ez, edt, ey)
    log.info("held-out: %s", metrics)

    sig = Interpreter(model_content=tflite).get_signature_runner()
    inputs = tensor_specs(sig.get_input_details())
    outputs = tensor_specs(sig.get_output_details())

    cmd = [
        "PYTHONPATH=. python",
        "tools/train_cfc.py",
        "--out",
        str(args.out),
        "--name",
        args.name,
        "--version",
        args.version,
        "--hidden",
        str(hs),
        "--features",
        str(f),
        "--backbone-units",
        str(args.backbone_units),
        "--backbone-layers",
        str(args.backbone_layers),
        "--dt-max",
        str(args.dt_max),
        "--seq-len",
        str(args.seq_len),
        "--unroll",
        str(t_win),
        "--batch",
        str(args.batch),
        "--series",
        str(args.series),
        "--steps",
        str(args.steps),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--eval-series",
        str(args.eval_series),
        "--eval-len",
        str(args.eval_len),
    ] + (["--no-xla"] if args.no_xla else [])
    card: dict[str, Any] = {
        "name": args.name,
        "version": args.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": "tflite",
        "file": model_path.name,
        "sha256": sha256(model_path),
        "size_bytes": model_path.stat().st_size,
        "weights": {"file": weights_path.name, "sha256": sha256(weights_path)},
        "tensors": {
            "inputs": [inputs[n] for n in ("x", "h", "dt")],
            "outputs": [outputs[n] for n in ("pred", "log_var", "h_new")],
        },
        "hidden_size": hs,
        "features": f,
        "backbone_units": args.backbone_units,
        "backbone_layers": args.backbone_layers,
        "parameters": n_params,
        "cell": {
            "type": "CfC (Hasani et al., Nature Machine Intelligence 2022), ncps default mode",
            "backbone_activation": "lecun_tanh = 1.7159 * tanh(0.666 * x)",
            "dt_clip": [0.0, args.dt_max],
            "gate": "sigmoid(-time_a * clip(dt, 0, dt_max) + time_b)",
            "update": "h_new = ff1 * (1 - gate) + gate * ff2",
            "readout": "pred = Wp h_new + bp; log_var = clip(Wv h_new + bv, -8, 4)",
        },
        "training": {
            "data": {
                "generator": "tools/signals.py",
                "families": list(signals.FAMILIES),
                "series_length": args.seq_len,
                "series": args.series,
                "sampling": "dt = 1 +/- per-series jitter (0..0.4), gaps of 2..200 at rate "
                "0..3%; timestamps in nominal sample units",
                "scale": "offset and scale randomised (scale 0.1..1000), 20% ADC-quantised",
            },
            "normalisation": {
                "by": "the gateway's detector, gateway/detector/core.py (tools/signals.py "
                "model_arrays records what its engine feeds the model)",
                "z": "the reading's residual (less its cycle, when the channel has one) "
                "against the channel's baseline, in its scales, clipped to [-8, 8]",
                "dt": "time since the channel's previous reading, in its typical intervals",
                "state_version": 2,
            },
            "inputs": "x = z_t, dt_t as above, target z_{t+1} (the next input)",
            "loss": f"Gaussian NLL, first {signals.WARMUP} samples of each series masked",
            "optimiser": f"Adam lr {args.lr} cosine to 10%, grad-norm clip 1.0",
            "unroll": t_win,
            "batch": args.batch,
            "steps": args.steps,
            "seconds": round(train_seconds, 1),
            "final_train_nll": float(np.mean(losses[-100:])),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, tensorflow {tf.__version__}",
        },
        "seed": args.seed,
        "command": " ".join(shlex.quote(c) if i else c for i, c in enumerate(cmd)),
        "metrics": {
            "heldout": {
                "series": args.eval_series,
                "length": args.eval_len,
                "seed": args.seed + 1,
                "space": "normalised z, samples after the warm-up",
                **metrics,
            }
        },
        "ops": ops,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    card["metrics"]["parity"] = parity_check(model_path, f, hs, args.seed + 2)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (%d bytes), %s, %s", model_path, card["size_bytes"], weights_path, card_path)
    log.info("parity: %s", card["metrics"]["parity"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
