"""What the machine was doing while ``kdlab bench`` timed: its kind (the CPU features that decide speed) and
whether other work shared it.

A speed ratio holds only for the machine kind it was measured on, and only when nothing else ran: under
contention the reference loop (DataLoader worker processes) slows far more than kdlab, so a busy machine inflates
kdlab's ratios. :class:`LoadProbe` measures, over the benchmark's wall time, the CPU time the rest of the machine
spent (all CPUs' busy time from ``/proc/stat`` minus this process tree's own), and the load average before the
benchmark started; :func:`assess` turns that and the spread of the per-round ratios into a verdict with reasons.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdlab.version import cpu_features

#: other processes may use at most this share of the machine's CPU time during a benchmark that calls itself quiet
OTHER_CPU_LIMIT = 0.10
#: a 1-minute load average above this many runnable tasks per core before the start marks the machine busy
LOAD_PER_CORE_LIMIT = 0.5
#: the per-round ratios of one configuration may spread (max - min) / median by at most this much
SPREAD_LIMIT = 0.25


def machine_kind(features: list[str] | None = None) -> str:
    """The class of machine a ratio belongs to: ``x86_64-amx`` (AMX-BF16), ``x86_64-avx512bf16``,
    ``x86_64-avx512``, ``x86_64-avx2``, else the architecture name (``aarch64``, ...)."""
    features = cpu_features() if features is None else features
    arch = platform.machine() or "unknown"
    for flag, kind in (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in features:
            return f"{arch}-{kind}"
    return arch


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / _ticks()


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # fields after "pid (comm)": state is field 3 of the man page


def _own_tree_seconds() -> float | None:
    """CPU-seconds of this process, its live descendants (DataLoader workers) and the children they reaped."""
    root = str(os.getpid())
    parents: dict[str, str] = {}
    stats: dict[str, list[str]] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            stats[pid], parents[pid] = fields, fields[1]
    if root not in stats:
        return None
    tree = {root}
    changed = True
    while changed:
        grown = {pid for pid, parent in parents.items() if parent in tree} - tree
        changed = bool(grown)
        tree |= grown
    # utime, stime, cutime, cstime are fields 14-17 of proc(5), i.e. 11-14 of what follows the comm
    return sum(sum(int(v) for v in stats[pid][11:15]) for pid in tree) / _ticks()


@dataclass
class LoadProbe:
    """Started before the benchmark and stopped after it: the rest of the machine's CPU use in between."""

    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_before: tuple[float, float, float] | None = None
    _start: tuple[float, float | None, float | None] | None = None

    def start(self) -> LoadProbe:
        try:
            self.load_before = os.getloadavg()
        except OSError:
            self.load_before = None
        self._start = (time.perf_counter(), _machine_busy_seconds(), _own_tree_seconds())
        return self

    def stop(self) -> dict:
        wall0, busy0, own0 = self._start
        wall = time.perf_counter() - wall0
        busy1, own1 = _machine_busy_seconds(), _own_tree_seconds()
        record: dict = {"cores": self.cores, "wall_seconds": round(wall, 2),
                        "load_average_before": None if self.load_before is None else
                        [round(v, 2) for v in self.load_before]}
        try:
            record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            record["load_average_after"] = None
        if None in (busy0, busy1, own0, own1) or wall <= 0:
            record["other_cpu_share"] = None
        else:
            others = max((busy1 - busy0) - (own1 - own0), 0.0)
            record["own_cpu_seconds"] = round(own1 - own0, 2)
            record["other_cpu_seconds"] = round(others, 2)
            record["other_cpu_share"] = round(others / (wall * self.cores), 4)
        return record


def ratio_spread(ratios: list[float]) -> float:
    """(max - min) / median of a configuration's per-round ratios (0 for a single round)."""
    middle = statistics.median(ratios)
    return (max(ratios) - min(ratios)) / middle if middle else 0.0


def assess(load: dict, spreads: dict[str, float]) -> dict:
    """``{"busy": bool, "reasons": [...]}`` from a :meth:`LoadProbe.stop` record and each timed run's ratio spread."""
    reasons = []
    share = load.get("other_cpu_share")
    if share is not None and share > OTHER_CPU_LIMIT:
        reasons.append(f"other processes used {share:.0%} of the machine's CPU time while it ran "
                       f"(limit {OTHER_CPU_LIMIT:.0%})")
    before = load.get("load_average_before")
    if before is not None and before[0] > LOAD_PER_CORE_LIMIT * load["cores"]:
        reasons.append(f"load average {before[0]:.2f} on {load['cores']} cores before it started")
    for name, spread in spreads.items():
        if spread > SPREAD_LIMIT:
            reasons.append(f"{name}: per-round ratios spread {spread:.0%} of their median (limit {SPREAD_LIMIT:.0%})")
    state = {"busy": bool(reasons), "reasons": reasons}
    if share is None:
        state["note"] = "other processes' CPU time could not be read (no /proc)"
    return state
