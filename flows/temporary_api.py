"""Prefect's temporary API, started before Prefect is imported.

Without a configured API, Prefect starts a temporary server (a uvicorn subprocess) when
the flow makes its first call, and waits ~5 s for it. ``recsys run`` starts that same
server first instead, so that it boots while this process imports Prefect and the flow,
and points ``PREFECT_API_URL`` at it: the flow then finds it ready (or nearly).

Nothing here imports Prefect: deciding whether an API is configured reads the places
Prefect reads it from (the environment, the active profile, ``prefect.toml``, ``.env``,
``pyproject.toml``); when any of them could name one, Prefect decides as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from recsys.errors import ConfigError, RecsysError

SERVER_ENV = {
    # what Prefect's own temporary server sets: no UI, no background services
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


def _mentions_api_url(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    lowered = text.lower()
    return "api_url" in lowered or "[api]" in lowered or "api.url" in lowered


def _profiles_path(environ: dict[str, str] | os._Environ[str]) -> Path:
    home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    return Path(environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()


STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def _whole_seconds(text: str) -> int | None:
    """A number of seconds as Prefect reads it (a whole number), None where it cannot."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(int).validate_python(text)
    except ValidationError:
        return None


def settings_problem(environ: dict[str, str] | None = None) -> str | None:
    """What in Prefect's settings would make importing Prefect fail with a traceback,
    read the way Prefect reads it, before Prefect is imported: a profiles file that is not
    UTF-8 TOML, a startup timeout that is not a whole number of seconds >= 1. None if
    nothing is wrong that this can see."""
    environ = dict(os.environ if environ is None else environ)
    path = _profiles_path(environ)
    if path.exists():
        where = f"Prefect profiles file {path} (PREFECT_PROFILES_PATH, or profiles.toml in PREFECT_HOME)"
        try:
            tomllib.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            return f"{where} is not UTF-8 text; fix or remove it"
        except tomllib.TOMLDecodeError as exc:
            return f"{where} is not valid TOML ({exc}); fix or remove it"
        except OSError as exc:
            return f"{where} cannot be read ({exc.strerror or exc})"
    value = environ.get(STARTUP_TIMEOUT)
    if value is not None:
        seconds = _whole_seconds(value)
        if seconds is None or seconds < 1:
            return f"{STARTUP_TIMEOUT} must be a whole number of seconds >= 1, found {value!r}"
    return None


def check_settings(environ: dict[str, str] | None = None) -> None:
    """A one-line :class:`ConfigError` for :func:`settings_problem`."""
    problem = settings_problem(environ)
    if problem:
        raise ConfigError(problem)


def settings_error(exc: BaseException) -> ConfigError:
    """One line for the error Prefect raised while loading its settings at import (a
    pydantic ValidationError of its Settings, a TOML error of a settings file)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for error in errors()[:3]:
            where = ".".join(str(p) for p in error.get("loc", ()))
            parts.append(f"{where}: {error.get('msg')} (found {error.get('input')!r})")
        detail = "; ".join(parts)
    else:
        detail = " ".join(str(exc).split())
    return ConfigError(f"Prefect's settings are invalid: {detail}")


class _HeldStderr:
    """``sys.stderr`` while Prefect is imported: what is written is held until the import
    is over, then written out, or dropped when the import failed on Prefect's settings
    (Prefect prints that same error itself before raising it: the command says it in
    one line instead). Streams that kept this object (a handler made during the import)
    write straight through afterwards."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._held: list[str] | None = []

    def write(self, text: str) -> int:
        if self._held is None:
            return self._stream.write(text)
        self._held.append(text)
        return len(text)

    def flush(self) -> None:
        if self._held is None:
            self._stream.flush()

    def release(self, keep: bool) -> None:
        held, self._held = self._held or [], None
        if keep and held:
            self._stream.write("".join(held))
            self._stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def settings_errors_in_one_line(debug: bool = False) -> Iterator[None]:
    """Around the import of Prefect: an error of Prefect's settings (a pydantic
    ValidationError, a TOML error of a settings file) becomes one :class:`ConfigError`,
    and Prefect's own print of it is dropped; anything else is left as it is."""
    if debug:
        yield
        return
    real, held = sys.stderr, _HeldStderr(sys.stderr)
    sys.stderr = held  # type: ignore[assignment]
    failed = False
    try:
        yield
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError and TOML errors among them
        if "prefect.settings" not in sys.modules:
            raise
        failed = True
        raise settings_error(exc) from None
    finally:
        if sys.stderr is held:
            sys.stderr = real
        held.release(keep=not failed)


def _active_profile_sets_api(environ: dict[str, str]) -> bool:
    path = _profiles_path(environ)
    if not path.exists():
        return False
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return True  # unreadable here: let Prefect read it
    active = environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = profiles.get("profiles", {}).get(active, {})
    return any(key.upper() in ("PREFECT_API_URL", "PREFECT_API_KEY") for key in settings)


def api_configured(environ: dict[str, str] | None = None, cwd: Path | None = None) -> bool:
    """Whether a Prefect API is (or may be) configured, so no temporary one is needed."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get("PREFECT_API_URL"):
        return True
    if environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").lower() in ("0", "false", "no"):
        return True  # Prefect refuses to start one: let it say so
    if _active_profile_sets_api(environ):
        return True
    here = cwd or Path.cwd()
    return any(_mentions_api_url(here / name) for name in ("prefect.toml", ".env", "pyproject.toml"))


def _listening_socket() -> socket.socket:
    """A socket bound to a free loopback port and listening, that the server inherits:
    the port is this process's from the start, so no other process on the machine can
    answer on it while the server boots (connections wait in the backlog until it does)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:
    """In the server's process before it starts (Linux): the kernel sends it SIGTERM when
    the process that started it dies, also by SIGKILL, which runs no exit handler."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class TemporaryAPI:
    """A Prefect API server for this process's runs, stopped when they are done, and by
    the kernel when this process dies."""

    def __init__(self) -> None:
        self.socket = _listening_socket()
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self.output: IO[bytes] | None = None
        """The server's own output: kept off the run's stdout and stderr, which carry only
        the run's progress and its one-line errors (a server ended by Ctrl-C with the run
        may print a traceback); its last line goes into the error if it fails to start."""

    def start(self) -> TemporaryAPI:
        self.output = tempfile.TemporaryFile()  # noqa: SIM115  (open while the server runs)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--fd",
                str(self.socket.fileno()),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**os.environ, **SERVER_ENV},
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            pass_fds=(self.socket.fileno(),),
            preexec_fn=_end_with_parent if sys.platform == "linux" else None,
        )
        return self

    def wait_ready(self, timeout: float) -> None:
        """Return once the API answers its health check; one-line error if it exits or
        does not answer within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll() if self.process else None
            if code is not None:
                said = f" ({self.last_line()})" if self.last_line() else ""
                raise RecsysError(
                    f"Prefect's temporary API on port {self.port} exited with status {code} before "
                    f"it was ready{said}; set PREFECT_API_URL to a running server (`prefect server start`)"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RecsysError(
                    f"Prefect's temporary API did not answer within {timeout:g} s "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); set PREFECT_API_URL to a "
                    "running server (`prefect server start`)"
                )
            time.sleep(0.05)

    def last_line(self) -> str:
        """The last line the server printed, if any."""
        if self.output is None:
            return ""
        self.output.seek(0)
        lines = self.output.read()[-4096:].decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def stop(self) -> None:
        self.socket.close()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        logging.getLogger("prefect").info("Stopping temporary server on %s", self.url.removesuffix("/api"))
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_api(url: str, key: str | None = None, timeout: float = 10.0) -> None:
    """One line if the configured Prefect API at ``url`` cannot serve a run: not an
    http(s) URL, nothing answering, or something that is not a Prefect API (its
    ``/health`` does not answer ``true``). Prefect's own check ends in a traceback."""
    hint = "start one with `prefect server start`, or unset PREFECT_API_URL to use a temporary one"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RecsysError(f"PREFECT_API_URL {url!r} is not an http(s) URL; {hint}")
    request = urllib.request.Request(f"{url.rstrip('/')}/health")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(64).strip()
    except urllib.error.HTTPError as exc:
        raise RecsysError(
            f"PREFECT_API_URL {url}: not a Prefect API (GET /health answered {exc.code}); {hint}"
        ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        reason = getattr(reason, "strerror", None) or reason
        raise RecsysError(f"PREFECT_API_URL {url}: cannot reach the Prefect API ({reason}); {hint}") from None
    if body != b"true":
        raise RecsysError(
            f"PREFECT_API_URL {url}: not a Prefect API (GET /health answered {body[:20]!r}); {hint}"
        )


def startup_timeout(environ: dict[str, str] | None = None) -> float:
    """Seconds to wait for the temporary API (:func:`check_settings` has refused a value
    that is not a whole number >= 1)."""
    environ = os.environ if environ is None else environ
    seconds = _whole_seconds(environ.get(STARTUP_TIMEOUT, "120"))
    return 120.0 if seconds is None else float(max(1, seconds))


_started: TemporaryAPI | None = None


def started() -> TemporaryAPI | None:
    """The temporary API this process started, if any."""
    return _started


def start_if_needed() -> TemporaryAPI | None:
    """Start a temporary API and point ``PREFECT_API_URL`` at it, unless one is configured;
    the one started already, if any. Call before Prefect is imported (Prefect reads its
    settings once)."""
    global _started
    if _started is not None:
        return _started
    if "prefect" in sys.modules or api_configured() or settings_problem() is not None:
        return None  # with bad settings, the command says what is wrong before importing Prefect
    api = _started = TemporaryAPI().start()
    # at exit, as Prefect stops its own: its log and event workers drain first (they
    # stop in threading's exit hooks, which run before atexit's)
    atexit.register(api.stop)
    os.environ["PREFECT_API_URL"] = api.url
    os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to it
    return api


def prepare_database() -> None:
    """Boot the temporary API once and stop it: Prefect registers its block types in the
    database (PREFECT_HOME) at a server's first start and remembers it, so the first
    ``recsys run`` after ``make setup`` boots its API as fast as the ones after it."""
    api = TemporaryAPI().start()
    try:
        api.wait_ready(startup_timeout())
    finally:
        api.stop()


if __name__ == "__main__":  # `python -m flows.temporary_api`: what `make setup` runs
    prepare_database()
