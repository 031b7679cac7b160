"""Progress of long stages on stderr with rich: named steps (export, calibration, quantization) and rows (batch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


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
        self._description = f"{self._title}: {description}"
        self._progress.update(self._task, description=self._description)
        yield
        self._progress.advance(self._task)

    def note(self, done: str) -> None:
        """Within a long step: say what part of it is DONE (a domain scored, a tensor measured)."""
        self._progress.update(self._task, description=f"{self._description} ({done})")


class RateColumn(ProgressColumn):
    """Rows per second since the bar started (rich's own speed column counts bytes)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class Rows:
    """A bar of rows done out of a total, with rows/s and the time left; rows done before it started
    (a resumed run's) count as done but not toward the rate. `enabled=False` makes it silent."""

    def __init__(self, title: str, total: int, done: int = 0, enabled: bool = True):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
            TimeElapsedColumn(), TextColumn("•"), TimeRemainingColumn(), TextColumn("left"), console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task(title, total=total, completed=done)

    def __enter__(self) -> "Rows":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is not None:
            self._progress.live.transient = True
        self._progress.stop()
        return False

    def advance(self, rows: int) -> None:
        self._progress.advance(self._task, rows)
