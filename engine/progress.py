"""Progress bars for long commands (bench, replay, profile, model prepare), on a terminal only.

A bar goes to stderr when stderr is a terminal and the command was not asked to
be quiet (``--json``); otherwise nothing is drawn, so piped and JSON output stay clean.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


def showing(quiet: bool = False) -> bool:
    """Whether a bar would be drawn: stderr is a terminal and ``quiet`` is off."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress(desc: str, total: int | None = None, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A bar for ``total`` units of work (None: open-ended, shows elapsed time); yields ``advance(n=1)``.

    Example::

        with progress("engine run", total=len(work), quiet=args.json) as advance:
            for item in work:
                run(item)
                advance()
    """
    if not showing(quiet):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               *([MofNCompleteColumn()] if total is not None else []), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(desc, total=total)
        yield lambda n=1: bar.advance(task, n)
