"""Alternated, median timings of runs compared side by side; GDAL-free, so benchmarks that run where
GDAL is missing (``benchmarks/cuda.py`` on a GPU machine) time their runs the same way."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable, Dict, List, Tuple

Timing = Tuple[float, float]  # (wall seconds, CPU seconds of this process: every thread's)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def alternate(runs: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, Timing]:
    """Median wall and CPU time of each run, the runs alternated ``repeats`` times. CPU time barely
    moves when other jobs share the cores (wall time does): the two together tell load from work."""
    samples: Dict[str, List[Timing]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            run()
            samples[name].append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in samples.items()}
