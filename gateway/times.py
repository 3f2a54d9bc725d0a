"""How the gateway writes a moment for people and scripts: one rule, here.

A time is never shown without its offset. UTC is the default (an industrial site's logs,
alerts and upstream payloads line up across time zones and daylight-saving changes) and is
marked ``Z``; with ``local=True`` the machine's own zone is used (``TZ``, else
``/etc/localtime``) and its offset is written out, e.g. ``+05:30``.

- ``iso``: ISO 8601 with milliseconds, ``2026-12-02T05:21:10.123Z`` — JSON, CSV, the
  daemon's log and upstream payloads.
- ``shown``: the same to the second with a space for the ``T`` (RFC 3339 allows it),
  ``2026-12-02 05:21:10Z`` — table cells and plain-text reports.

Seconds since the Unix epoch (the ``*_ts`` fields) stay numbers: they have no zone to label.
"""

from __future__ import annotations

import datetime as dt
import logging


def moment(ts: float, local: bool = False) -> dt.datetime:
    """``ts`` (seconds since the epoch) as an aware datetime, in UTC or the local zone."""
    if local:
        return dt.datetime.fromtimestamp(ts).astimezone()
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _labelled(text: str) -> str:
    # An offset of zero is UTC's: write it as Z, in either mode.
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def iso(ts: float, local: bool = False) -> str:
    """ISO 8601 with milliseconds and offset: ``2026-12-02T05:21:10.123Z``."""
    return _labelled(moment(ts, local).isoformat(timespec="milliseconds"))


def shown(ts: float | None, local: bool = False) -> str:
    """For a table or a sentence: ``2026-12-02 05:21:10Z`` (``-`` for no time)."""
    if ts is None:
        return "-"
    return _labelled(moment(ts, local).isoformat(sep=" ", timespec="seconds"))


class LogFormatter(logging.Formatter):
    """``%(asctime)s`` as ``iso`` gives it, so the daemon's log follows the same rule."""

    def __init__(self, fmt: str, local: bool = False) -> None:
        super().__init__(fmt)
        self.local = local

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return iso(record.created, self.local)
