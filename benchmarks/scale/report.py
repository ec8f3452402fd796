"""The figures of a scale run as a Markdown table and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.scale.phases import RECOVERY_TARGET_S, TERMINATE_TARGET_S


def _met(value: float | None, target: float) -> str:
    return "no figure" if value is None else ("met" if value <= target else "MISSED")


def table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    start, memory = figures["start"], figures["memory"]
    idle, connections = figures["idle_traffic"], figures["connections"]
    makespan, dispatch, end = figures["makespan"], figures["dispatch"], figures["terminate"]
    kill = figures["node_kill"]

    def pss(moment: str, who: str) -> str:
        spread = memory[moment][f"{who}_pss_mb"]
        return f"{spread['mean']} MB mean, {spread['max']} MB max"

    rows = [
        ("start: all slots registered", f"{start['all_registered_s']} s", ""),
        ("start: CPU per slot", f"{start['slot_cpu_ms']['mean']:.0f} ms mean, "
                                f"{start['slot_cpu_ms']['max']:.0f} ms max", ""),
        ("start: CPU per parent", f"{start['parent_cpu_ms']['mean']:.0f} ms mean, "
                                  f"{start['parent_cpu_ms']['max']:.0f} ms max", ""),
        ("PSS per slot, idle after start", pss("after_start", "slot"), ""),
        ("PSS per slot, idle after workloads", pss("after_workload", "slot"), ""),
        ("PSS per parent, idle after workloads", pss("after_workload", "parent"), ""),
        ("Redis connections per slot (max)", str(connections["max_per_slot"]),
         _by_phase(connections["by_phase"], "per_slot")),
        ("Redis connections per parent (max)", str(connections["max_per_parent"]),
         _by_phase(connections["by_phase"], "per_parent")),
        ("Redis clients at peak (server)", str(connections["server_peak"]),
         f"{figures['slots']} slots, {figures['nodes']} parents"),
        ("idle commands per slot per s", str(idle["per_slot_per_s"]),
         f"{idle['commands']} in {idle['seconds']:g} s"),
        ("makespan / greedy schedule", f"{makespan['over_greedy']}",
         f"{makespan['makespan_s']} s vs {makespan['greedy_s']} s, {makespan['tasks']} tasks"),
        ("dispatch: gap between tasks on a slot",
         f"{makespan['slot_gap_ms']['mean']} ms mean, {makespan['slot_gap_ms']['max']} ms max",
         f"first task started after {makespan['first_start_ms']} ms"),
        ("dispatch rate, 50 ms tasks", f"{dispatch['tasks_per_s']} tasks/s",
         f"{dispatch['of_ideal']:.0%} of the ideal {dispatch['ideal_per_s']:g}/s"),
        ("terminate: tasks stopped", f"{end['tasks_stopped_s']} s",
         f"target <= {TERMINATE_TARGET_S:g} s: {_met(end['tasks_stopped_s'], TERMINATE_TARGET_S)}"
         f"; {end['still_beating_after_2s']} still running after 2 s"),
        ("terminate: every slot serves again", f"{end['serving_again_s']} s",
         f"target <= {RECOVERY_TARGET_S:g} s: {_met(end['serving_again_s'], RECOVERY_TARGET_S)}"
         f"; {end['waves']} waves"),
        ("terminate: nodes' CPU in that window", f"{end['node_cpu_s']} s",
         f"over {end['window_s']} s; load {end['loadavg_1m']['before']} -> "
         f"{end['loadavg_1m']['after']}"),
    ]
    if kill is not None:
        rows += [
            ("node kill: every result once",
             "yes" if kill["completed"] else
             f"NO: {kill['lost']} lost, {kill['duplicated']} twice"
             + (", stalled" if kill["stalled"] else ""),
             f"node killed at {kill['killed_at_s']} s"),
            ("node kill: makespan", f"{kill['makespan_s']} s",
             f"+{kill['extra_s']} s over {kill['without_kill_s']} s without the kill"),
        ]
    lines = ["| measure | figure | notes |", "|---|---|---|"]
    lines += [f"| {name} | {figure} | {notes} |" for name, figure, notes in rows]
    return "\n".join(lines)


def _by_phase(phases: dict[str, dict[str, int]], who: str) -> str:
    return ", ".join(f"{most[who]} {phase}" for phase, most in phases.items()
                     if phase in ("start", "idle", "makespan", "terminate"))


def chart(figures: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    timeline = figures["timeline"]
    ax = axes[0][0]
    ax.plot([t for t, _ in timeline["connected_clients"]],
            [n for _, n in timeline["connected_clients"]], color="#4c72b0")
    for at, name in timeline["phases"]:
        ax.axvline(at, color="grey", linewidth=0.6, linestyle=":")
        ax.text(at, ax.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=7)
    ax.set_xlabel("s since the nodes started", fontsize=8)
    ax.set_ylabel("clients Redis sees", fontsize=8)
    ax.set_title("Redis connections", fontsize=9)

    end, kill = figures["terminate"], figures["node_kill"]
    times = [("all slots registered", figures["start"]["all_registered_s"], None),
             ("terminate: tasks stopped", end["tasks_stopped_s"], TERMINATE_TARGET_S),
             ("terminate: all slots serve", end["serving_again_s"], RECOVERY_TARGET_S),
             ("makespan", figures["makespan"]["makespan_s"], None),
             ("greedy schedule", figures["makespan"]["greedy_s"], None)]
    if kill is not None:
        times.append(("makespan, node killed", kill["makespan_s"], None))
    _bars(axes[0][1], times, "seconds (| = target)")

    memory = figures["memory"]
    _bars(axes[1][0], [
        (f"{who} PSS {stat}, {moment.replace('_', ' ')}", memory[moment][f"{who}_pss_mb"][stat],
         None)
        for who in ("slot", "parent") for moment in ("after_start", "after_workload")
        for stat in ("mean", "max")], "MB")

    _bars(axes[1][1], [
        ("makespan / greedy", figures["makespan"]["over_greedy"], None),
        ("dispatch rate / ideal", figures["dispatch"]["of_ideal"], None),
        ("Redis connections per slot", figures["connections"]["max_per_slot"], None),
        ("Redis connections per parent", figures["connections"]["max_per_parent"], None),
        ("idle commands per slot per s", figures["idle_traffic"]["per_slot_per_s"], None),
    ], "ratio / count")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, rows: list[tuple[str, float | None, float | None]], label: str) -> None:
    names = [name for name, _, _ in rows]
    values = [value if value is not None else 0.0 for _, value, _ in rows]
    colours = ["#dd8452" if target is not None and (value is None or value > target)
               else "#4c72b0" for _, value, target in rows]
    ax.barh(names, values, color=colours)
    for y, (_, value, target) in enumerate(rows):
        ax.text(values[y], y, f" {value}" if value is not None else " none", va="center",
                fontsize=8)
        if target is not None:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=1.2)
    ax.invert_yaxis()
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
