"""Local mode: one process loads the bundle once and runs the pending rows window by window (plan.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgelm.batch.driver import Compute
from edgelm.batch.plan import Plan
from edgelm.batch.tasks import apply


def load_bundle(bundle: Path, provider: str = "auto", threads: int | None = None, fast: bool = False):
    """The runtime's front end for BUNDLE (threads None: the runtime's default, the CPUs this process may use)."""
    from edgelm.runtime import load

    return load(bundle, provider=provider, threads=threads, fast=fast)


def local_compute(front_end, plan: Plan) -> Compute:
    def compute(done: np.ndarray) -> Iterator[pa.Table]:
        for window in plan.windows(done):
            yield apply(front_end, window, plan.job)

    return compute
