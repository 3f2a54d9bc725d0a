"""How far could a simple per-row feature go on SKAB if its threshold were picked with the labels?

This is an analysis, not a detector: it reads the labels to sweep one global threshold, which
no deployed detector can do. It exists to calibrate targets. ``bench_skab.py`` scores the
gateway as shipped (thresholds fixed in advance, labels never read); this script asks what the
best *hindsight* threshold on a plain feature reaches, so that a target like "FAR <= 12 % and
MAR <= 25 %" can be read against what the data allows.

Every feature starts from each channel standardised with the mean and standard deviation of the
file's 400 training rows (frozen, as in the protocol) and averages with an EWMA of weight
``alpha``; what it then computes per row:

- ``level``: each channel's average in standard deviations of that average over training rows
  100-400, the largest over a channel set (what the gateway's level test looks at).
- ``mahalanobis``: the distance of the averaged vector from its training mean, under its
  training covariance (ridge 1e-3).
- ``pca t2+q``: the T-squared and Q (squared prediction error) statistics of a 3-component PCA
  fitted on the averaged training rows, each divided by its training 99th percentile, the
  larger of the two (the published "T-squared+Q" baseline, on averaged inputs).
- ``relation``: each channel predicted from the other channels of the set by a ridge
  regression fitted on the training rows; the residual, averaged and scaled like ``level``,
  the largest over the set. A cross-channel model: it removes what the channels share (mains
  voltage moving current with it) and leaves what one channel does on its own.
- ``relation or level``: the larger of the two.

For every (feature, channel set, alpha) the table gives the lowest MAR reachable with
FAR <= 12 % (and <= 15 %), and the best F1 over all thresholds, pooled over the 34 labelled
files, rows after 400, as in ``bench_skab.py``.

Usage (from the repo root)::

    python tools/skab_hindsight.py ../shared/datasets/skab [--out hindsight.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_skab import TRAIN_ROWS, SkabFile, find_files, read_file  # noqa: E402

ALPHAS = (1.0, 0.3, 0.1, 0.05, 0.02)
MULTI_ALPHAS = (0.3, 0.1, 0.05)  # the multivariate features: level's best alphas
REF_FROM = 100
MAHALANOBIS_RIDGE = 1e-3
PCA_COMPONENTS = 3
RELATION_RIDGE = 1.0
FAR_LIMITS = (12.0, 15.0)
TEMPERATURES = ("Temperature", "Thermocouple")
FLOW = "Volume Flow RateRMS"


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """Along axis 0, started at the first row."""
    out = np.empty_like(x)
    state = x[0].copy()
    for i in range(len(x)):
        state += alpha * (x[i] - state)
        out[i] = state
    return out


def _standardised(data: SkabFile, columns: list[int]) -> np.ndarray:
    values = data.values[:, columns]
    train = values[:TRAIN_ROWS]
    return (values - train.mean(0)) / (train.std(0) + 1e-9)


def _in_training_sds(smooth: np.ndarray) -> np.ndarray:
    """|x| in standard deviations of x over training rows 100-400 (the EWMA has settled)."""
    ref = smooth[REF_FROM:TRAIN_ROWS]
    return np.abs((smooth - ref.mean(0)) / (ref.std(0) + 1e-9))


def feature(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    """``level``: the largest channel's averaged z, in training standard deviations."""
    return _in_training_sds(ewma(_standardised(data, columns), alpha)).max(axis=1)


def mahalanobis(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    smooth = ewma(_standardised(data, columns), alpha)
    ref = smooth[REF_FROM:TRAIN_ROWS]
    cov = np.atleast_2d(np.cov(ref.T)) + MAHALANOBIS_RIDGE * np.eye(len(columns))
    d = smooth - ref.mean(0)
    return np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d))


def pca_t2_q(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    smooth = ewma(_standardised(data, columns), alpha)
    ref = smooth[REF_FROM:TRAIN_ROWS]
    mu, sd = ref.mean(0), ref.std(0) + 1e-9
    x, xr = (smooth - mu) / sd, (ref - mu) / sd
    k = min(PCA_COMPONENTS, len(columns) - 1)
    _, singular, vt = np.linalg.svd(xr, full_matrices=False)
    loadings, variances = vt[:k].T, singular[:k] ** 2 / (len(xr) - 1) + 1e-12

    def t2_q(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = rows @ loadings
        return (t**2 / variances).sum(1), ((rows - t @ loadings.T) ** 2).sum(1)

    t2, q = t2_q(x)
    t2_ref, q_ref = t2_q(xr)
    return np.maximum(t2 / np.percentile(t2_ref, 99), q / (np.percentile(q_ref, 99) + 1e-12))


def relation(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    """Each channel's residual from a ridge regression on the set's other channels, fitted on
    the training rows; then like ``level``."""
    z = _standardised(data, columns)
    residual = np.empty_like(z)
    ones = np.ones((len(z), 1))
    for j in range(z.shape[1]):
        x = np.hstack([np.delete(z, j, axis=1), ones])
        train = x[:TRAIN_ROWS]
        penalty = RELATION_RIDGE * np.eye(x.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        w = np.linalg.solve(train.T @ train + penalty, train.T @ z[:TRAIN_ROWS, j])
        residual[:, j] = z[:, j] - x @ w
    return _in_training_sds(ewma(residual, alpha)).max(axis=1)


def relation_or_level(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    return np.maximum(relation(data, alpha, columns), feature(data, alpha, columns))


FEATURES: dict[str, Callable[[SkabFile, float, list[int]], np.ndarray]] = {
    "level": feature,
    "mahalanobis": mahalanobis,
    "pca t2+q": pca_t2_q,
    "relation": relation,
    "relation or level": relation_or_level,
}


def sweep(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every distinct threshold ("alert where score >= t"), at once from one sort: FAR and MAR
    in %, F1, pooled."""
    order = np.argsort(-scores, kind="stable")
    ranked, faulty = scores[order], labels[order]
    # Alerting on the first k rows of the ranking, for every k that ends a run of equal scores.
    ends = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
    tp = np.r_[0, np.cumsum(faulty)[ends]]
    fp = np.r_[0, np.cumsum(~faulty)[ends]]
    positives, negatives = int(labels.sum()), int((~labels).sum())
    fn, far = positives - tp, 100.0 * fp / max(negatives, 1)
    mar = 100.0 * fn / max(positives, 1)
    f1 = tp / np.maximum(tp + (fp + fn) / 2, 1e-12)
    result: dict[str, Any] = {"best_f1": float(f1.max())}
    for limit in FAR_LIMITS:
        ok = far <= limit
        result[f"mar_at_far_{limit:g}"] = float(mar[ok].min()) if ok.any() else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="SKAB folder (the one holding data/)")
    parser.add_argument("--out", type=Path, help="write results as JSON here")
    args = parser.parse_args(argv)

    files = [read_file(p) for p in find_files(args.dataset)]
    channels = files[0].channels
    sets = {
        "all 8 channels": list(range(len(channels))),
        "without the 2 temperatures": [i for i, c in enumerate(channels) if c not in TEMPERATURES],
        "flow only": [channels.index(FLOW)],
    }
    labels = np.concatenate([f.anomaly[TRAIN_ROWS:].astype(bool) for f in files])
    runs = [("level", name, alpha) for name in sets for alpha in ALPHAS]
    runs += [
        (feat, name, alpha)
        for feat in FEATURES
        if feat != "level"
        for name in sets
        if len(sets[name]) > 1
        for alpha in MULTI_ALPHAS
    ]
    rows: list[dict[str, Any]] = []
    print(f"SKAB, {len(files)} files, rows > {TRAIN_ROWS}; thresholds picked WITH the labels")
    print(
        f"{'feature':18s} {'channels':28s} {'alpha':>5s} {'MAR@FAR<=12':>12s} "
        f"{'MAR@FAR<=15':>12s} {'best F1':>8s}"
    )
    for feat, name, alpha in runs:
        columns = sets[name]
        scores = np.concatenate([FEATURES[feat](f, alpha, columns)[TRAIN_ROWS:] for f in files])
        result = sweep(scores, labels) | {"feature": feat, "channels": name, "alpha": alpha}
        rows.append(result)
        cells = [
            "-" if result[f"mar_at_far_{x:g}"] is None else f"{result[f'mar_at_far_{x:g}']:.1f}"
            for x in FAR_LIMITS
        ]
        print(
            f"{feat:18s} {name:28s} {alpha:5.2f} {cells[0]:>12s} {cells[1]:>12s} "
            f"{result['best_f1']:8.3f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"benchmark": "SKAB hindsight", "rows": rows}, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
