"""The anomaly score's scale, one rule for the detector and for everything that explains a
score (the CLI's RARITY column): a surprise of ``S`` nats is ``D = S / ln 10`` decimal digits
of rarity, "as rare as one healthy block of readings in 10^D", and the score is ``D / (1 + D)``.

A module of its own, outside ``gateway.detector``, so that a CLI command that only prints
alerts does not import the detector (numpy and its compiled core: ~0.17 s) to say what a
score means.
"""

from __future__ import annotations

import math
from typing import Final

NATS_PER_DIGIT: Final = math.log(10.0)


def score_of(surprise: float) -> float:
    """The anomaly score in [0, 1) of a surprise in nats: ``D / (1 + D)``, D in decimal
    digits of rarity. Monotone and never exactly 1, so scores rank all the way up."""
    if not surprise > 0.0:
        return 0.0
    digits = surprise / NATS_PER_DIGIT
    return digits / (1.0 + digits)


def surprise_of(score: float) -> float:
    """The inverse of ``score_of``: the surprise (nats) a score stands for."""
    if score <= 0.0:
        return 0.0
    if score >= 1.0:
        return math.inf
    return NATS_PER_DIGIT * score / (1.0 - score)
