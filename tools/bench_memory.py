"""Memory per warm stream, through the real detector (#16 item 4).

For each ``--streams`` count N: a fresh ``Detector`` (the default config and model, the
default core) and N streams, each warmed with ``--readings`` readings (default 2,100: past the
2,048-reading cycle history and the judges' 64 blocks of 16, so every ring is full). The
readings are fed tick by tick, one reading per stream per tick, as replay does; the streams are
a mix of noise, a slow cycle and a coarse step signal (a third each), so some find a period.

Reported per N: VmRSS (``/proc/self/status``) before the streams and after warm-up, the
difference per stream, and the checkpoint row (``Detector.states``, ``gateway.statecodec``)
bytes per stream. With ``--tracemalloc`` the smallest N is also run once more under
``tracemalloc`` for the Python heap per stream (a row of its own: tracing makes feeding
several times slower and its own bookkeeping would count in that run's RSS). With
``--breakdown`` the smallest N's run also reports where a warm stream's bytes are: the
``sys.getsizeof`` of every object a channel holds (its history's arrays, its judges' arrays
and objects, its statistics, asset, latch, ...) summed by kind, averaged over the streams.

Feeding 2,100 readings to 100,000 streams would take most of an hour on a small box, so counts
above ``--feed-max`` (default 10,000) are warmed by restoring the checkpoint rows of
``--feed-max`` fed streams, cycled over the N names (the restore path a restart takes), then
``--after`` more readings each are fed so every stream is live. With ``--compare`` the
largest fed count is also measured restored that way, side by side, to show the two give the
same bytes per stream. Each N runs in a child process of its own, so one count's heap does
not carry into the next.

    python tools/bench_memory.py --streams 1000,10000,100000 --out bench_memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from array import array
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.detector import Detector  # noqa: E402
from gateway.model.runtime import load_model  # noqa: E402
from gateway.records import Reading  # noqa: E402


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def value(kind: int, i: int, t: int) -> float:
    """A deterministic reading of stream ``i`` at step ``t`` (no RNG state per stream)."""
    noise = math.sin(i * 12.9898 + t * 78.233) * 43758.5453
    noise = (noise - math.floor(noise)) - 0.5
    if kind == 0:
        return 20.0 + noise
    if kind == 1:
        return 50.0 + 10.0 * math.sin(2.0 * math.pi * t / (40 + i % 50)) + 0.2 * noise
    return float(round(5.0 + 2.0 * noise, 1))


def feed(detector: Detector, names: list[str], start: int, readings: int) -> None:
    for t in range(start, start + readings):
        ts = 1_000_000.0 + t
        tick = [Reading(n, ts, value(k % 3, k, t), "bench") for k, n in enumerate(names)]
        kept, _ = detector.admit(tick)  # as the pipeline does: it tracks when each was seen
        detector.process_ticks([kept])


def fresh_detector() -> Detector:
    cfg = parse_config("gateway: {id: bench-memory}\n")
    model = load_model(cfg.model.path, cfg.model.runtime)
    detector = Detector(cfg.detector, model, cfg.assets)
    # One-time costs (the model's first calls, numpy's FFT plans, the core's constants) are
    # paid by a stream that is not counted, then forgotten.
    feed(detector, ["probe"], 0, 300)
    detector.forget_idle(-1.0)
    gc.collect()
    return detector


# The detector's objects whose attributes the breakdown follows (the compiled core's classes
# have no ``__dict__``: their attribute names are read off the interpreted class's instances).
_FOLLOWED = ("Channel", "History", "Stat", "Judge", "Asset", "AlertLatch")


def _attribute_names(kind: str) -> list[str]:
    from gateway.detector import core

    latch = core.AlertLatch(1.0, 1.0, 1, 1)
    made = {
        "Channel": lambda: core.Channel("x", 0, core.Asset("x", latch)),
        "History": core.History,
        "Stat": core.Stat,
        "Judge": lambda: core.Judge(1.0),
        "Asset": lambda: core.Asset("x", latch),
        "AlertLatch": lambda: latch,
    }[kind]()
    return list(vars(made))


def breakdown(detector: Detector, names: list[str]) -> dict[str, float]:
    """Bytes per stream by what holds them (``sys.getsizeof``, each object once)."""
    engine = detector._engine
    attrs = {kind: _attribute_names(kind) for kind in _FOLLOWED}
    sizes: dict[str, int] = {}
    seen: set[int] = set()

    def add(key: str, obj: Any) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            sizes[key] = sizes.get(key, 0) + sys.getsizeof(obj)

    def walk(obj: Any, path: str) -> None:
        add(f"{path} ({type(obj).__name__} object)", obj)
        for name in attrs[type(obj).__name__]:
            value = getattr(obj, name)
            part = f"{path}.{'judges' if name in ('short', 'mid') else name}"
            if type(value).__name__ in _FOLLOWED:
                walk(value, part)
            elif isinstance(value, bytes | bytearray | str | list | dict | array | np.ndarray):
                add(part, value)

    for name in names:
        channel = engine.channels[name]
        walk(channel, "channel")
        add("name (str)", name)
    sizes["model state row (h)"] = engine.h.nbytes * len(names) // max(len(engine.h), 1)
    return {k: round(v / len(names)) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}


def measure(
    n: int, readings: int, after: int, feed_max: int, trace: bool, parts: bool = False
) -> dict[str, Any]:
    """One count, in this process."""
    detector = fresh_detector()
    names = [f"site/line{i // 100}/sensor{i}" for i in range(n)]
    restored_from = 0
    if trace:
        tracemalloc.start()
    gc.collect()
    rss0 = rss_bytes()
    heap0 = tracemalloc.get_traced_memory()[0] if trace else 0
    started = time.monotonic()
    if n <= feed_max:
        feed(detector, names, 0, readings)
    else:
        # Warm ``feed_max`` streams in a detector of their own, take their checkpoint rows,
        # drop that detector, and restore the rows cycled over the N names.
        donor = Detector(detector.config, detector.model)
        donor_names = names[:feed_max]
        feed(donor, donor_names, 0, readings)
        rows = donor.states(donor_names)
        del donor
        gc.collect()
        restored_from = feed_max
        for lo in range(0, n, feed_max):
            chunk = {}
            for k in range(lo, min(n, lo + feed_max)):
                chunk[names[k]] = rows[donor_names[k % feed_max]]
                chunk[f"asset/{names[k]}"] = rows[f"asset/{donor_names[k % feed_max]}"]
            detector.restore(chunk)
            del chunk
        del rows
        feed(detector, names, readings, after)
    elapsed = time.monotonic() - started
    gc.collect()
    rss1 = rss_bytes()
    heap1 = tracemalloc.get_traced_memory()[0] if trace else 0
    if trace:
        tracemalloc.stop()
    sample = names[: min(n, 2000)]
    states = detector.states(sample)
    stream_rows = [len(v) for k, v in states.items() if not k.startswith("asset/")]
    asset_rows = [len(v) for k, v in states.items() if k.startswith("asset/")]
    result = {
        "streams": n,
        "streams_live": len(detector.streams),
        "warmed": "fed" if not restored_from else f"restored from {restored_from} fed",
        "readings_per_stream": readings if not restored_from else readings + after,
        "seconds": round(elapsed, 1),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_bytes_per_stream": round((rss1 - rss0) / n),
        "heap_bytes_per_stream": round((heap1 - heap0) / n) if trace else None,
        "checkpoint_bytes_per_stream": round(sum(stream_rows) / len(stream_rows)),
        "checkpoint_asset_bytes": round(sum(asset_rows) / len(asset_rows)),
        "core": detector.core,
    }
    if parts:
        result["breakdown_bytes_per_stream"] = breakdown(detector, sample)
    return result


def child(
    args: argparse.Namespace, n: int, feed_max: int, trace: bool, parts: bool = False
) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--one", str(n), "--readings", str(args.readings),
        "--after", str(args.after), "--feed-max", str(feed_max),
    ]  # fmt: skip
    if trace:
        command.append("--tracemalloc")
    if parts:
        command.append("--breakdown")
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1000,10000,100000", help="comma-separated counts")
    parser.add_argument("--readings", type=int, default=2100, help="warm-up readings each")
    parser.add_argument("--after", type=int, default=20, help="readings fed after a restore")
    parser.add_argument("--feed-max", type=int, default=10_000)
    parser.add_argument("--tracemalloc", action="store_true", help="also: heap, smallest N")
    parser.add_argument("--compare", action="store_true", help="largest fed N also restored")
    parser.add_argument("--breakdown", action="store_true", help="also: bytes by kind, smallest N")
    parser.add_argument("--out", type=Path, default=Path("bench_memory.json"))
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = measure(
            args.one, args.readings, args.after, args.feed_max, args.tracemalloc, args.breakdown
        )
        print(json.dumps(result))
        return 0
    counts = sorted(int(s) for s in args.streams.split(","))
    rows: list[dict[str, Any]] = []
    for n in counts:
        rows.append(child(args, n, args.feed_max, False, args.breakdown and n == counts[0]))
        print(json.dumps(rows[-1]), flush=True)
    if args.tracemalloc:
        rows.append(child(args, counts[0], args.feed_max, True))
        print(json.dumps(rows[-1]), flush=True)
    fed = [n for n in counts if n <= args.feed_max]
    if args.compare and fed and max(fed) >= 10:
        # The same count warmed the other way: restored from a tenth as many fed streams.
        n = max(fed)
        rows.append(child(args, n, n // 10, False))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        "| streams | warmed | RSS before → after | bytes per stream (RSS) | heap per stream "
        "(tracemalloc) | checkpoint row |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        heap = "" if r["heap_bytes_per_stream"] is None else f"{r['heap_bytes_per_stream']:,}"
        rss = "(traced)" if heap else f"{r['rss_bytes_per_stream']:,}"
        print(
            f"| {r['streams']:,} | {r['warmed']} | {r['rss_before_mb']:.0f} → "
            f"{r['rss_after_mb']:.0f} MB | {rss} | {heap} | "
            f"{r['checkpoint_bytes_per_stream']:,} B |"
        )
    parts = next(
        (r["breakdown_bytes_per_stream"] for r in rows if "breakdown_bytes_per_stream" in r), None
    )
    if parts:
        print(f"\nwhere a warm stream's bytes are ({counts[0]:,} fed, sys.getsizeof):")
        for key, size in parts.items():
            print(f"  {size:>6,} B  {key}")
        print(f"  {sum(parts.values()):>6,} B  in all")
    load = os.getloadavg()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": [round(x, 2) for x in load],
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nload average {load[0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
