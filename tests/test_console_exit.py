"""How the console script ends: with its command's exit status, its output flushed and
every exit handler run, without the interpreter's teardown (``recsys.console``); and
``main`` called from Python returning as any function does."""

from __future__ import annotations

import subprocess
import sys

import pytest

# the console script as setuptools writes it, with an exit handler registered after the
# console module is imported (as Prefect and logging register theirs)
SCRIPT = (
    "import atexit, sys\n"
    "from recsys.console import main\n"
    "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
    "sys.argv = ['recsys', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)


def _script(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_a_command_ends_with_its_status_its_output_and_every_exit_handler():
    done = _script("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("recsys ")  # a pipe: block-buffered, flushed at the end
    assert done.stderr.strip() == "exit handler ran"


@pytest.mark.parametrize(
    "args, status",
    [
        (["no-such-command"], 2),  # argparse's SystemExit(2)
        (["recommend", "--output", "missing-root", "--user", "1"], 2),  # a command's RecsysError
    ],
)
def test_a_failing_command_keeps_its_status_and_its_one_line(tmp_path, args, status):
    done = _script(*args, cwd=tmp_path)
    assert done.returncode == status
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "exit handler ran"
    assert lines[0].startswith("recsys: error: ") or lines[0].startswith("usage: ")


def test_main_called_from_python_returns_and_the_interpreter_ends_as_usual():
    code = (
        "import sys\n"
        "from recsys.console import main\n"
        "print('status', main(['runs', '--output', 'missing-root']))\n"
        "print('after main')\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["no runs under missing-root", "status 0", "after main"]


def test_an_uncaught_exception_ends_as_python_ends_it():
    code = (
        "import sys\n"
        "import recsys.cli\n"
        "def broken(args):\n"
        "    raise RuntimeError('boom')\n"
        "recsys.cli.main = broken\n"
        "from recsys.console import main\n"
        "sys.argv = ['recsys', '--version']\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr


def test_the_console_script_skips_the_interpreters_teardown():
    """What only the teardown would run (a module global's finalizer) does not run once the
    command and its exit handlers are done; run from Python, it does."""
    finalizer = (
        "class Late:\n"
        "    def __del__(self):\n"
        "        sys.stderr.write('teardown ran\\n')\n"
        "sys.modules['__main__'].late = Late()\n"
    )
    script = SCRIPT.replace("sys.exit(main())\n", finalizer + "sys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, "-c", script, "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "teardown ran" not in done.stderr
    plain = "import sys\n" + finalizer + "sys.exit(0)\n"
    done = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=120)
    assert "teardown ran" in done.stderr
