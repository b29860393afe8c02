"""Memory and disk budgets: estimate before allocating, refuse with the estimate and the limit.

The budget is the memory available now (``MemAvailable`` of ``/proc/meminfo``,
else the physical memory), or the smaller ``--max-memory`` /
``RETINA_MAX_MEMORY`` (bytes, or with a K/M/G/T suffix) when set.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

__all__ = ["available_memory", "memory_budget", "check_memory", "check_disk", "parse_size", "set_max_memory",
           "ResourceError"]

_max_memory: int | None = None


class ResourceError(ValueError):
    """A computation or file that would need more memory or disk than there is (or than allowed)."""


def parse_size(text) -> int:
    """``"8G"``, ``"500M"``, ``"1.5T"`` or a number of bytes -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"a memory size must be a number of bytes or have a K, M, G or T suffix, got {text!r}")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return value


def set_max_memory(nbytes) -> None:
    """The library-wide memory budget (``None``: the memory available)."""
    global _max_memory
    _max_memory = None if nbytes is None else parse_size(nbytes)


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; elsewhere the physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):   # pragma: no cover - non-POSIX
        return 1 << 40


def memory_budget() -> int:
    limits = [available_memory()]
    if _max_memory is not None:
        limits.append(_max_memory)
    env = os.environ.get("RETINA_MAX_MEMORY")
    if env:
        limits.append(parse_size(env))
    return min(limits)


def _gb(n):
    return f"{n / 1e9:.3g} GB"


def check_memory(nbytes, what: str) -> None:
    """Refuse ``what`` when it needs more than the memory budget, naming the estimate and the limit."""
    nbytes = int(nbytes)
    budget = memory_budget()
    if nbytes > budget:
        raise ResourceError(f"{what} needs about {_gb(nbytes)} of memory; {_gb(budget)} is available"
                            f"{' (--max-memory / RETINA_MAX_MEMORY)' if budget < available_memory() else ''}: "
                            "refused before allocating")


def check_disk(path, nbytes, what: str) -> None:
    """Refuse ``what`` when the file system of ``path`` has less free space than ``nbytes``."""
    p = Path(path).resolve()
    probe = p if p.is_dir() else p.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if int(nbytes) > free:
        raise ResourceError(f"{what} needs about {_gb(nbytes)} of disk at {str(probe)!r}; {_gb(free)} is free: "
                            "refused before writing")
