"""edgelm.batch: run a bundle over a corpus, in one process or on a Ray cluster, resumably.

    from edgelm.batch import run
    run("./minilm-int8", "texts.parquet", "vectors.parquet")              # local: writes OUTPUT, returns a Summary
    run("./minilm-int8", "texts.parquet", "vectors.parquet", ray="auto", workers=2)  # the same on Ray actors
    ds = run("./minilm-int8", ray.data.read_parquet(...), workers=4)        # a Ray Dataset in, a lazy one out
    table = run("./classifier", pyarrow_table)                             # a Table in, a Table out

Layers, one job each:
    formats.py     JSONL, CSV and parquet files and folders with pyarrow; the format from the suffix
    checks.py      bad rows (null, not text, empty, only whitespace, too long) and their reasons
    tasks.py       one batch of rows through the bundle: embed, classify or generate; the columns added
    decode.py      generation with a seed per row (seed + row id), so a row's text ignores its batch
    plan.py        row ids, the pending batches, OUTPUT's layout, the run's settings, all checked first
    parts.py       resumable output: parts beside OUTPUT, written atomically, merged in row-id order
    driver.py      parts + progress bar + merge around a runner
    local.py       local mode: one process, workers on threads of it
    ray_runner.py  Ray mode: Ray Data map_batches over a pool of actors

Needs the `batch` extra (pyarrow), and for Ray mode the `ray` extra. Usage, row ids, resume rules
and threads: docs/batch.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelm.batch.formats import FORMATS, BatchError
from edgelm.batch.plan import Summary
from edgelm.batch.tasks import ROW_ID, TASKS, Job

PART_ROWS = 1024  # rows per saved part: what a killed run can lose at most (or PART_SECONDS' worth)


def run(bundle: str | Path, data: Any, output: str | Path | None = None, *, column: str = "text",
        task: str | None = None, batch_size: int = 32, ray: str | None = None, workers: int | None = None,
        threads: int | None = None, provider: str = "auto", fast: bool = False, force: bool = False,
        output_format: str | None = None, chat: bool | None = None, stop: tuple[str, ...] | list[str] = (),
        truncate_prompt: bool = False, part_rows: int = PART_ROWS, progress: bool = True,
        **generation: Any):
    """Apply BUNDLE to every row of DATA's COLUMN; see the module docstring for the shapes.

    DATA: a path (a .jsonl, .csv or .parquet file, or a folder of them), a pyarrow Table, a pandas
    DataFrame or a Ray Dataset. With OUTPUT (DATA a path) the results are written there,
    resumably, and a Summary is returned. Without it they come back: a Table in local mode; a lazy
    Ray Dataset in Ray mode (`ray` given, or DATA a Dataset), carrying ROW_ID to sort by (a Ray
    Dataset's own order is kept only if it has a ROW_ID column).
    task: embed, classify or generate (default: what the bundle serves); ray: "auto" or an
    address; workers: copies of the bundle working side by side (threads of this process, or Ray
    actors; default: one per CPU, each on one thread); threads: onnxruntime threads per
    worker (default: the CPUs shared among the workers).
    generation: the runtime's options (max_new_tokens, temperature, top_k, top_p,
    repetition_penalty, seed); a seeded sampling run seeds row i with seed + i.
    """
    from edgelm.runtime.manifest import read_manifest

    bundle = Path(bundle).expanduser()
    job = make_job(read_manifest(bundle), str(bundle), task, column, batch_size, chat, stop, truncate_prompt, generation)
    _check_counts(workers=workers, part_rows=part_rows)
    if output_format is not None and output_format not in FORMATS:
        raise BatchError(f"output_format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    runtime = {"provider": provider, "threads": threads, "fast": fast}
    if _is_ray_dataset(data):
        if output is not None:
            raise BatchError("a Ray Dataset gives a Dataset back (write it with its write_* calls); "
                             "to write OUTPUT resumably, pass INPUT as a path")
        return _dataset_results(data, bundle, job, ray, workers, runtime)
    if output is None:
        return _results(data, bundle, job, ray, workers, runtime, progress)
    if not isinstance(data, (str, Path)):
        raise BatchError("writing OUTPUT resumably needs INPUT as a path (rows are known by their place in it); "
                         "for a Table or DataFrame leave output out to get the results back")
    from edgelm.batch.driver import write_output
    from edgelm.batch.plan import plan_files

    plan = plan_files(Path(data).expanduser(), Path(output).expanduser().absolute(), job, output_format)
    settings = plan.settings(bundle)
    if ray is None:
        from edgelm.batch.local import local_compute

        front_ends, where = _local_workers(bundle, workers, runtime)
        return write_output(plan, settings, local_compute(front_ends, plan), force, part_rows, progress, where)
    from edgelm.batch.local import default_workers, worker_threads
    from edgelm.batch.ray_runner import cluster_cpus, connected, ray_compute

    with connected(ray):
        cpus = cluster_cpus()
        workers = workers or default_workers(cpus)
        where = f"Ray, {_count(workers, 'actor')} x {_threads(worker_threads(cpus, workers, threads))}"
        return write_output(plan, settings, ray_compute(plan, bundle, workers, **runtime), force, part_rows, progress, where)


def _local_workers(bundle: Path, workers: int | None, runtime: dict) -> tuple[list, str]:
    """Local mode's workers (copies of the bundle, threads of this process) and how they run, for the summary."""
    from edgelm.batch.local import default_workers, load_workers, worker_threads
    from edgelm.runtime.threads import usable_cpus

    cpus = usable_cpus().count  # the runtime's count: affinity and CPU quota
    workers = workers or default_workers(cpus)
    threads = worker_threads(cpus, workers, runtime["threads"])
    front_ends = load_workers(bundle, workers, runtime["provider"], threads, runtime["fast"])
    return front_ends, f"local, {_count(workers, 'worker')} x {_threads(front_ends[0].bundle.threads.count)}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n > 1 else ''}"


def _threads(n: int) -> str:
    return "onnxruntime's own thread count" if n == 0 else f"{n} thread{'s' if n > 1 else ''}"


def make_job(manifest, bundle: str, task: str | None, column: str, batch_size: int, chat: bool | None,
             stop, truncate_prompt: bool, generation: dict[str, Any]) -> Job:
    """The Job for BUNDLE, every option checked (one line for the first wrong one)."""
    from edgelm.batch.tasks import choose_task
    from edgelm.runtime.generator import OPTION_NAMES, GeneratorParams

    if task is not None and task not in TASKS:
        raise BatchError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    task = choose_task(manifest.task, task, bundle)
    _check_counts(batch_size=batch_size)
    if not isinstance(column, str) or not column:
        raise BatchError(f"column must be a column name, got {column!r}")
    known = (*OPTION_NAMES, "json_schema")
    unknown = sorted(set(generation) - set(known))
    if unknown:
        raise BatchError(f"unknown option(s) {', '.join(unknown)}; generation options are {', '.join(known)}")
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    options = {k: v for k, v in generation.items() if v is not None}
    if task != "generate":
        given = [f"--{k.replace('_', '-')}" for k in options] + (["--stop"] if stop else []) + (["--chat"] if chat else [])
        if given:
            raise BatchError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --task generate only; "
                             f"this run is --task {task}")
        return Job(task, column, batch_size, bool(truncate_prompt))
    if not all(isinstance(s, str) and s for s in stop):
        raise BatchError(f"stop must be non-empty strings, got {stop!r}")
    from edgelm.errors import GenerationError

    try:
        params = GeneratorParams.resolve(manifest.generation, **sampling(options))  # the runtime's checks, before any row runs
    except GenerationError as e:
        raise BatchError(str(e)) from None
    schema = options.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise BatchError(f"json_schema must be a JSON schema (a dict), got {type(schema).__name__}")
    chat = bool(manifest.chat_template_file) if chat is None else bool(chat)
    return Job(task, column, batch_size, bool(truncate_prompt), chat, stop, options, params.seeded_sampling)


def sampling(options: dict[str, Any]) -> dict[str, Any]:
    """A generate job's options without json_schema: what GeneratorParams takes."""
    return {k: v for k, v in options.items() if k != "json_schema"}


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BatchError(f"{name} must be a whole number >= 1, got {value!r}")


def _is_ray_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("ray.data")


def _results(data: Any, bundle: Path, job: Job, ray: str | None, workers: int | None, runtime: dict, progress: bool):
    """DATA's rows with the results: a Table (local mode) or a lazy Ray Dataset (Ray mode)."""
    import numpy as np
    import pyarrow as pa

    from edgelm.batch.plan import plan_files, plan_table

    given_ids = False
    if isinstance(data, (str, Path)):
        plan = plan_files(Path(data).expanduser(), None, job)
    else:
        table = pa.Table.from_pandas(data, preserve_index=False) if type(data).__module__.startswith("pandas") else data
        if not isinstance(table, pa.Table):
            raise BatchError(f"data must be a path, a pyarrow Table, a pandas DataFrame or a Ray Dataset, "
                             f"got {type(data).__name__}")
        given_ids = ROW_ID in table.column_names
        plan = plan_table(table, job, row_ids_given=given_ids)
    nothing_done = np.zeros(0, dtype=np.int64)
    if ray is not None:
        import ray as ray_module

        from edgelm.batch.local import default_workers
        from edgelm.batch.ray_runner import cluster_cpus, init_ray, map_rows

        init_ray(ray)  # left running: the Dataset runs when the caller consumes it
        dataset = ray_module.data.from_arrow(plan.windows(nothing_done))
        return map_rows(dataset, bundle, job, workers or default_workers(cluster_cpus()), upstream=False, **runtime)
    from contextlib import closing

    from edgelm.batch.local import local_compute
    from edgelm.progress import Rows

    compute = local_compute(_local_workers(bundle, workers, runtime)[0], plan, ordered=True)
    results = []
    with Rows(job.task, plan.total, enabled=progress) as bar, closing(compute(nothing_done)) as computed:
        for result in computed:
            results.append(result)
            bar.advance(result.num_rows)
    table = pa.concat_tables(results)
    return table if given_ids else table.drop_columns([ROW_ID])


def _dataset_results(dataset, bundle: Path, job: Job, ray: str | None, workers: int | None, runtime: dict):
    """The caller's Ray Dataset with the results added (lazy); its columns are checked now."""
    from edgelm.batch.local import default_workers
    from edgelm.batch.ray_runner import cluster_cpus, init_ray, map_rows
    from edgelm.batch.tasks import check_columns

    init_ray(ray)
    columns = dataset.schema().names
    check_columns(columns, job, "the Dataset", row_ids_given=True)
    if job.seeded and ROW_ID not in columns:
        raise BatchError(f"sampling with a seed seeds each row with seed + its {ROW_ID}; add a {ROW_ID} column "
                         "(the row's position) to the Dataset, or leave seed out")
    upstream = type(dataset).__name__ != "MaterializedDataset"  # its own stages need CPUs beside the actors
    return map_rows(dataset, bundle, job, workers or default_workers(cluster_cpus()), upstream=upstream, **runtime)


__all__ = ["run", "Summary", "BatchError", "ROW_ID"]
