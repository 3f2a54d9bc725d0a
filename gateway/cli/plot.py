"""`liquid-gateway plot`: one stream's signal, expected band, score and alerts, as a PNG.

matplotlib is an optional extra (``pip install 'liquid-gateway[plot]'``): gateways that never
plot do not carry it. It runs on the headless Agg backend, so no display is needed.

The band is expected value ± 3 standard deviations of the recent residuals (observed minus
expected, over a trailing window), which is what the detector's prediction error looked like
at that time. The score is drawn on a ``-log10(1 - score)`` axis so that 0.99, 0.999 and
0.9999 — where thresholds live — are evenly spaced, with the alert threshold marked.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.errors import GatewayError

BAND_WINDOW = 120  # readings in the trailing residual window
MAX_POINTS = 50_000  # more readings than this are thinned (alert flags are kept)


class PlotError(GatewayError):
    """matplotlib is missing, or there is nothing to draw."""


@dataclass(frozen=True)
class Series:
    ts: np.ndarray  # Unix seconds
    value: np.ndarray
    expected: np.ndarray
    score: np.ndarray
    alert: np.ndarray  # bool


def series(rows: Sequence[tuple[float, float | None, float | None, float | None, int]]) -> Series:
    """From (ts, value, expected, score, alert) rows, oldest first; None becomes NaN."""
    a = np.array([[r[0], *(np.nan if v is None else v for v in r[1:4]), r[4]] for r in rows])
    if len(a) > MAX_POINTS:
        step = math.ceil(len(a) / MAX_POINTS)
        alert = np.maximum.reduceat(a[:, 4], np.arange(0, len(a), step))
        a = a[::step].copy()
        a[:, 4] = alert[: len(a)]
    return Series(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4] > 0)


def residual_band(s: Series, window: int = BAND_WINDOW) -> np.ndarray:
    """Trailing standard deviation of observed minus expected (causal, NaN-aware)."""
    r = s.value - s.expected
    ok = np.isfinite(r)
    r0 = np.where(ok, r, 0.0)
    c = np.concatenate([[0.0], np.cumsum(ok)])
    c1 = np.concatenate([[0.0], np.cumsum(r0)])
    c2 = np.concatenate([[0.0], np.cumsum(r0 * r0)])
    idx = np.arange(1, len(r) + 1)
    lo = np.maximum(0, idx - window)
    n = c[idx] - c[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c1[idx] - c1[lo]) / n
        var = (c2[idx] - c2[lo]) / n - mean * mean
    return np.where(n >= 5, np.sqrt(np.maximum(var, 0.0)), np.nan)


def _log_score(score: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(1.0 - score, 1e-6, 1.0))


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of consecutive True values, end inclusive."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def render(
    s: Series,
    out: Path,
    *,
    title: str,
    unit: str | None = None,
    threshold: float = 0.999,
    raised_at: Sequence[float] = (),
    size: tuple[int, int] = (1200, 700),
) -> None:
    """Write the PNG (``size`` in pixels)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError("plotting needs matplotlib: pip install 'liquid-gateway[plot]'") from exc
    if len(s.ts) == 0:
        raise PlotError("nothing to plot")
    dpi = 100
    when = [dt.datetime.fromtimestamp(t, tz=dt.UTC) for t in s.ts]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(size[0] / dpi, size[1] / dpi),
        dpi=dpi,
        gridspec_kw={"height_ratios": [3, 1]},
        layout="constrained",
    )
    try:
        spread = residual_band(s)
        top.fill_between(
            when,
            s.expected - 3 * spread,
            s.expected + 3 * spread,
            color="tab:blue",
            alpha=0.15,
            linewidth=0,
            label="expected band (±3σ of recent residuals)",
        )
        top.plot(when, s.value, color="black", linewidth=0.8, label="observed")
        top.plot(
            when, s.expected, color="tab:blue", linewidth=0.8, linestyle="--", label="expected"
        )
        for axis in (top, bottom):
            for i, (a, b) in enumerate(_runs(s.alert)):
                axis.axvspan(
                    when[a],
                    when[b],
                    color="tab:red",
                    alpha=0.15,
                    linewidth=0,
                    label="alert active" if i == 0 and axis is top else None,
                )
        if raised_at:
            lo, hi = s.ts[0], s.ts[-1]
            marks = [t for t in raised_at if lo <= t <= hi]
            if marks:
                y = np.interp(marks, s.ts, np.nan_to_num(s.value, nan=np.nanmean(s.value)))
                top.scatter(
                    [dt.datetime.fromtimestamp(t, tz=dt.UTC) for t in marks],
                    y,
                    marker="v",
                    s=60,
                    color="tab:red",
                    zorder=5,
                    label="alert raised",
                )
        top.set_title(title, loc="left")
        top.set_ylabel(f"value ({unit})" if unit else "value")
        top.legend(loc="upper left", fontsize="small", ncols=5, frameon=False)
        top.grid(alpha=0.3)

        bottom.plot(when, _log_score(s.score), color="tab:purple", linewidth=0.8, label="score")
        bottom.axhline(
            _log_score(np.array([threshold]))[0],
            color="tab:red",
            linestyle=":",
            linewidth=1,
            label=f"threshold {threshold:g}",
        )
        ticks = [0, 1, 2, 3, 4]
        bottom.set_yticks(ticks, ["0", "0.9", "0.99", "0.999", "0.9999"])
        bottom.set_ylim(0, 4.5)
        bottom.set_ylabel("anomaly score")
        bottom.legend(loc="upper left", fontsize="small", ncols=2, frameon=False)
        bottom.grid(alpha=0.3)
        locator = mdates.AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bottom.set_xlabel("time (UTC)")
        fig.savefig(out, format="png", dpi=dpi)
    finally:
        plt.close(fig)
