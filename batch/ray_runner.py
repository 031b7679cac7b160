"""Ray mode: the same rows through Ray Data `map_batches` on a pool of actors, each loading the bundle once.

    from_arrow(the pending windows) -> map_batches(BundleWorker, ActorPoolStrategy(size=workers),
        batch_size=window rows, num_cpus=threads per actor) -> iter_batches on the driver, which saves parts

The driver reads INPUT and writes OUTPUT (its parts, then the merge); only the bundle runs on the
cluster, so the bundle's path must exist on every node (a shared folder). Each block is one of
local mode's windows (plan.py) and Ray's batch size is the window's, so each actor call gets
exactly the rows a local runtime call would.
Ray Data restarts an actor that dies (its actors default to max_restarts=-1 and
max_task_retries=-1) and runs its batch again; the driver sees each output block once.

Threads: each actor runs onnxruntime on max(1, CPUs // workers) threads (--threads overrides),
the CPUs being the cluster's (`ray.cluster_resources()`), and claims as many of Ray's CPUs (at
most CPUs / workers), so actors x threads fits the cluster. A Dataset with stages before ours (a read_parquet) also needs
CPUs for them, or Ray waits forever: then the actors claim (CPUs - 1) / workers each.
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgelm.batch.driver import Compute
from edgelm.batch.formats import BatchError
from edgelm.batch.local import worker_threads  # actors share the CPUs as local mode's workers do
from edgelm.batch.plan import Plan, window_rows
from edgelm.batch.tasks import Job, apply
from edgelm.errors import EdgelmError


class BundleWorker:
    """One Ray Data actor: the bundle loaded once, then the job applied to each batch it is given."""

    def __init__(self, bundle: str, job: Job, provider: str, threads: int, fast: bool):
        from edgelm.batch.local import load_bundle

        self.front_end = load_bundle(Path(bundle), provider, threads, fast)
        self.job = job

    def __call__(self, batch: pa.Table) -> pa.Table:
        return apply(self.front_end, batch, self.job)


def init_ray(address: str | None) -> bool:
    """Ray, connected: the one running in this process as it is, else ADDRESS ('auto': a cluster on this
    machine, or a new local one). True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address in (None, "auto") else address, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchError(f"cannot connect to the Ray cluster at {address}: {first}; start it (ray start --head) "
                         "or pass --ray auto for a local one") from None
    return True


@contextmanager
def connected(address: str | None):
    """init_ray for one run; Ray is shut down after it if this started it.

    ray.init installs its own SIGTERM/SIGINT handlers in this process and leaves them after
    shutdown: the ones from before are put back at once, so the driver's SIGTERM handling (save
    the finished rows, one line) works in Ray mode too, and the process is as it was after the run.
    """
    import ray

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    restore = threading.current_thread() is threading.main_thread()  # signal.signal works only there
    started = init_ray(address)
    if restore:
        _set_handlers(handlers)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
        if restore:
            _set_handlers(handlers)


def _set_handlers(handlers: dict) -> None:
    for signum, handler in handlers.items():
        if handler is not None:  # None: set outside Python, cannot be put back
            signal.signal(signum, handler)


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_rows(dataset, bundle: Path, job: Job, workers: int, provider: str = "auto", threads: int | None = None,
             fast: bool = False, upstream: bool = False):
    """DATASET with the job's columns added by WORKERS actors (a lazy Ray Dataset)."""
    import ray.data

    cpus = cluster_cpus()
    threads = worker_threads(cpus, workers, threads)
    claim = min(float(max(threads, 1)), cpus / workers)  # never more than the cluster has, or actors wait forever
    if upstream:
        claim = min(claim, max(cpus - 1, 0.1 * workers) / workers)
    return dataset.map_batches(
        BundleWorker, batch_size=window_rows(job.batch_size), batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=claim,
        fn_constructor_kwargs={"bundle": str(bundle), "job": job, "provider": provider, "threads": threads, "fast": fast},
    )


def ray_compute(plan: Plan, bundle: Path, workers: int, provider: str = "auto", threads: int | None = None,
                fast: bool = False) -> Compute:
    def compute(done: np.ndarray) -> Iterator[pa.Table]:
        import ray.data

        pending = plan.windows(done)
        if not pending:
            return
        mapped = map_rows(ray.data.from_arrow(pending), bundle, plan.job, workers, provider, threads, fast)
        with quiet_ray_data(), one_line_ray_errors():
            yield from mapped.iter_batches(batch_size=None, batch_format="pyarrow")

    return compute


@contextmanager
def quiet_ray_data():
    """Our bar instead of Ray Data's bars and log lines, for this run only."""
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.print_on_execution_start
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars, context.print_on_execution_start = False, False
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "fewer input blocks than actors": not the user's business
            yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        logger.setLevel(level)


@contextmanager
def one_line_ray_errors():
    """An edgelm error raised inside an actor arrives wrapped in Ray's exceptions: raise it as it was."""
    try:
        yield
    except EdgelmError:
        raise
    except Exception as e:
        cause = _edgelm_cause(e)
        if cause is None:
            raise
        raise type(cause)(*cause.problems) from None


def _edgelm_cause(e: BaseException | None) -> EdgelmError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, EdgelmError):
            return e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None
