"""The CfC step in plain numpy: the fallback where no TFLite wheel exists, and the reference the
shipped ``.tflite`` is checked against (parity over long fed-back runs).

The maths is the closed-form continuous-time cell of Hasani et al. (Nature Machine Intelligence
2022) in the ncps "default" mode, exactly as ``tools/train_cfc.py`` trains and exports it::

    bb      = lecun_tanh(W_bb . [x, h] + b_bb)          (one or more backbone layers)
    ff1     = tanh(W1 . bb),  ff2 = tanh(W2 . bb)
    t_a     = Wa . bb,        t_b = Wb . bb
    gate    = sigmoid(-t_a * clip(dt, 0, dt_max) + t_b)  (the paper's sigma(-f * t))
    h_new   = ff1 * (1 - gate) + gate * ff2
    pred    = Wp . h_new + bp
    log_var = clip(Wv . h_new + bv, lo, hi)

The four heads and the two readouts are stored fused (one matrix each), so a step is
``1 + backbone_layers + 1`` matmuls. Everything is float32 and batched over the first axis.
Clipping ``dt`` keeps the gate inside the range the model was trained on (a long gap is just
"long") and bounds float32 rounding, which the gate amplifies by ``dt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gateway.errors import ModelError

log = logging.getLogger(__name__)

LECUN_SCALE = np.float32(1.7159)
LECUN_SLOPE = np.float32(0.666)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic via tanh: no overflow for large |a| (np.exp would warn), float32 in and out."""
    return _HALF * (_ONE + np.tanh(_HALF * a))


class NumpyCfc:
    """A CfC cell from a dict of float32 arrays (the ``.npz`` the training tool writes)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        try:
            self.backbone: list[tuple[np.ndarray, np.ndarray]] = []
            layer = 0
            while f"backbone.{layer}.kernel" in weights:
                self.backbone.append(
                    (
                        np.ascontiguousarray(weights[f"backbone.{layer}.kernel"], np.float32),
                        np.ascontiguousarray(weights[f"backbone.{layer}.bias"], np.float32),
                    )
                )
                layer += 1
            self.heads_w = np.ascontiguousarray(weights["heads.kernel"], np.float32)
            self.heads_b = np.ascontiguousarray(weights["heads.bias"], np.float32)
            self.readout_w = np.ascontiguousarray(weights["readout.kernel"], np.float32)
            self.readout_b = np.ascontiguousarray(weights["readout.bias"], np.float32)
            lo, hi = (float(v) for v in weights["log_var_range"])
            dt_lo, dt_hi = (float(v) for v in weights.get("dt_range", (0.0, np.inf)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"CfC weights are incomplete or malformed: {exc}") from exc
        if not self.backbone:
            raise ModelError("CfC weights have no backbone layer")
        self.hidden_size = self.readout_w.shape[0]
        self.features = self.readout_w.shape[1] // 2
        self.backbone_units = self.backbone[0][0].shape[1]
        self.log_var_range = (np.float32(lo), np.float32(hi))
        self.dt_range = (np.float32(dt_lo), np.float32(dt_hi))
        self._check_shapes()

    def _check_shapes(self) -> None:
        h, f = self.hidden_size, self.features
        width = f + h
        for k, b in self.backbone:
            if k.ndim != 2 or k.shape[0] != width or b.shape != (k.shape[1],):
                raise ModelError(f"CfC backbone layer has shape {k.shape}, expected ({width}, *)")
            width = k.shape[1]
        if self.heads_w.shape != (width, 4 * h) or self.heads_b.shape != (4 * h,):
            raise ModelError(
                f"CfC heads have shape {self.heads_w.shape}, expected ({width}, {4 * h})"
            )
        if self.readout_w.shape != (h, 2 * f) or self.readout_b.shape != (2 * f,):
            raise ModelError(
                f"CfC readout has shape {self.readout_w.shape}, expected ({h}, {2 * f})"
            )

    @classmethod
    def load(cls, path: Path) -> NumpyCfc:
        try:
            with np.load(path, allow_pickle=False) as data:
                weights = {key: data[key] for key in data.files}
        except FileNotFoundError as exc:
            raise ModelError(f"CfC weights {path} not found") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise ModelError(f"CfC weights {path} are unreadable: {exc}") from exc
        return cls(weights)

    @property
    def parameter_count(self) -> int:
        arrays = [a for pair in self.backbone for a in pair]
        arrays += [self.heads_w, self.heads_b, self.readout_w, self.readout_b]
        return int(sum(a.size for a in arrays))

    def step(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step for a batch: ``x[B,F]``, ``h[B,H]``, ``dt[B,1]`` -> pred, log_var, h_new."""
        hs = self.hidden_size
        z = np.concatenate([x, h], axis=1)
        for kernel, bias in self.backbone:
            z = LECUN_SCALE * np.tanh(LECUN_SLOPE * (z @ kernel + bias))
        heads = z @ self.heads_w + self.heads_b
        ff1 = np.tanh(heads[:, :hs])
        ff2 = np.tanh(heads[:, hs : 2 * hs])
        t_a = heads[:, 2 * hs : 3 * hs]
        t_b = heads[:, 3 * hs :]
        gate = _sigmoid(-t_a * np.clip(dt, *self.dt_range) + t_b)
        h_new = ff1 * (_ONE - gate) + gate * ff2
        out = h_new @ self.readout_w + self.readout_b
        pred = out[:, : self.features]
        log_var = np.clip(out[:, self.features :], *self.log_var_range)
        return pred, log_var, h_new
