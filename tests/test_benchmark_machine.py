"""benchmarks/machine.py: the machine's own idle and steal time around a run."""

from __future__ import annotations

from collections import namedtuple

import psutil

from benchmarks.machine import cpu_shares

Times = namedtuple("Times", "user system idle steal")


def test_steal_is_the_share_of_all_cpu_time_the_hypervisor_took() -> None:
    before = Times(user=10.0, system=5.0, idle=100.0, steal=1.0)
    after = Times(user=40.0, system=15.0, idle=150.0, steal=11.0)  # 100 s spent, 10 stolen
    assert cpu_shares(before, after) == {"machine_idle_pct": 50.0, "machine_steal_pct": 10.0}
    assert cpu_shares(after, after) == {"machine_idle_pct": 0.0, "machine_steal_pct": 0.0}


def test_real_readings_give_shares_within_range() -> None:
    before = psutil.cpu_times()
    sum(i * i for i in range(200_000))
    shares = cpu_shares(before, psutil.cpu_times())
    assert all(0.0 <= v <= 100.0 for v in shares.values()), shares
