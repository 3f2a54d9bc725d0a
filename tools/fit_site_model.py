"""Fine-tune the shipped CfC model on a site's own history and export it like train_cfc.py.

Input is the site's history, either CSV files (every numeric column is one univariate series,
picked the way ``liquid-gateway replay`` picks channels) or the gateway's own SQLite database
(table ``readings``, opened read-only, parameterised SQL only). Each series goes through the
gateway's own detector to give the model's inputs exactly as the daemon computes them
(``tools/signals.model_arrays``, the same path as the base model's training), with ``dt`` in
the series' typical intervals.

The fit starts from the base model's weights (its ``.npz``), and never sees the last
``--holdout`` fraction of any series: that tail is where the card's metrics come from (the site
model vs the base model vs the naive "next = last" forecast, in normalised z). Just before it, a
``--val`` slice picks the checkpoint (the base weights included: if fine-tuning never beats them
on the site's data, the site model is the base model, and the card says so).

Training windows are drawn at random from the rest: the state is warmed up from zero over
``--burn-in`` samples without gradient, then ``--unroll`` samples are trained with truncated
BPTT and the same Gaussian NLL as ``tools/train_cfc.py``. The export and its checks (no
variable ops, finite outputs, TFLite-vs-numpy parity over 1000 fed-back steps) are
train_cfc.py's own. Deterministic given ``--seed``.

Run (TensorFlow CPU only needed here, never on the gateway)::

    PYTHONPATH=. /work/tfvenv/bin/python tools/fit_site_model.py \\
        --csv history.csv --sep ';' --out /tmp/site-model --name cfc-site
    PYTHONPATH=. /work/tfvenv/bin/python tools/fit_site_model.py \\
        --db /var/lib/liquid-gateway/gateway.db --since 30d --out /tmp/site-model

Writes ``<name>.tflite``, ``<name>.npz`` and ``<name>.json`` (the model card) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shlex
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from gateway.config import parse_duration  # noqa: E402
from gateway.model.card import load_card, verify_file  # noqa: E402
from gateway.model.cell import NumpyCfc  # noqa: E402
from gateway.pipeline.replay import (  # noqa: E402
    ReplayError,
    open_table,
    parse_time,  # noqa: E402
)
from tools import signals  # noqa: E402
from tools.train_cfc import (  # noqa: E402
    Adam,
    CfcCell,
    export_tflite,
    gaussian_nll,
    parity_check,
    sha256,
    tensor_specs,
)

log = logging.getLogger("fit_site_model")

MIN_SAMPLES = 500
_LOG_2PI = math.log(2.0 * math.pi)
# One constant, fully parameterised query: (since_ts, since_ts, n_streams, streams as JSON).
_READINGS_SQL = (
    "SELECT stream, ts, value FROM readings WHERE value IS NOT NULL "
    "AND (? IS NULL OR ts >= ?) "
    "AND (? = 0 OR stream IN (SELECT value FROM json_each(?))) "
    "ORDER BY stream, ts, id"
)


@dataclass
class Series:
    """One univariate series of the site's history: seconds and values, in source order."""

    name: str
    t: np.ndarray  # float64 seconds (or row numbers for a CSV without a time column)
    x: np.ndarray  # float64, finite
    timed: bool = True  # False: a CSV without a time column (t = row number)


@dataclass
class Prepared:
    """Model arrays of one series, as the training of the base model builds them."""

    name: str
    z: np.ndarray  # [n] float32 input z_k
    dt: np.ndarray  # [n] float32, typical intervals (as the detector computes them)
    y: np.ndarray  # [n] float32 target z_{k+1}
    interval: float  # median interval, seconds
    train_end: int  # windows use pairs [0, train_end)
    val_end: int  # validation pairs [train_end, val_end); held-out [val_end, n)


# --- input ----------------------------------------------------------------------------------


def read_csv(
    path: Path, sep: str, time_column: str | None, ignore: tuple[str, ...]
) -> list[Series]:
    """Every numeric column of ``path`` as one series; bad cells are missing samples."""
    try:
        handle = open(path, newline="", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise SystemExit(f"cannot open {path}: {exc.strerror}") from exc
    with handle:
        # The same choice of time column and channels as `liquid-gateway replay` makes.
        try:
            header, time_index, numeric, row_iter = open_table(handle, sep, time_column, ignore)
        except ReplayError as exc:
            raise SystemExit(f"{path}: {exc}") from exc
        body = list(row_iter)

    ts = np.empty(len(body))
    last, bad_ts = 0.0, 0
    for k, row in enumerate(body):
        if time_index is None:
            ts[k] = float(k)
            continue
        try:
            last = parse_time(row[time_index] if time_index < len(row) else "")  # as replay
        except (ValueError, OverflowError):
            bad_ts += 1  # as replay: the row keeps the previous row's time
        ts[k] = last
    if bad_ts:
        log.warning("%s: %d unparseable timestamps", path, bad_ts)
    out = []
    for i in numeric:
        values = np.full(len(body), np.nan)
        for k, row in enumerate(body):
            with contextlib.suppress(ValueError):
                values[k] = float(row[i]) if i < len(row) else math.nan
        ok = np.isfinite(values)
        if (~ok).any():
            log.info("%s:%s: %d missing or bad cells skipped", path.name, header[i], (~ok).sum())
        out.append(Series(f"{path.name}:{header[i]}", ts[ok], values[ok], time_index is not None))
    return out


def since_duration(text: str) -> float:
    """``--since``: the gateway's own duration syntax (``90s``, ``12h``, ``30d``, ``1d12h``)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def read_db(path: Path, streams: list[str], since_s: float | None) -> list[Series]:
    """Readings per stream from the gateway's database, opened read-only."""
    if not path.is_file():
        raise SystemExit(f"database {path} not found")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    since_ts = None if since_s is None else time.time() - since_s
    params = (since_ts, since_ts, len(streams), json.dumps(streams))
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            db.execute("PRAGMA query_only = 1")
            rows = db.execute(_READINGS_SQL, params).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from exc
    by_stream: dict[str, list[tuple[float, float]]] = {}
    for stream, ts, value in rows:
        by_stream.setdefault(stream, []).append((ts, value))
    missing = sorted(set(streams) - set(by_stream))
    if missing:
        log.warning("no readings for streams %s", missing)
    out = []
    for stream, pairs in by_stream.items():
        arr = np.asarray(pairs, dtype=np.float64)
        ok = np.isfinite(arr).all(axis=1)
        out.append(Series(stream, arr[ok, 0], arr[ok, 1]))
    return out


# --- data preparation -----------------------------------------------------------------------


def prepare(s: Series, holdout: float, val: float) -> Prepared | None:
    """``(z_k, dt_k, z_{k+1})`` as the gateway's detector feeds them to the model
    (``signals.model_arrays``), dt in typical intervals."""
    if len(s.x) < MIN_SAMPLES:
        log.warning("%s: %d samples, fewer than %d: skipped", s.name, len(s.x), MIN_SAMPLES)
        return None
    steps = np.diff(s.t)
    positive = steps[steps > 0]
    if positive.size == 0:
        log.warning("%s: no time passes between samples: skipped", s.name)
        return None
    interval = float(np.median(positive))
    z_in, dt_in, y_in = signals.model_arrays(s.t[None, :], np.asarray(s.x, float)[None, :])
    n = z_in.shape[1]
    val_end = int(round(n * (1.0 - holdout)))
    train_end = int(round(n * (1.0 - holdout - val)))
    return Prepared(s.name, z_in[0], dt_in[0], y_in[0], interval, train_end, val_end)


def run_cell(cell: NumpyCfc, series: list[Prepared]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Feed every series through the numpy cell from h = 0, batched (padded to the longest)."""
    b, n = len(series), max(len(p.z) for p in series)
    z = np.zeros((b, n), np.float32)
    dt = np.ones((b, n), np.float32)
    for i, p in enumerate(series):
        z[i, : len(p.z)], dt[i, : len(p.dt)] = p.z, p.dt
    h = np.zeros((b, cell.hidden_size), np.float32)
    pred, log_var = np.empty((b, n), np.float32), np.empty((b, n), np.float32)
    for k in range(n):
        p, v, h = cell.step(z[:, k : k + 1], h, dt[:, k : k + 1])
        pred[:, k], log_var[:, k] = p[:, 0], v[:, 0]
    return (
        [pred[i, : len(p.z)] for i, p in enumerate(series)],
        [log_var[i, : len(p.z)] for i, p in enumerate(series)],
    )


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def score(
    series: list[Prepared],
    outputs: tuple[list[np.ndarray], list[np.ndarray]],
    part: str,
    warmup: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Pooled and per-series MSE/NLL on the ``val`` or ``heldout`` part (after the warm-up)."""
    err_all, nll_all, per = [], [], {}
    for p, pred, lv in zip(series, *outputs, strict=True):
        lo, hi = (p.train_end, p.val_end) if part == "val" else (p.val_end, len(p.z))
        lo = max(lo, warmup)
        if hi <= lo:
            continue
        sl = slice(lo, hi)
        err = (pred[sl].astype(np.float64) - p.y[sl]) ** 2
        nll = 0.5 * (lv[sl] + err * np.exp(-lv[sl].astype(np.float64)) + _LOG_2PI)
        err_all.append(err)
        nll_all.append(nll)
        per[p.name] = {"pairs": hi - lo, "mse": float(err.mean()), "nll": float(nll.mean())}
    if not err_all:
        return {"mse": math.nan, "nll": math.nan}, per
    err, nll = np.concatenate(err_all), np.concatenate(nll_all)
    return {"mse": float(err.mean()), "nll": float(nll.mean())}, per


def reference_scores(series: list[Prepared], warmup: int) -> tuple[dict[str, float], dict]:
    """Held-out MSE of the naive forecasts: next = last z, and next = the baseline (z = 0)."""
    naive, zero, per = [], [], {}
    for p in series:
        sl = slice(max(p.val_end, warmup), len(p.z))
        a = (p.z[sl].astype(np.float64) - p.y[sl]) ** 2
        b = p.y[sl].astype(np.float64) ** 2
        naive.append(a)
        zero.append(b)
        per[p.name] = {"naive_mse": float(a.mean()), "baseline_mse": float(b.mean())}
    return {
        "naive_mse": float(np.concatenate(naive).mean()),
        "baseline_mse": float(np.concatenate(zero).mean()),
    }, per


# --- the fit --------------------------------------------------------------------------------


def cell_from_weights(weights: dict[str, np.ndarray], rng: np.random.Generator) -> CfcCell:
    """A trainable ``CfcCell`` holding the base model's weights."""
    layers = 0
    while f"backbone.{layers}.kernel" in weights:
        layers += 1
    hidden = weights["readout.kernel"].shape[0]
    features = weights["readout.kernel"].shape[1] // 2
    units = weights["backbone.0.kernel"].shape[1]
    lo, hi = (float(v) for v in weights["log_var_range"])
    dt_max = float(weights["dt_range"][1]) if "dt_range" in weights else 16.0
    cell = CfcCell(features, hidden, units, layers, rng, log_var_range=(lo, hi), dt_max=dt_max)
    assign(cell, weights)
    return cell


def assign(cell: CfcCell, weights: dict[str, np.ndarray]) -> None:
    for i, (kernel, bias) in enumerate(cell.backbone):
        kernel.assign(weights[f"backbone.{i}.kernel"])
        bias.assign(weights[f"backbone.{i}.bias"])
    cell.heads_w.assign(weights["heads.kernel"])
    cell.heads_b.assign(weights["heads.bias"])
    cell.readout_w.assign(weights["readout.kernel"])
    cell.readout_b.assign(weights["readout.bias"])


class Windows:
    """Random training windows, every admissible start position equally likely."""

    def __init__(self, series: list[Prepared], length: int) -> None:
        self.length = length
        self.series = [p for p in series if p.train_end >= length]
        if not self.series:
            raise SystemExit(f"no series has {length} training samples (--burn-in + --unroll)")
        starts = np.array([p.train_end - length + 1 for p in self.series], np.int64)
        self.cum = np.cumsum(starts)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
        draws = rng.integers(0, int(self.cum[-1]), size=batch)
        which = np.searchsorted(self.cum, draws, side="right")
        offsets = draws - np.concatenate([[0], self.cum[:-1]])[which]
        z = np.empty((batch, self.length), np.float32)
        dt, y = np.empty_like(z), np.empty_like(z)
        pos = np.empty((batch, self.length), np.int64)
        for j, (i, o) in enumerate(zip(which, offsets, strict=True)):
            p, sl = self.series[i], slice(int(o), int(o) + self.length)
            z[j], dt[j], y[j] = p.z[sl], p.dt[sl], p.y[sl]
            pos[j] = np.arange(sl.start, sl.stop)
        return z[..., None], dt[..., None], y[..., None], pos


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, nargs="+", metavar="FILE", help="site history CSV(s)")
    src.add_argument("--db", type=Path, metavar="PATH", help="the gateway's SQLite database")
    p.add_argument("--sep", default=",", help="CSV field separator (\\t for tab)")
    p.add_argument("--time-column", default=None, help="CSV time column [default: auto]")
    p.add_argument(
        "--ignore-column", action="append", default=[], help="numeric CSV column to skip"
    )
    p.add_argument("--stream", action="append", default=[], help="database stream (repeatable)")
    p.add_argument("--since", type=since_duration, default=None, help="database window, e.g. 30d")
    p.add_argument("--base", type=Path, default=Path("models/cfc-default.tflite"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="cfc-site")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--holdout", type=float, default=0.2, help="held-out tail of each series")
    p.add_argument("--val", type=float, default=0.1, help="checkpoint-selection slice")
    p.add_argument("--burn-in", type=int, default=64, help="state warm-up before each window")
    p.add_argument("--unroll", type=int, default=128, help="truncated-BPTT window")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=600, help="optimiser steps")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--l2sp", type=float, default=1e-3, help="pull towards the base weights (L2-SP)")
    p.add_argument("--eval-every", type=int, default=50, help="validate every N steps")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--no-xla", action="store_true", help="disable jit_compile for the train step")
    args = p.parse_args(argv)
    if args.sep == "\\t":
        args.sep = "\t"
    if len(args.sep) != 1:
        p.error("--sep must be one character")
    if not (0 < args.holdout < 1 and args.val >= 0 and args.holdout + args.val < 0.9):
        p.error("need 0 < --holdout < 1, --val >= 0 and --holdout + --val < 0.9")
    if args.db is None and (args.stream or args.since is not None):
        p.error("--stream and --since apply to --db")
    return args


def command_of(args: argparse.Namespace) -> str:
    cmd = [f"PYTHONPATH=. {Path(sys.executable)}", "tools/fit_site_model.py"]
    if args.csv:
        cmd += ["--csv", *map(str, args.csv), "--sep", "\\t" if args.sep == "\t" else args.sep]
        if args.time_column is not None:
            cmd += ["--time-column", args.time_column]
        for c in args.ignore_column:
            cmd += ["--ignore-column", c]
    else:
        cmd += ["--db", str(args.db)]
        for s in args.stream:
            cmd += ["--stream", s]
        if args.since is not None:
            cmd += ["--since", f"{args.since:g}"]
    for flag in ("base", "out", "name", "version", "holdout", "val", "burn_in", "unroll"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for flag in ("batch", "steps", "lr", "l2sp", "eval_every", "seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.no_xla:
        cmd.append("--no-xla")
    return " ".join(shlex.quote(c) if i else c for i, c in enumerate(cmd))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # The base model: its card (recipe, hashes) and its weights, checked against the card.
    base_card = load_card(args.base.with_suffix(".json"))
    verify_file(base_card, args.base)
    base_npz = args.base.with_suffix(".npz")
    verify_file(base_card, base_npz)
    with np.load(base_npz, allow_pickle=False) as data:
        base_weights = {k: data[k] for k in data.files}
    warmup = signals.WARMUP
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / f"{args.name}.tflite"
    if model_path.resolve() == args.base.resolve():
        raise SystemExit("--out/--name would overwrite the base model")

    # The site's history.
    if args.csv:
        raw = [
            s
            for path in args.csv
            for s in read_csv(path, args.sep, args.time_column, tuple(args.ignore_column))
        ]
        sources: dict[str, Any] = {
            "kind": "csv",
            "files": [{"path": str(p), "sha256": sha256(p)} for p in args.csv],
            "sep": args.sep,
            "time_column": args.time_column,
            "ignored_columns": args.ignore_column,
        }
    else:
        raw = read_db(args.db, args.stream, args.since)
        sources = {
            "kind": "sqlite",
            "path": str(args.db),
            "streams": args.stream or "all",
            "since_seconds": args.since,
        }
    prepared = [p for s in raw if (p := prepare(s, args.holdout, args.val)) is not None]
    if not prepared:
        raise SystemExit("no usable series in the site history")
    by_name = {s.name: s for s in raw}
    log.info(
        "%d series, %d samples; train/val/held-out split %.0f/%.0f/%.0f %%",
        len(prepared),
        sum(len(p.z) + 1 for p in prepared),
        100 * (1 - args.holdout - args.val),
        100 * args.val,
        100 * args.holdout,
    )

    # Start from the base weights; the base model's own scores are the bar to clear.
    cell = cell_from_weights(base_weights, rng)
    f, hs = cell.features, cell.hidden
    if f != 1:
        raise SystemExit(f"the base model has {f} features; site series are univariate")
    params = list(cell.trainable_variables)
    n_params = int(sum(np.prod(v.shape) for v in params))
    opt = Adam(params)
    anchor = [tf.constant(v.numpy()) for v in params]
    base_cell = NumpyCfc(cell.weights())
    base_val, _ = score(prepared, run_cell(base_cell, prepared), "val", warmup)
    log.info("base model on the validation slice: %s", base_val)

    t_win, burn = args.unroll, args.burn_in

    @tf.function(jit_compile=not args.no_xla, reduce_retracing=True)
    def warm(z, dt, h):
        for k in range(burn):
            _, _, h = cell(z[:, k], h, dt[:, k])
        return h

    @tf.function(jit_compile=not args.no_xla, reduce_retracing=True)
    def train_step(z, dt, y, mask, h, lr):
        with tf.GradientTape() as tape:
            total = tf.constant(0.0)
            for k in range(t_win):
                pred, log_var, h = cell(z[:, k], h, dt[:, k])
                total += tf.reduce_sum(gaussian_nll(y[:, k], pred, log_var) * mask[:, k])
            loss = total / tf.maximum(tf.reduce_sum(mask) * f, 1.0)
            # L2-SP: stay near the base weights; a site's history is small and one-sided.
            pull = tf.add_n(
                [tf.reduce_sum(tf.square(v - a)) for v, a in zip(params, anchor, strict=True)]
            )
            objective = loss + args.l2sp * pull
        grads = tape.gradient(objective, params)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        opt.apply(grads, lr)
        return loss

    windows = Windows(prepared, burn + t_win)
    checkpoints = [{"step": 0, "val": base_val, "weights": cell.weights()}]
    history = [{"step": 0, **base_val}]
    started, losses = time.monotonic(), []
    for step in range(1, args.steps + 1):
        z, dt, y, pos = windows.sample(rng, args.batch)
        mask = (pos[:, burn:, None] >= warmup).astype(np.float32)
        h = warm(z[:, :burn], dt[:, :burn], tf.zeros((args.batch, hs)))
        lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps)))
        loss = train_step(
            z[:, burn:], dt[:, burn:], y[:, burn:], mask, h, tf.constant(lr, tf.float32)
        )
        losses.append(float(loss))
        if step % args.eval_every == 0 or step == args.steps:
            val, _ = score(prepared, run_cell(NumpyCfc(cell.weights()), prepared), "val", warmup)
            history.append({"step": step, **val})
            checkpoints.append({"step": step, "val": val, "weights": cell.weights()})
            log.info(
                "step %d/%d  train nll %.4f  val nll %.4f mse %.4f  (%.0fs)",
                step,
                args.steps,
                float(np.mean(losses[-args.eval_every :])),
                val["nll"],
                val["mse"],
                time.monotonic() - started,
            )
    train_seconds = time.monotonic() - started

    # Export the best validated checkpoint that passes train_cfc.py's checks (no variable ops,
    # finite outputs, TFLite-vs-numpy parity); the base weights are a candidate too.
    if args.val > 0:
        ranked = sorted(checkpoints, key=lambda c: (c["val"]["nll"], c["step"]))
    else:
        ranked = [checkpoints[-1], checkpoints[0]]
    weights_path = args.out / f"{args.name}.npz"
    card_path = args.out / f"{args.name}.json"
    card_path.unlink(missing_ok=True)  # a stale card would not vouch for the new files
    rejected: list[dict[str, Any]] = []
    for best in ranked:
        assign(cell, best["weights"])
        tflite, ops = export_tflite(cell, f, hs)
        model_path.write_bytes(tflite)
        np.savez(weights_path, **cell.weights())
        try:
            parity = parity_check(model_path, f, hs, args.seed + 2)
        except SystemExit as exc:
            log.warning("checkpoint from step %d rejected: %s", best["step"], exc)
            rejected.append({"step": best["step"], "reason": str(exc)})
            continue
        break
    else:
        raise SystemExit("export check failed for every checkpoint, the base weights included")
    if best["step"] == 0:
        log.warning("fine-tuning did not beat the base model on the validation slice: keeping it")
    log.info("checkpoint from step %d: val %s", best["step"], best["val"])

    # Held-out metrics, through the exported weights as the gateway's numpy cell reads them.
    site_cell = NumpyCfc.load(weights_path)
    site, site_per = score(prepared, run_cell(site_cell, prepared), "heldout", warmup)
    base, base_per = score(prepared, run_cell(base_cell, prepared), "heldout", warmup)
    ref, ref_per = reference_scores(prepared, warmup)
    per_series = {
        name: {
            "pairs": site_per[name]["pairs"],
            "mse": site_per[name]["mse"],
            "base_mse": base_per[name]["mse"],
            **ref_per[name],
            "nll": site_per[name]["nll"],
            "base_nll": base_per[name]["nll"],
        }
        for name in site_per
    }
    heldout = {
        "space": "normalised z, last pairs of each series after the warm-up, state fed back "
        "from the start of the series",
        "fraction": args.holdout,
        "pairs": sum(v["pairs"] for v in per_series.values()),
        "mse": site["mse"],
        "base_mse": base["mse"],
        **ref,
        "mse_ratio": _ratio(site["mse"], ref["naive_mse"]),
        "base_mse_ratio": _ratio(base["mse"], ref["naive_mse"]),
        "site_vs_base_mse_ratio": _ratio(site["mse"], base["mse"]),
        "nll": site["nll"],
        "base_nll": base["nll"],
        "per_series": per_series,
    }
    log.info(
        "held-out MSE: site %.4f, base %.4f, naive %.4f, baseline %.4f; NLL site %.4f, base %.4f",
        site["mse"],
        base["mse"],
        ref["naive_mse"],
        ref["baseline_mse"],
        site["nll"],
        base["nll"],
    )

    sig = Interpreter(model_content=tflite).get_signature_runner()
    inputs = tensor_specs(sig.get_input_details())
    outputs = tensor_specs(sig.get_output_details())
    t_first = min(float(by_name[p.name].t[0]) for p in prepared)
    t_last = max(float(by_name[p.name].t[-1]) for p in prepared)
    timed = all(by_name[p.name].timed for p in prepared)
    base_raw = dict(base_card.raw)
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
        "backbone_units": int(base_weights["backbone.0.kernel"].shape[1]),
        "backbone_layers": len(cell.backbone),
        "parameters": n_params,
        "cell": base_raw.get("cell", {}),
        "base_model": {
            "name": base_card.name,
            "version": base_card.version,
            "file": str(args.base),
            "sha256": base_card.sha256,
            "weights_sha256": base_card.weights_sha256,
        },
        "training": {
            "kind": "fine-tune of the base model on a site's own history",
            "data": {
                **sources,
                "series": [
                    {
                        "name": p.name,
                        "rows": len(p.z) + 1,
                        "first": _iso(float(by_name[p.name].t[0])) if timed else None,
                        "last": _iso(float(by_name[p.name].t[-1])) if timed else None,
                        "median_interval_s": p.interval,
                        "train_pairs": p.train_end,
                        "val_pairs": p.val_end - p.train_end,
                        "heldout_pairs": len(p.z) - p.val_end,
                    }
                    for p in prepared
                ],
                "skipped": sorted(set(by_name) - {p.name for p in prepared}),
                "rows": sum(len(p.z) + 1 for p in prepared),
                "date_range": [_iso(t_first), _iso(t_last)] if timed else None,
            },
            "normalisation": {
                **(base_raw.get("training") or {}).get("normalisation", {}),
                "dt_unit": "the series' median sampling interval (median_interval_s)",
                "runtime_note": "the detector's baseline_halflife matches training when it is "
                "halflife_samples x the stream's interval in seconds",
            },
            "inputs": "x = z_t, dt = (t_t - t_{t-1}) / median interval, target z_{t+1}",
            "split": {
                "train": round(1 - args.holdout - args.val, 6),
                "val": args.val,
                "heldout": args.holdout,
                "order": "per series, in time: train, then val, then held-out",
            },
            "loss": f"Gaussian NLL, first {warmup} samples of each series masked",
            "windows": f"random starts in the train part; {burn} samples of burn-in from h = 0 "
            f"(no gradient), then {t_win} trained",
            "optimiser": f"Adam lr {args.lr} cosine to 10%, grad-norm clip 1.0",
            "regulariser": f"L2-SP {args.l2sp} * sum((w - w_base)^2)",
            "batch": args.batch,
            "steps": args.steps,
            "selection": f"best validation NLL every {args.eval_every} steps, base included",
            "selected_step": best["step"],
            "rejected_checkpoints": rejected,
            "validation": history,
            "seconds": round(train_seconds, 1),
            "final_train_nll": float(np.mean(losses[-args.eval_every :])),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, tensorflow {tf.__version__}",
        },
        "seed": args.seed,
        "command": command_of(args),
        "metrics": {"heldout": heldout},
        "ops": ops,
    }
    card["metrics"]["parity"] = parity
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (%d bytes), %s, %s", model_path, card["size_bytes"], weights_path, card_path)
    log.info("parity: %s", card["metrics"]["parity"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
