"""Every shell command of README.md and docs/*.md works as pasted.

Each ```bash / ```sh / ```console block runs, in the order of the documents (README.md
first, then docs/ by name) and of the blocks in them, from the root of a copy of the
repository's files (``git ls-files``: nothing is written into the checkout) whose
``.venv`` links to the real one, in a clean environment: PATH, HOME and a new
PREFECT_HOME only, no thread variable. Output that is not a command goes in ```text.

A block that must not run here is marked by an HTML comment on the line before it:

    <!-- doc-test: skip: REASON -->              (a server, a benchmark of minutes, make test)
    <!-- doc-test: instead: COMMAND -- REASON -->   (run COMMAND in its place)

Each block is one test, so the skipped ones are counted and named with their reason
(``pytest -rs``). MovieLens ml-latest-small is linked in from ``../shared/data`` where it
is (its terms forbid committing it); without it the blocks that read it are skipped with
the reason, and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MOVIELENS_HOME = ROOT.parent / "shared" / "data" / "ml-latest-small"
MOVIELENS_IN_REPO = "data/ml-latest-small"
SHELL_LANGUAGES = ("bash", "sh", "console", "shell")
DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(skip|instead):\s*(.*?)\s*-->$")
MUST_BE_MARKED = ("make test", "prefect server start", "recsys deploy", "dask scheduler", "dask worker")
BLOCK_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # of the opening fence
    language: str
    code: str
    directive: tuple[str, str] | None  # (skip | instead, its text)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def commands(self) -> str:
        """The shell text to run: a console block's ``$ `` lines, any other block whole."""
        if self.language != "console":
            return self.code
        return "\n".join(line[2:] for line in self.code.splitlines() if line.startswith("$ "))


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, with the doc-test directive just above it."""
    lines = path.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = re.match(r"^```(\S*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        start, language = index, match.group(1)
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        directive = DIRECTIVE.match(previous.strip())
        blocks.append(
            Block(
                doc=str(path.relative_to(ROOT)),
                line=start + 1,
                language=language,
                code="\n".join(lines[start + 1 : end]) + "\n",
                directive=(directive.group(1), directive.group(2)) if directive else None,
            )
        )
        index = end + 1
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in fenced_blocks(doc)]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.language in SHELL_LANGUAGES]


# ---------------------------------------------------------------- the markup itself


def test_every_block_names_its_language():
    bare = [block.id for block in ALL_BLOCKS if not block.language]
    assert not bare, f"fenced blocks without a language (output goes in ```text): {', '.join(bare)}"


def test_blocks_that_must_not_run_here_are_marked():
    unmarked = [
        f"{block.id} ({command})"
        for block in SHELL_BLOCKS
        for command in MUST_BE_MARKED
        if command in block.code and block.directive is None
    ]
    assert not unmarked, "mark these with <!-- doc-test: skip: REASON -->: " + ", ".join(unmarked)
    for block in SHELL_BLOCKS:
        if block.directive:
            kind, text = block.directive
            assert text, f"{block.id}: a doc-test {kind} needs a reason"
            if kind == "instead":
                assert " -- " in text, f"{block.id}: write 'instead: COMMAND -- REASON'"


def test_directives_sit_on_shell_blocks():
    stray = [b.id for b in ALL_BLOCKS if b.directive and b.language not in SHELL_LANGUAGES]
    assert not stray, f"doc-test directives above blocks that are not run: {', '.join(stray)}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_documents_resolve():
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # a web address
            name, _, anchor = target.partition("#")
            linked = (doc.parent / name).resolve() if name else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------- running the blocks


def clean_environment(prefect_home: Path) -> dict[str, str]:
    """PATH (without any virtualenv's bin), HOME and PREFECT_HOME: nothing else."""
    path = [
        entry
        for entry in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
        if entry and not (Path(entry) / "activate").exists()
    ]
    return {
        "PATH": os.pathsep.join(path),
        "HOME": os.environ.get("HOME", str(prefect_home.parent)),
        "PREFECT_HOME": str(prefect_home),
    }


NOT_COPIED_AT_THE_TOP = {".git", ".venv", "data", "out", "build"}
NOT_COPIED = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def tracked_files() -> list[str]:
    """The repository's files as a clone has them, plus new files not ignored by git
    (without git: every file outside the folders a clone does not have)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return [
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*")
            if path.is_file()
            and path.relative_to(ROOT).parts[0] not in NOT_COPIED_AT_THE_TOP
            and not NOT_COPIED & set(path.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in path.parts)
        ]
    return [name for name in listed.split("\0") if name]


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    failed_docs: set[str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    base = tmp_path_factory.mktemp("docs")
    root = base / "repo"
    for name in tracked_files():
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    (root / ".venv").symlink_to(ROOT / ".venv")
    if MOVIELENS_HOME.is_dir():
        (root / MOVIELENS_IN_REPO).parent.mkdir(parents=True, exist_ok=True)
        (root / MOVIELENS_IN_REPO).symlink_to(MOVIELENS_HOME)
    env = clean_environment(base / "prefect")
    # what `make setup` does besides installing: Prefect's database, created once
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "prefect"), "server", "database", "upgrade", "-y"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return Sandbox(root, env, set())


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda block: block.id)
def test_block_runs_as_pasted(block: Block, sandbox: Sandbox):
    if block.doc in sandbox.failed_docs:
        pytest.skip(f"an earlier block of {block.doc} failed")
    command = block.commands()
    if block.directive is not None:
        kind, text = block.directive
        if kind == "skip":
            pytest.skip(f"marked in {block.id}: {text}")
        command = text.split(" -- ", 1)[0]
    if MOVIELENS_IN_REPO in command and not (sandbox.root / MOVIELENS_IN_REPO).exists():
        reason = (
            f"{block.id} reads MovieLens ml-latest-small, which is not at {MOVIELENS_HOME}: "
            "unzip ml-latest-small.zip there (docs/data-sets.md)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=sandbox.root,
            env=sandbox.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        sandbox.failed_docs.add(block.doc)
        pytest.fail(f"{block.id} ran for more than {BLOCK_TIMEOUT} s:\n{command}")
    if done.returncode != 0:
        sandbox.failed_docs.add(block.doc)
        pytest.fail(
            f"{block.id} exited {done.returncode}:\n{command}\n"
            f"--- stdout (end)\n{_tail(done.stdout)}\n--- stderr (end)\n{_tail(done.stderr)}"
        )
