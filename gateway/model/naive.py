"""A "next = current" predictor with the StepModel interface: the ablation baseline.

Swapping it in for the CfC model keeps everything else in the detector (online baseline,
residual judged against its own adaptive distribution, hysteresis, drift events) and removes
only the learned dynamics. Whatever the liquid model adds is the difference between the two.

The prediction is the current normalised reading; the log-variance is the constant
``log(2)``: for white noise in baseline units, the error of "next = current" is the difference
of two independent unit-variance values, whose variance is 2. It is only a starting point: the
detector recalibrates every channel's predicted variance online to the error it really achieves,
so the constant matters for the first readings only. There is no state (``hidden_size`` 1,
always zero) and no file: ``path`` names the model, ``card`` is None.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gateway.model.card import ModelCard

NAIVE_LOG_VAR = math.log(2.0)


class NaiveModel:
    """``pred = x``, ``log_var = log 2``, ``h_new = h``; any batch size, float32 in and out."""

    runtime = "naive"

    def __init__(self, log_var: float = NAIVE_LOG_VAR) -> None:
        self.name = "naive"
        self.sha256 = "0" * 64
        self.model_id = f"{self.name}@{self.sha256[:8]}"
        self.hidden_size = 1
        self.features = 1
        self.path = Path("naive")
        self.card: ModelCard | None = None
        self.log_var = float(log_var)

    def step(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        h = np.asarray(h, dtype=np.float32)
        b = x.shape[0] if x.ndim == 2 else -1
        if x.shape != (b, 1) or h.shape != (b, 1) or np.shape(dt) != (b, 1):
            raise ValueError(
                f"{self.model_id}: step wants x[B,1], h[B,1], dt[B,1]; "
                f"got {x.shape}, {h.shape}, {np.shape(dt)}"
            )
        return x.copy(), np.full_like(x, self.log_var), h.copy()

    def __repr__(self) -> str:
        return f"<NaiveModel {self.model_id} log_var={self.log_var:.4f}>"
