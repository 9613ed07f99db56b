"""``recsys --help`` and every command's ``--help``: each option's default said once, no
``(default: None)``, and the fold-in option names the model types that fold in."""

from __future__ import annotations

import re

import pytest

from recsys.cli import build_parser
from recsys.models import MODEL_TYPES


def _subcommands() -> dict:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return dict(sub.choices)


def _option_helps(text: str) -> list[str]:
    """The help of each option of an argparse help page, continuation lines joined."""
    options = text.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", "\n" + options)
    return [" ".join(entry.split()) for entry in entries if entry.strip()]


def test_main_help_lists_every_command():
    text = build_parser().format_help()
    for name in _subcommands():
        assert name in text


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_each_default_is_said_once(command):
    text = _subcommands()[command].format_help()
    assert "(default: None)" not in " ".join(text.split())
    assert "(default: False)" not in " ".join(text.split())
    for option in _option_helps(text):
        assert option.count("default") <= 1, option


def test_generate_shows_its_real_defaults():
    text = " ".join(_subcommands()["generate"].format_help().split())
    assert "number of users (default: 3000)" in text
    assert "same seed, same table (default: 0)" in text


def test_user_items_help_names_the_types_that_fold_in():
    text = " ".join(_subcommands()["recommend"].format_help().split())
    folding = [n for n, t in MODEL_TYPES.items() if t.folds_in]
    assert "als" in folding
    assert "ALS models" not in text
    for name in folding:
        assert name in text.split("--user-items")[2].split("--fallback")[0]


def test_parser_names_match_the_registries():
    from recsys.cli import parser
    from recsys.storage.importers import FORMATS, WEIGHTINGS

    assert tuple(n for n, t in MODEL_TYPES.items() if t.folds_in) == parser.FOLD_IN_TYPES
    assert parser.IMPORT_FORMATS == FORMATS
    assert parser.IMPORT_WEIGHTINGS == WEIGHTINGS
