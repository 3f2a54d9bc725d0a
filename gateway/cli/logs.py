"""The daemon's log lines on stderr: ISO 8601 times with their offset, or journald priorities
under systemd. A module of its own so that the commands that set up no log (version, --help,
tab completion) do not import ``logging`` (#14 item 10)."""

from __future__ import annotations

import logging
import os
import sys


def _under_journald() -> bool:
    """stderr is connected to the journal: $JOURNAL_STREAM names its device and inode."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    if not (device.isascii() and device.isdigit() and inode.isascii() and inode.isdigit()):
        return False
    return (int(device), int(inode)) == (st.st_dev, st.st_ino)


class _JournalFormatter(logging.Formatter):
    """Prefixes each line with its syslog priority, ``<4>``, which journald files it under."""

    PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n    ")  # one event, one entry
        return f"<{self.PRIORITY.get(record.levelname, 6)}>{text}"


def setup_logging(level: str, local: bool = False) -> None:
    """Plain lines on stderr, each starting with an ISO 8601 time and its offset (UTC ``Z``
    unless ``local``); under systemd, with ``<N>`` priority prefixes and no timestamp (the
    journal adds its own)."""
    from gateway.times import LogFormatter

    handler = logging.StreamHandler()
    if _under_journald():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", local=local)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho and the HTTP server are chatty at debug; their errors still come through.
    for noisy in ("urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
