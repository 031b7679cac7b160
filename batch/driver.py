"""What every run that writes OUTPUT does around its compute: parts, the progress bar, the merge.

The runners (local.py, ray_runner.py) only turn pending rows into result batches; here those
batches are saved as parts while the bar counts them, and OUTPUT is merged at the end. Ctrl-C or
SIGTERM saves the rows already computed and stops with one line saying how to go on.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

import numpy as np
import pyarrow as pa

from edgelm.batch.formats import write_file
from edgelm.batch.parts import Parts
from edgelm.batch.plan import Plan, Summary
from edgelm.progress import Rows

# the runner: (row ids already done) -> result batches of the pending rows, in any order
Compute = Callable[[np.ndarray], Iterator[pa.Table]]


def write_output(plan: Plan, settings: dict, compute: Compute, force: bool, part_rows: int, progress: bool,
                 where: str = "") -> Summary:
    start = time.perf_counter()
    with Parts(plan.output, settings, force, part_rows) as parts, _sigterm_as_interrupt():
        resumed = len(parts.done)
        results = compute(parts.done)
        try:
            with Rows(f"{plan.job.task} {plan.output.name}", plan.total, resumed, enabled=progress) as bar, \
                    closing(results):  # an interrupted runner stops its workers before the rows are saved
                for result in results:
                    parts.add(result, plan.file_index)
                    bar.advance(result.num_rows)
        except KeyboardInterrupt as e:
            parts.save_all()
            raise KeyboardInterrupt(f"{str(e) or 'interrupted'}; the rows finished so far are saved in {parts.folder}: "
                                    "run the same command again to go on") from None
        bad = parts.merge(plan.outputs, plan.file_rows, plan.is_folder, write_file,
                          lambda f: plan.empty_output(f, plan.job.schema()))
    return Summary(plan.output, plan.total, plan.total - resumed, resumed, bad, time.perf_counter() - start, where)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: finished rows saved, one line."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("interrupted by SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
