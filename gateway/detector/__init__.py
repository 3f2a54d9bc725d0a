"""Anomaly detection: the pure part of the gateway (no I/O), shared by the daemon and replay.

core    the arithmetic, written once (typed Python; compiled by mypyc where it can be)
engine  Detector: the build that runs here, state snapshots, views for `streams`
build   compiles core.py into _core_compiled
"""

from gateway.detector.core import AlertLatch
from gateway.detector.engine import Detector, DetectorOutput
from gateway.score import score_of, surprise_of

__all__ = ["AlertLatch", "Detector", "DetectorOutput", "score_of", "surprise_of"]
