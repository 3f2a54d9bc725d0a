"""SIGKILL the real gateway at random moments while it forwards; nothing committed is lost.

30 kills here, while forwarding, during start-up and during the SIGTERM drain (the same loop
runs 1,000+ times with tools/soak_kill.py). After every kill the database must pass
``PRAGMA integrity_check`` and, for a gateway that was online, the broker must publish
``offline``; at the end every alert ever committed to the outbox must have reached the
upstream subscriber, first arrivals in outbox order, duplicates at most one in-flight window
per kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tools.soak_kill import run_soak

if TYPE_CHECKING:
    from tests.conftest import Broker

KILLS = 30


@pytest.mark.slow
def test_sigkill_while_forwarding_loses_no_committed_alert(broker: Broker, tmp_path: Path) -> None:
    phases = ("running", "startup", "drain")
    result = run_soak(
        KILLS, tmp_path / "soak", broker.host, broker.port, seed=5, max_wait=1.0, phases=phases
    )
    print("kill soak:", result)  # shown with -s; the duplicate rate is part of the report
    kills = result["kills_by_phase"]
    assert all(kills[p] > 0 for p in phases) and sum(kills.values()) == KILLS
    assert result["offline_will_seen"] == kills["running"] + kills["drain"]
    assert result["alerts_committed"] > KILLS  # alerts really were flowing while we killed
    assert result["changes_without_outbox_row"] == 0  # every recorded alert was queued upstream
    assert result["alerts_missing"] == 0
    assert result["in_outbox_order"]
    assert result["duplicates"] <= KILLS * result["max_inflight"]
    assert result["final_exit_code"] == 0
