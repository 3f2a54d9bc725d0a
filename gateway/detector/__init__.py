"""Anomaly detection: the pure part of the gateway (no I/O), shared by the daemon and replay."""

from gateway.detector.engine import Detector, DetectorOutput
from gateway.detector.latch import AlertLatch

__all__ = ["AlertLatch", "Detector", "DetectorOutput"]
