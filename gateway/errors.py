"""The gateway's exception tree, in one place.

    GatewayError
     ├── ConfigError        invalid configuration (CLI exit 78); carries every issue found
     ├── ModelError         model file missing, unreadable, or with the wrong tensors
     ├── StorageError       the SQLite database cannot be opened or written
     ├── SourceError        a sensor source cannot be opened or read
     └── ParseError         one malformed input record (goes to the dead-letter table)

Library errors are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(GatewayError):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ModelError(GatewayError):
    pass


class StorageError(GatewayError):
    pass


class SourceError(GatewayError):
    pass


class ParseError(GatewayError):
    """A malformed record. ``reason`` is a short stable code used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
