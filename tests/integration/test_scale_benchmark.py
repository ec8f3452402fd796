"""The scale benchmark at its smallest: 2 nodes of 1 slot, small workloads. The shape of its
figures, its table and chart; the figures themselves come from
``python -m benchmarks.scale --nodes 4 --slots 16``."""

from __future__ import annotations

import pytest

from benchmarks.scale import chart, greedy_makespan, run, table

pytestmark = pytest.mark.integration


def test_greedy_makespan_gives_each_task_to_the_slot_that_frees_first():
    assert greedy_makespan([2, 0.05, 2, 0.05] + [0.25] * 8, 4) == 2.0
    assert greedy_makespan([1, 1, 1], 1) == 3


@pytest.mark.timeout(300)
def test_a_tiny_run_reports_every_figure(tmp_path):
    figures = run(nodes=2, slots=1, quick=True, worker_lost_timeout=3)
    assert set(figures) >= {"start", "memory", "connections", "idle_traffic", "makespan",
                            "dispatch", "terminate", "node_kill", "timeline"}
    assert figures["slots"] == 2
    assert figures["start"]["all_registered_s"] > 0
    assert set(figures["start"]["slot_cpu_ms"]) == {"mean", "max"}
    for moment in ("after_start", "after_workload"):
        for who in ("slot", "parent"):
            assert figures["memory"][moment][f"{who}_pss_mb"]["mean"] > 0
    connections = figures["connections"]
    assert connections["max_per_slot"] >= 1 and connections["max_per_parent"] >= 0
    assert connections["server_peak"] >= 2
    assert figures["idle_traffic"]["per_slot_per_s"] >= 0
    assert figures["makespan"]["over_greedy"] >= 0.95
    assert 0 < figures["dispatch"]["of_ideal"] <= 1.05
    terminate = figures["terminate"]
    assert terminate["tasks_stopped_s"] is not None
    assert terminate["serving_again_s"] is not None
    kill = figures["node_kill"]
    assert kill["completed"] and kill["lost"] == kill["duplicated"] == 0, kill
    assert kill["killed_slots"] == 1

    figures["taken"] = "test"
    assert "| terminate: tasks stopped |" in table(figures)
    chart(figures, tmp_path / "scale.png", "test")
    assert (tmp_path / "scale.png").stat().st_size > 10_000
