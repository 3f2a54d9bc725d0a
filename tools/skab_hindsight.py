"""How far could a simple per-row feature go on SKAB if its threshold were picked with the labels?

This is an analysis, not a detector: it reads the labels to sweep one global threshold, which
no deployed detector can do. It exists to calibrate targets. ``bench_skab.py`` scores the
gateway as shipped (thresholds fixed in advance, labels never read); this script asks what the
best *hindsight* threshold on a plain feature reaches, so that a target like "FAR <= 12 % and
MAR <= 25 %" can be read against what the data allows.

The feature: each channel standardised with the mean and standard deviation of the file's
400 training rows (frozen, as in the protocol), averaged with an EWMA of weight ``alpha``,
and expressed in standard deviations of that average over training rows 100-400. A row's score
is the largest of these over a channel set. For every (alpha, channel set) the table gives the
lowest MAR reachable with FAR <= 12 % (and <= 15 %), and the best F1 over all thresholds, pooled
over the 34 labelled files, rows after 400, as in ``bench_skab.py``.

Usage (from the repo root)::

    python tools/skab_hindsight.py ../shared/datasets/skab [--out hindsight.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_skab import TRAIN_ROWS, SkabFile, find_files, read_file  # noqa: E402

ALPHAS = (1.0, 0.3, 0.1, 0.05, 0.02)
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


def feature(data: SkabFile, alpha: float, columns: list[int]) -> np.ndarray:
    values = data.values[:, columns]
    train = values[:TRAIN_ROWS]
    z = (values - train.mean(0)) / (train.std(0) + 1e-9)
    smooth = ewma(z, alpha)
    ref = smooth[100:TRAIN_ROWS]
    return np.abs((smooth - ref.mean(0)) / (ref.std(0) + 1e-9)).max(axis=1)


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
    rows: list[dict[str, Any]] = []
    print(f"SKAB, {len(files)} files, rows > {TRAIN_ROWS}; thresholds picked WITH the labels")
    print(
        f"{'channels':28s} {'alpha':>5s} {'MAR@FAR<=12':>12s} {'MAR@FAR<=15':>12s} {'best F1':>8s}"
    )
    for name, columns in sets.items():
        for alpha in ALPHAS:
            scores = np.concatenate([feature(f, alpha, columns)[TRAIN_ROWS:] for f in files])
            result = sweep(scores, labels) | {"channels": name, "alpha": alpha}
            rows.append(result)
            cells = [
                "-" if result[f"mar_at_far_{x:g}"] is None else f"{result[f'mar_at_far_{x:g}']:.1f}"
                for x in FAR_LIMITS
            ]
            print(
                f"{name:28s} {alpha:5.2f} {cells[0]:>12s} {cells[1]:>12s} {result['best_f1']:8.3f}"
            )
    if args.out:
        args.out.write_text(json.dumps({"benchmark": "SKAB hindsight", "rows": rows}, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
