"""Step progress for long stages (export, calibration, quantization), shown on stderr with rich."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Steps:
    """A fixed list of named steps with one bar; `enabled=False` makes it silent (library use)."""

    def __init__(self, title: str, total: int, enabled: bool = True):
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
        )
        self._title = title
        self._task = self._progress.add_task(title, total=total)

    def __enter__(self) -> "Steps":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is not None:  # the error's own line says what happened: leave no stale bar above it
            self._progress.live.transient = True
        self._progress.stop()
        return False

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        self._progress.update(self._task, description=f"{self._title}: {description}")
        yield
        self._progress.advance(self._task)
