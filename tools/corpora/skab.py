"""SKAB (Skoltech Anomaly Benchmark) as a corpus of ``Series``, by the dataset's protocol.

34 labelled runs of an industrial water-pump rig (``valve1``, ``valve2``, ``other``; the
``anomaly-free`` run has no labels and is not used, as in ``tools/bench_skab.py``), 8 channels
at 1 Hz. The files are read with ``tools/bench_skab.py``'s own reader (``datetime`` as UTC, the
``anomaly`` and ``changepoint`` columns taken out of the channels); the labels are ``anomaly``.
The protocol's first 400 rows of each file are the training rows, so ``train_rows`` = 400.

Faults are the runs of ``anomaly == 1``: a run over rows ``i .. j`` is ``[t_i, t_{j+1})``, or
``[t_i, t_j + 1 s)`` when it lasts to the end of the file (each SKAB file has exactly one).
The protocol does not promise fault-free training rows, and one file breaks it: ``other/2``'s
fault starts at row 104, so its labelled rows after row 400 are scored row by row but, as a
fault that started before scoring, it is not an event to detect (``tools/metrics.py``).

The dataset is read from ``$SKAB_DIR`` if set, else ``../shared/datasets/skab`` next to the
repository; nothing is copied. Sizes: ``full`` = all 34 files, ``quick`` = every second file
(17, from all three subsets), ``smoke`` = the first file of ``valve1`` and of ``other``. The
seed is ignored: the data is what it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tools.bench_skab import LABELS, TRAIN_ROWS, find_files, read_file
from tools.corpora.base import SIZES, Series, labels_from_faults

NAME = "skab"
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "skab"
SMOKE_FILES = ("valve1/0.csv", "other/1.csv")


def dataset_dir() -> Path:
    return Path(os.environ.get("SKAB_DIR", DEFAULT_DIR))


def label_runs(times: np.ndarray, labels: np.ndarray) -> list[tuple[float, float]]:
    """``[t_first, t_after_last)`` of each run of labelled rows."""
    change = np.diff(np.concatenate([[0], labels.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    runs = []
    for i, j in zip(starts, ends, strict=True):
        end = float(times[j]) if j < len(times) else float(times[-1]) + 1.0
        runs.append((float(times[i]), end))
    return runs


def generate(seed: int = 0, size: str = "full") -> list[Series]:
    del seed  # real data: nothing to draw
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    folder = dataset_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"SKAB dataset not found at {folder} (set SKAB_DIR)")
    paths = find_files(folder)
    if size == "smoke":
        paths = [p for p in paths if f"{p.parent.name}/{p.name}" in SMOKE_FILES]
    elif size == "quick":
        paths = paths[::2]
    out = []
    for path in paths:
        data = read_file(path)
        faults = label_runs(data.times, data.anomaly)
        labels = labels_from_faults(data.times, faults)
        if not np.array_equal(labels, data.anomaly.astype(np.uint8)):
            raise ValueError(f"{data.name}: fault intervals do not reproduce the labels")
        out.append(
            Series(
                name=f"{path.parent.name}-{path.stem}",
                corpus=NAME,
                t=data.times,
                x=data.values.astype(float),
                channels=data.channels,
                labels=labels,
                faults=faults,
                train_rows=TRAIN_ROWS,
                tags={"subset": path.parent.name, "file": data.name, "labels": LABELS[0]},
            )
        )
    return out
