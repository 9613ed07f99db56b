"""Progress lines of long steps: a line every few seconds with a count and the elapsed
time, also inside one long call, none for a step that ends before the first line."""

from __future__ import annotations

import logging
import re
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

import recsys.models.spectral
from recsys.models import get_model_type
from recsys.progress import Progress

TAIL = re.compile(r"(?:(?P<count>[\d,]+(?:/[\d,]+)?)(?: \w+)? )?\((?:\d+%, )?(?P<elapsed>[\d.]+) s\)$")


def parse(line: str, label: str) -> tuple[str, str | None, float]:
    """(phase, count, elapsed seconds) of a progress line of ``label``."""
    assert line.startswith(f"{label}: "), line
    rest = line[len(label) + 2 :]
    tail = TAIL.search(rest)
    assert tail, line
    phase = rest[: tail.start()].removesuffix(": ")
    return phase, tail["count"], float(tail["elapsed"])


def _lines(caplog, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def _wait_for(condition, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_long_step_logs_its_count_and_elapsed_time(caplog):
    logger = logging.getLogger("recsys.test-progress")
    caplog.set_level(logging.INFO, logger="recsys.test-progress")
    with Progress(logger, "als: recommend", "users", total=1000, every=0.05) as progress:
        progress(250)
        _wait_for(lambda: len(_lines(caplog, "als: recommend")) >= 2)
        progress(1000)
    lines = _lines(caplog, "als: recommend")
    assert len(lines) >= 2
    assert lines[0].startswith("als: recommend: 250/1,000 users (25%, "), lines
    elapsed = [parse(line, "als: recommend")[2] for line in lines]
    assert elapsed == sorted(elapsed)


def test_one_long_call_that_reports_nothing_is_not_silent(caplog):
    """A library call with no count (Annoy's build) still gets lines with the phase and
    the elapsed time, from the background thread."""
    logger = logging.getLogger("recsys.test-progress")
    caplog.set_level(logging.INFO, logger="recsys.test-progress")
    with Progress(logger, "als: dot index", every=0.05) as progress:
        progress.phase("annoy build")
        _wait_for(lambda: len(_lines(caplog, "als: dot index")) >= 2)
    lines = _lines(caplog, "als: dot index")
    assert len(lines) >= 2 and all(line.startswith("als: dot index: annoy build: (") for line in lines)


def test_a_short_step_logs_nothing_but_its_done_line(caplog):
    logger = logging.getLogger("recsys.test-progress")
    caplog.set_level(logging.INFO, logger="recsys.test-progress")
    with Progress(logger, "quiet", "users", total=10, every=60) as progress:
        progress(10)
    with Progress(logger, "summary", "items", total=10, every=60, done_line=True) as progress:
        progress(10)
    assert _lines(caplog, "quiet") == []
    [line] = _lines(caplog, "summary")
    assert line.startswith("summary: 10/10 items (100%, ")


def test_the_thread_ends_with_the_step_also_on_an_error(caplog):
    logger = logging.getLogger("recsys.test-progress")
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError), Progress(logger, "failing", every=0.01, done_line=True):
        raise RuntimeError("boom")
    assert "recsys-progress" not in {t.name for t in threading.enumerate()} - before
    assert not [line for line in _lines(caplog, "failing") if "%" in line]


class EveryReport(Progress):
    """A Progress that logs a line at each phase and count as it is reported, not from
    the timed thread: what the fit reports does not hang on the machine's speed."""

    def phase(self, name: str, total: int | None = None) -> None:
        super().phase(name, total)
        self.logger.info("%s", self.line())

    def __call__(self, done: int, total: int | None = None) -> None:
        super().__call__(done, total)
        self.logger.info("%s", self.line())


def test_a_spectral_fit_reports_its_phases_and_power_iterations(caplog, monkeypatch):
    monkeypatch.setattr(recsys.models.spectral, "Progress", EveryReport)
    caplog.set_level(logging.INFO, logger="recsys")
    rng = np.random.default_rng(0)
    matrix = sp.random(400, 300, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    matrix.data[:] = 1.0
    get_model_type("spectral").fit({"factors": 16, "power_iterations": 6}, matrix, 1, name="spec")
    lines = _lines(caplog, "spec: spectral SVD")
    assert lines, "the SVD logged nothing"
    phases = [parse(line, "spec: spectral SVD")[0] for line in lines]
    expected = ["range of 26 columns", "power iterations", "SVD of 26 x 300"]
    assert list(dict.fromkeys(phases)) == expected, phases
    counts = [parse(line, "spec: spectral SVD")[1] for line in lines if "power iterations" in line]
    assert counts == [f"{done}/6" for done in range(7)], counts
