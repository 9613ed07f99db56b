"""The README's Python API cell runs as it stands and answers for a user."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_cell() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_cell_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_api_cell(), "README.md", "exec"), namespace)
    top, lists = namespace["top"], namespace["lists"]
    assert set(top["user_id"]) == {42, 7} and len(top) == 20
    for user in (42, 7):
        published = lists[lists["user_id"] == user]["item_id"].tolist()
        assert top[top["user_id"] == user]["item_id"].tolist() == published
    assert len(namespace["similar"]) == 5 and 3 not in namespace["similar"]["similar_item_id"].tolist()
    assert namespace["nearest"]["similar_item_id"].iloc[0] == 3
    assert set(namespace["folded"]["user_id"]) == {1_000_000}
    assert (tmp_path / "out" / "CURRENT").exists()
    assert "user_id" in capsys.readouterr().out
