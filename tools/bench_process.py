"""Measuring one whole process for the side-by-side benchmarks (bench_qwen_vl.py,
bench_anyres.py): wall time, and peak RSS as the kernel reports it through wait4."""
from __future__ import annotations

import os
import subprocess
import sys
import time


def timed(cmd: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS bytes and exit status of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    if status != 0:
        print(f"  FAILED: {' '.join(cmd[:3])} ...: {err[-1] if err else status}", file=sys.stderr)
    return wall, usage.ru_maxrss * 1024, status
