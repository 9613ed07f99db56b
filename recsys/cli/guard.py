"""The process and signal guard of a `recsys run`: Ctrl-C, SIGTERM, the run's timeout and
the loss of its Prefect API end it at once, its staging folder removed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from recsys import signals, storage
from recsys.errors import RecsysError


class RunGuard:
    """Ends a `recsys run` cleanly and at once on Ctrl-C (SIGINT), SIGTERM (``docker
    stop``, ``systemctl stop``), the outer timeout or the loss of its Prefect API: removes
    the run's staging folder, ends every child process (Prefect's temporary API server,
    Dask workers), prints one line and exits 130 / 143 / 3 (:mod:`recsys.signals`).

    A run that had already published stays published; ``CURRENT`` moves only as the
    last step of publishing, so it never names a run that was cut off.
    """

    def __init__(self, root: str, run_id: str):
        self.layout = storage.RunLayout(Path(root), run_id)

    def cleanup(self) -> str:
        """Remove the staging folder if this process made it (never a second writer's:
        its owner token; what the run's threads write into it meanwhile too, until it stays
        away, at most a second); say whether the run had been published."""
        staged = storage.remove_own_staging(self.layout, settle=1.0)
        published = storage.is_regular(self.layout.published().success) and not staged
        return f"run {self.layout.run_id} had been published" if published else "nothing published"

    def stop(self, code: int, reason: str) -> None:
        signals.stop(code, reason)

    def watch_signals(self) -> None:
        signals.install()
        signals.on_stop("run", self.cleanup)

    def watch_api(self, every: float = 1.0, grace: float = 20.0) -> threading.Event:
        """End the run (exit 3) once its Prefect API is gone: at once when the temporary
        API this process started exits, or when a configured API has not answered its
        health check for ``grace`` seconds. Prefect's client would otherwise retry for
        as long as the run's timeout. Returns the event that ends the watch."""
        from flows import temporary_api

        done = threading.Event()
        api = temporary_api.started()
        if api is None:
            from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

            url, key = PREFECT_API_URL.value(), PREFECT_API_KEY.value()
            if not url:
                return done
            every = max(every, 5.0)

        def gone() -> str | None:
            if api is not None:
                code = api.process.poll() if api.process is not None else None
                return None if code is None else f"Prefect's temporary API exited mid-run (status {code})"
            try:
                temporary_api.check_api(url, key, timeout=every)
            except RecsysError:
                return f"the Prefect API at {url} stopped answering mid-run"
            return None

        def watch() -> None:
            failing_since = None
            while not done.wait(every):
                reason = gone()
                if reason is None:
                    failing_since = None
                    continue
                failing_since = failing_since or time.monotonic()
                if api is not None or time.monotonic() - failing_since >= grace:
                    if not done.is_set():
                        self.stop(3, f"error: {reason}; stopped")
                    return

        threading.Thread(target=watch, name="recsys-api-watch", daemon=True).start()
        return done

    def watchdog(self, seconds: float) -> threading.Timer:
        """End the run (exit 3) if it is not done in time: a run whose Prefect API went
        away would otherwise hang."""
        timer = threading.Timer(
            seconds, self.stop, (3, f"error: the run did not finish within {seconds:g} s; stopped")
        )
        timer.daemon = True
        timer.start()
        return timer
