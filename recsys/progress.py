"""Progress lines for the steps of a run that can take minutes (the spectral SVD, index
builds, probes, recommendations and similar items): at most one line every few seconds,
each with the count done and the elapsed time, so a long step is never silent, also
inside one long library call, and a short one does not flood the log."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from types import TracebackType

EVERY_SECONDS = 5.0
"""The time between two progress lines of one step."""

CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("recsys_cancel", default=None)
"""Set in the context of work that others may call off (a model's chain among models run
side by side): once the event is set, the next progress report raises :class:`Cancelled`."""


class Cancelled(Exception):
    """The step was called off (:data:`CANCEL`): another part of the run failed."""


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the work of this context was called off."""
    event = CANCEL.get()
    if event is not None and event.is_set():
        raise Cancelled("called off: another model of the run failed")


class Progress:
    """A step's progress, logged by a background thread every ``every`` seconds while the
    step runs: ``label: [phase: ]done/total unit (percent, elapsed s)``.

    Used as a context manager around the step; the step reports what it has done by
    calling it, ``progress(done, total)`` (the callback form the search functions and the
    index builds take), and names what it is doing with :meth:`phase`. A library call
    that reports nothing (Annoy's build, faiss's training) still gets a line every
    ``every`` seconds with the elapsed time. ``done_line``: on a normal exit, log one
    last line with the final count and the time (a summary even for a short step).

    The thread runs in a copy of the caller's context, so its lines go where the step's
    would (a Prefect flow run's log, for one).
    """

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        unit: str = "",
        total: int | None = None,
        every: float | None = None,
        done_line: bool = False,
    ):
        """every: seconds between lines, :data:`EVERY_SECONDS` by default."""
        self.logger, self.label, self.unit = logger, label, unit
        self.every = EVERY_SECONDS if every is None else every
        self.done_line = done_line
        self.state: tuple[str, int, int | None] = ("", 0, total)
        """(phase, done, total), replaced whole: the thread never sees half an update."""
        self.started = time.perf_counter()
        self.lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        """Report the count done; raises :class:`Cancelled` if the work was called off."""
        check_cancelled()
        phase, _, known = self.state
        self.state = (phase, done, known if total is None else total)

    def phase(self, name: str, total: int | None = None) -> None:
        """Start a phase of the step (``power iterations``), its count from zero; raises
        :class:`Cancelled` if the work was called off."""
        check_cancelled()
        self.state = (name, 0, total)

    def line(self) -> str:
        """``label: [phase: ][done[/total] [unit] ](percent, elapsed s)``."""
        phase, done, total = self.state
        head = f"{self.label}: {phase}: " if phase else f"{self.label}: "
        unit = f" {self.unit}" if self.unit else ""
        elapsed = f"{time.perf_counter() - self.started:.1f} s"
        if total:
            return f"{head}{done:,}/{total:,}{unit} ({100.0 * done / total:.0f}%, {elapsed})"
        if done:
            return f"{head}{done:,}{unit} ({elapsed})"
        return f"{head}({elapsed})"

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.logger.info("%s", self.line())
            self.lines += 1

    def __enter__(self) -> Progress:
        self.started = time.perf_counter()
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name="recsys-progress", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if kind is None and self.done_line:
            _, done, total = self.state
            self.state = ("", done, total)
            self.logger.info("%s", self.line())
