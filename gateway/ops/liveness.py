"""Is the gateway that wrote a status snapshot still running?

The daemon writes its status to the database every couple of seconds; ``status`` calls it
running while that snapshot is fresh. A daemon whose database cannot be written (a full disk)
keeps running degraded but cannot refresh it, so a stale snapshot alone does not mean it
stopped: the snapshot's ``pid`` is looked up, and it is the same daemon if that process
started just before the snapshot's ``started_at`` (a reused pid started later, or long before).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FRESH_S = 30.0  # the daemon writes its status every 2 s; older than this is stale
# From the process starting to the daemon taking its start time: imports, the model, the
# config. A process that started longer than this before `started_at` is another one.
START_SLACK_S = 120.0


def process_started(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When process ``pid`` started (Unix time), from Linux's /proc; None if it does not
    exist or this cannot be told."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        # Field 22 (starttime, clock ticks since boot); the name in (...) may hold spaces.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # someone else's process (EPERM): it exists
    return False


def still_running(snapshot: dict[str, Any], now: float) -> str:
    """``running`` (a fresh snapshot whose process exists), ``stale`` (the same daemon is
    alive but has not written its status for FRESH_S: storage trouble) or ``stopped``."""
    updated = snapshot.get("updated_at")
    pid = snapshot.get("pid")
    started_at = snapshot.get("started_at")
    if not isinstance(updated, (int, float)):
        return "stopped"
    pid = pid if isinstance(pid, int) and pid > 0 else None
    if now - updated <= FRESH_S:
        return "stopped" if pid is not None and _gone(pid) else "running"
    begun = process_started(pid) if pid is not None else None
    if begun is None or not isinstance(started_at, (int, float)):
        return "stopped"
    return "stale" if -2.0 <= started_at - begun <= START_SLACK_S else "stopped"
