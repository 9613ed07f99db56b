"""A Dask cluster to try scale-out on one machine (`make cluster-demo`).

Starts, each as a process of its own on loopback (free ports chosen at start), a Prefect
server, a Dask scheduler and two Dask workers that report to that server; runs a config
(the demo's by default) through `recsys run` with ``task_runner.address`` set to the
scheduler and PREFECT_API_URL to the server, as on a real cluster; prints where the
published run is and its list files; then stops everything it started: on success, on
failure of any step, on Ctrl-C and on SIGTERM. A piece that does not start is a one-line
error and a non-zero exit.

    python -m flows.cluster_demo [--config configs/demo.yaml] [--output data/outputs/cluster-demo]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import yaml

from flows.temporary_api import _end_with_parent
from recsys import storage
from recsys.config import load_config, parse_config
from recsys.errors import RecsysError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "demo.yaml"
DEFAULT_OUTPUT = ROOT / "data" / "outputs" / "cluster-demo"
BIN = Path(sys.executable).parent

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
STOP_SECONDS = 20.0
"""How long a stopped piece gets to end after SIGTERM before its process group is killed."""


class DemoError(Exception):
    """A piece did not start or a step failed: one line on stderr, exit status 1."""


class Stopped(BaseException):
    """SIGTERM (or SIGHUP) of the demo: stop everything, as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say(line: str) -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Piece:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    service: bool
    """A piece that runs until stopped (the server, the scheduler, a worker)."""


@dataclass
class Pieces:
    """The processes the demo started, each the leader of a process group of its own,
    stopped group by group (SIGTERM, a wait, then SIGKILL), newest first."""

    folder: Path
    started: list[Piece] = field(default_factory=list)
    handles: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str], log: str | None = None) -> Piece:
        """Start ``command`` as the leader of a new process group, its output into ``log``
        in the demo's folder (a service: runs until stopped) or, without, the demo's own."""
        output: IO[bytes] | None = None
        if log is not None:
            output = open(self.folder / log, "wb")  # noqa: SIM115  (open while it runs)
            self.handles.append(output)
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            preexec_fn=_end_with_parent if sys.platform == "linux" else None,
        )
        piece = Piece(name, process, self.folder / log if log else Path(os.devnull), service=log is not None)
        self.started.append(piece)
        return piece

    def check_alive(self) -> None:
        for piece in self.started:
            status = piece.process.poll()
            if piece.service and status is not None:
                raise DemoError(f"the {piece.name} exited with status {status}{last_words(piece.log)}")

    def stop(self) -> None:
        for piece in reversed(self.started):
            signal_group(piece.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for piece in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                piece.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            while group_alive(piece.process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        for piece in self.started:
            if piece.process.poll() is None or group_alive(piece.process.pid):
                signal_group(piece.process.pid, signal.SIGKILL)
                piece.process.wait()
            while group_alive(piece.process.pid):  # the group's others, reaped by init
                time.sleep(0.05)
        for handle in self.handles:
            handle.close()


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception)|Error): .+")


def last_words(log: Path) -> str:
    """What a piece that exited said of why, for the one-line error: the first error line
    of its log (the root cause of a chained traceback), else the end of its last paragraph."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    errors = [line.strip() for line in text.splitlines() if ERROR_LINE.match(line.strip())]
    paragraphs = [part.strip().splitlines()[-3:] for part in re.split(r"\n\s*\n", text) if part.strip()]
    paragraphs = [" ".join(" ".join(lines).split()) for lines in paragraphs]
    said = (errors or paragraphs[-1:] or [""])[0][:300]
    return f": {said} (log: {log})" if said else f" (log: {log})"


def wait_for(pieces: Pieces, ready: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait until ``ready()``; a one-line error when a started piece exits first or the
    time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        pieces.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            raise DemoError(f"{what} not ready within {seconds:.0f} s")
        time.sleep(0.5)


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def logged(log: Path, text: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return text in log.read_text(errors="replace")
        except OSError:
            return False

    return ready


def demo_config(source: Path, address: str, workers: int, folder: Path) -> Path:
    """The config at ``source`` (paths in it resolved) scored on the cluster at ``address``,
    written into the demo's folder."""
    raw = load_config(source).model_dump(mode="json", exclude_unset=True)
    runner = {**raw.get("task_runner", {}), "type": "dask", "address": address, "n_workers": workers}
    raw["task_runner"] = runner
    parse_config(raw, str(source))  # what recsys run will read: checked here, once
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def config_input(config: Path) -> Path | None:
    """The interactions table the demo's config names (None: it names none)."""
    path = (yaml.safe_load(config.read_text()).get("input") or {}).get("path")
    return Path(path) if path else None


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (``finally`` blocks run)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_signals() -> None:
    """While stopping: a second Ctrl-C must not cut the cleanup short."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def run_demo(args: argparse.Namespace, pieces: Pieces) -> None:
    folder = pieces.folder
    output = Path(args.output).resolve()
    base = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    base.update(QUIET)
    base["PREFECT_HOME"] = str(folder / "prefect")

    server_port = args.server_port or free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    scheduler_port = args.scheduler_port or free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    # the config and the table checked before anything starts
    config = demo_config(Path(args.config), address, args.workers, folder)
    table = Path(args.interactions).resolve() if args.interactions else config_input(config)
    if table is not None and not table.exists():
        raise DemoError(f"{table}: interactions table not found")

    server_env = {**base, "PREFECT_UI_ENABLED": "true" if args.hold else "false"}
    server = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(server_port)]
    pieces.start("Prefect server", server, server_env, "server.log")

    scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port)]
    # no dashboard, and its HTTP endpoints on a free loopback port rather than 8787
    scheduler += ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    scheduler_piece = pieces.start("Dask scheduler", scheduler, base, "scheduler.log")
    wait_for(pieces, logged(scheduler_piece.log, "Scheduler at:"), args.start_timeout, "the Dask scheduler")
    say(f"dask scheduler on {address} (pid {scheduler_piece.process.pid})")

    worker_env = {**base, "PREFECT_API_URL": api_url}
    for number in range(1, args.workers + 1):
        worker = [str(BIN / "dask"), "worker", address, "--name", f"worker-{number}"]
        worker += ["--nworkers", "1", "--nthreads", "1", "--local-directory", str(folder / "dask")]
        # the worker, its nanny and its HTTP endpoints on loopback only
        worker += ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        piece = pieces.start(f"Dask worker {number}", worker, worker_env, f"worker-{number}.log")
        say(f"dask worker {number} started (pid {piece.process.pid})")

    wait_for(pieces, lambda: healthy(api_url), args.start_timeout, f"the Prefect server on {api_url}")
    say(f"prefect server on {api_url} (pid {pieces.started[0].process.pid})")
    wait_for_workers(pieces, address, args.workers, args.start_timeout)
    say(f"{args.workers} workers connected")

    run_id = storage.new_run_id()
    command = [str(BIN / "recsys"), "run", "--config", str(config), "--output", str(output)]
    command += ["--run-id", run_id]
    if args.interactions:
        command += ["--interactions", str(table)]
    say(f"recsys run --config {config} --output {output} (PREFECT_API_URL={api_url})")
    run = pieces.start("recsys run", command, {**base, "PREFECT_API_URL": api_url})
    while True:  # a piece that dies mid-run stops the run: it would wait on it for ever
        with contextlib.suppress(subprocess.TimeoutExpired):
            status = run.process.wait(timeout=1)
            break
        pieces.check_alive()
    if status != 0:
        raise DemoError(f"recsys run failed with status {status} (its error is above)")
    pieces.check_alive()
    show_run(output, run_id)
    if args.hold:
        say(f"holding: Prefect UI on http://127.0.0.1:{server_port}; Ctrl-C stops everything")
        try:
            while True:
                pieces.check_alive()
                time.sleep(1)
        except (KeyboardInterrupt, Stopped):  # the way a held demo ends: not a failure
            say("stopping")


def wait_for_workers(pieces: Pieces, address: str, workers: int, seconds: float) -> None:
    from distributed import Client

    deadline = time.monotonic() + seconds
    with Client(address, timeout=seconds, set_as_default=False) as client:
        while True:
            pieces.check_alive()
            with contextlib.suppress(TimeoutError):
                client.wait_for_workers(workers, timeout=2)
                return
            if time.monotonic() > deadline:
                found = len(client.scheduler_info(n_workers=-1)["workers"])
                raise DemoError(f"{found} of {workers} Dask workers connected within {seconds:.0f} s")


def show_run(output: Path, run_id: str) -> None:
    import pyarrow.parquet as pq

    run = storage.find_run(output, run_id)
    manifest = storage.read_json(run.dir / "manifest.json")
    current = storage.current_run_id(output) == run_id
    say(f"published run: {run.dir}" + (" (current)" if current else " (not current: held by the gate)"))
    say(f"scored on: {manifest['config']['task_runner']['address']}")
    for path in sorted(run.dir.glob("models/*/**/*.parquet")):
        if path.is_file():
            rows = pq.ParquetFile(path).metadata.num_rows
            say(f"  {path.relative_to(run.dir)}  {rows} rows")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flows.cluster_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML (default: configs/demo.yaml)")
    add("--interactions", help="interactions table (default: input.path of the config)")
    add("--output", default=str(DEFAULT_OUTPUT), help="output root (default: data/outputs/cluster-demo)")
    add("--workers", type=int, default=2, help="Dask worker processes (default: 2)")
    add("--server-port", type=int, default=0, help="Prefect server port (default: a free one)")
    add("--scheduler-port", type=int, default=0, help="Dask scheduler port (default: a free one)")
    add("--start-timeout", type=float, default=180.0, help="seconds each piece gets to start")
    add("--hold", action="store_true", help="keep the cluster and the Prefect UI up until Ctrl-C")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.output).resolve()
    folder = output / "cluster"
    status = 0
    pieces: Pieces | None = None
    try:
        with signals_stop():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                say(f"cluster-demo: logs and Prefect's database in {folder}")
                pieces = Pieces(folder)
                run_demo(args, pieces)
            finally:
                ignore_signals()
                if pieces is not None and pieces.started:
                    pieces.stop()
                    say("stopped pids: " + " ".join(str(piece.process.pid) for piece in pieces.started))
    except (DemoError, RecsysError, OSError) as exc:
        print(f"cluster-demo: {' '.join(str(exc).split())}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("cluster-demo: stopped by Ctrl-C", file=sys.stderr)
        status = 130
    except Stopped as stop:
        print(f"cluster-demo: stopped by {stop}", file=sys.stderr)
        status = 128 + stop.signum
    return status


if __name__ == "__main__":
    sys.exit(main())
