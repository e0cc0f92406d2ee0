"""CPU time and resident memory of this process and of the inference worker (Linux /proc; no psutil).

The report divides these by the number of devices, so they must cover everything the simulation
costs: every thread of this process (`getrusage` counts them all) plus the worker process, which
`RUSAGE_CHILDREN` would only count once it has exited.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int | None = None) -> float:
    """Resident set size now, in MiB (0 if the process is gone or /proc is unavailable)."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        if pid is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return 0.0
    return pages * _PAGE / 1024**2


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return 0.0
