"""Liquid Gateway: an edge agent that reads sensors, scores every reading with a liquid
(CfC) network, keeps alerts in SQLite and forwards them upstream over MQTT."""

import os

# The gateway's matrices are tiny (a batch of liquid states, one asset's channels): BLAS
# threads only cost, and on a Pi they would take the cores the pipeline needs. Set before
# anything imports numpy; an operator's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
