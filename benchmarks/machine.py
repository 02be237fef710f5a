"""What the machine itself did while a benchmark ran."""

from __future__ import annotations

from typing import Any


def cpu_shares(before: Any, after: Any) -> dict[str, float]:
    """The machine's idle and steal time between two ``psutil.cpu_times()`` readings, in
    percent of all its CPU time. Steal is CPU the hypervisor gave to other virtual machines: on
    a shared host a run with a busy neighbour is slower for reasons outside the code, so runs
    are compared only at similar steal."""
    spent = {f: getattr(after, f) - getattr(before, f) for f in after._fields}
    total = sum(spent.values()) or 1.0
    return {
        "machine_idle_pct": round(100 * spent.get("idle", 0.0) / total, 1),
        "machine_steal_pct": round(100 * spent.get("steal", 0.0) / total, 1),
    }
