"""Measuring: interleaved timing with ``torch.utils.benchmark``, and peak memory of one call.

Time: every round runs each variant once, in a rotated order, so a load spike from other
processes hits all variants alike; ratios are medians of per-round ratios. Memory: the peak
resident set of one call above the resident set just before it, read from Linux's high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs``) in a process started with glibc's mmap
threshold pinned (``MALLOC_MMAP_THRESHOLD_``), so freed large blocks leave the resident set at
once and the resident set tracks live tensors. Timing runs with the default allocator.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch.utils import benchmark

MMAP_THRESHOLD = 65536   # bytes: blocks above this are mmapped, so freeing them returns memory


def compare(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 0,
            threads: int | None = None) -> dict[str, list[float]]:
    """Seconds per call of each variant, per round (interleaved). ``Timer.timeit(1)`` itself runs
    the call twice untimed before the timed one, so every timed call is warmed up; ``warmup``
    adds whole untimed rounds before the first."""
    threads = threads or torch.get_num_threads()
    timers = {k: benchmark.Timer(stmt="fn()", globals={"fn": f}, num_threads=threads, sub_label=k)
              for k, f in variants.items()}
    for _ in range(warmup):
        for t in timers.values():
            t.timeit(1)
    names, times = list(timers), {k: [] for k in timers}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timers[k].timeit(1).median)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b): a measured within the same round as b."""
    return median([x / y for x, y in zip(times[a], times[b])])


# --- memory -------------------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_of(fn: Callable[[], object]) -> int:
    """Peak resident bytes of ``fn()`` above the resident set before it (Linux only)."""
    import gc

    gc.collect()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                       # reset VmHWM to the current resident set
    fn()
    return _status("VmHWM") - base


def resident() -> int:
    return _status("VmRSS")


def run_probe(spec: dict, timeout: float = 1800) -> dict:
    """Run ``python -m benchmarks.probe SPEC`` in a fresh process with the pinned mmap threshold."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.probe", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    """What the figures were measured on."""
    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
