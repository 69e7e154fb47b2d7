"""The benchmarks' meters of processes and of the machine, read from Linux's /proc: CPU time (of a process, one
of its threads, a process tree, every process whose command line matches), RSS and how busy the machine is.

Imported as ``bench.procstat`` by bench/e2e.py, bench/ingest.py, bench/sinks.py and bench/streams.py, which put
the repository root on ``sys.path`` first (they are named like the packages they measure, so their own
directory stays off it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICK_HZ = os.sysconf("SC_CLK_TCK")  # the unit of the CPU times in /proc/.../stat


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """The fields of ``/proc/PID/stat`` (of thread ``tid``'s ``/proc/PID/task/TID/stat`` when given) after the
    command name, which is in parentheses and may hold spaces: [1] is the parent's pid, [11] and [12] the user
    and system CPU time in clock ticks. Raises ``OSError`` when the process (or thread) is gone."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int, tid: int | None = None) -> int:
    """User + system CPU time of a process (all its threads), or of its thread ``tid``, in clock ticks."""
    fields = stat_fields(pid, tid)
    return int(fields[11]) + int(fields[12])


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads), or of its thread ``tid``."""
    return cpu_ticks(pid, tid) / TICK_HZ


def pids() -> list[int]:
    """The processes alive now (some may be gone by the time they are read)."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def command_line(pid: int) -> str:
    """The process's command line, its arguments joined by spaces (``OSError`` when it is gone)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``inferlog ingest --workers N`` serves from child processes)."""
    children: dict[int, list[int]] = {}
    for child in pids():
        try:
            children.setdefault(int(stat_fields(child)[1]), []).append(child)
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (all their threads)."""
    total = 0
    for p in process_tree(pid):
        try:
            total += cpu_ticks(p)
        except OSError:
            continue
    return total / TICK_HZ


def cpu_by_command(labels: Iterable[tuple[str, str]]) -> dict[str, float]:
    """CPU seconds (user + system, all threads) used so far by the live processes, summed per label: each
    process counts for the label of the first ``(pattern, label)`` whose pattern is in its command line, if any."""
    labels = tuple(labels)
    out: dict[str, float] = {}
    for pid in pids():
        try:
            cmd = command_line(pid)
            cpu = cpu_s(pid)
        except OSError:  # gone meanwhile
            continue
        name = next((label for pattern, label in labels if pattern in cmd), None)
        if name is not None:
            out[name] = out.get(name, 0.0) + cpu
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB, summed over the process tree."""
    cur = peak = 0.0
    for p in process_tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                cur += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return cur, peak


def system_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, to show how contended a phase was: busy is all but idle and
    iowait. Only the first 8 fields count: guest time is already in user time."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(f) - f[3] - f[4], sum(f)
