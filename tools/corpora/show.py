"""Print what a corpus holds, one line per series, then a summary: how an operator or developer
looks at a benchmark corpus before trusting a table built on it.

    python -m tools.corpora.show CORPUS [--size quick] [--seed 0]

CORPUS is a module of ``tools.corpora`` with a ``generate(seed, size)`` (``periodic``,
``persistent``, ``gutentag``, ``heldout``...) or one of the held-out corpora on its own
(``nab_like``, ``drift_like``, ``plant_like``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from tools.corpora.base import SIZES, Series

HELDOUT = ("nab_like", "drift_like", "plant_like")
Generator = Callable[[int, str], list[Series]]


def corpus_generator(name: str) -> Generator:
    if name in HELDOUT:
        return getattr(importlib.import_module("tools.corpora.heldout"), name)
    try:
        module = importlib.import_module(f"tools.corpora.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tools.corpora.{name}":
            raise  # the corpus exists but one of its dependencies is missing
        raise SystemExit(f"unknown corpus {name!r}") from exc
    if not hasattr(module, "generate"):
        raise SystemExit(f"tools.corpora.{name} has no generate(seed, size)")
    return module.generate


def describe(series: Series) -> str:
    tags = " ".join(f"{key}={value}" for key, value in series.tags.items() if len(value) <= 40)
    return (
        f"{series.name:<44} {series.rows:>7} {len(series.channels):>4} {len(series.faults):>6}"
        f" {series.train_rows:>6}  {tags}"
    )


def summary(corpus: list[Series], seconds: float) -> list[str]:
    rows = sum(s.rows for s in corpus)
    cells = sum(s.rows * len(s.channels) for s in corpus)
    fault_rows = sum(int(s.labels.sum()) for s in corpus)
    faulty = sum(1 for s in corpus if s.faults)
    hours = sum(s.hours for s in corpus)
    faults = Counter(s.tags.get("fault", "?") for s in corpus)
    return [
        f"{len(corpus)} series, {faulty} with faults, {rows:,} rows, {cells:,} rows x channels,"
        f" {fault_rows / max(rows, 1):.1%} fault rows, {hours:,.0f} h scored, "
        f"generated in {seconds:.2f} s",
        "faults: " + ", ".join(f"{name} {count}" for name, count in sorted(faults.items())),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.corpora.show", description=__doc__)
    parser.add_argument("corpus")
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate = corpus_generator(args.corpus)
    began = time.perf_counter()
    try:
        corpus = generate(args.seed, args.size)
    except ImportError as exc:  # an optional corpus whose package is not installed
        raise SystemExit(str(exc)) from exc
    seconds = time.perf_counter() - began
    print(f"{'name':<44} {'rows':>7} {'chan':>4} {'faults':>6} {'train':>6}  tags")
    for series in corpus:
        print(describe(series))
    print()
    for line in summary(corpus, seconds):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
