"""A new destination is one file plus one registry line: the CSV exporter of
``dummy_exporter.py``, registered here, is accepted by the config (its params checked,
its paths resolved), listed in the config reference and run by ``run_exports``; config
errors of exports are one line naming the key."""

from __future__ import annotations

import pandas as pd
import pytest

import recsys
from recsys import reference
from recsys.config import load_config, parse_config
from recsys.errors import ConfigError, ExportError
from recsys.exports import EXPORTERS, get_exporter, run_exports
from tests.exports.dummy_exporter import CsvExporter, CsvSettings

MODELS = [{"name": "als", "type": "als"}]


@pytest.fixture
def csv_registered(monkeypatch):
    monkeypatch.setitem(EXPORTERS, "csv", CsvExporter())


def test_a_new_exporter_runs_from_the_config(csv_registered, int_root, tmp_path):
    raw = {
        "models": MODELS,
        "exports": [
            {"type": "csv", "name": "flat", "params": {"folder": str(tmp_path / "csv"), "separator": ";"}},
            {"type": "duckdb", "params": {"path": str(tmp_path / "recs.duckdb")}},
        ],
    }
    config = parse_config(raw)
    assert isinstance(config.exports[0].typed_settings, CsvSettings)
    flat, db = run_exports(config.exports, int_root, "r1")
    assert (flat.name, flat.exporter, flat.destination) == ("flat", "csv", str(tmp_path / "csv"))
    assert (db.name, db.exporter) == ("duckdb", "duckdb")
    run = recsys.open_run(int_root, "r1")
    for kind in ("recommendations", "similar_items"):
        expected = pd.concat([getattr(run, kind)(model) for model in run.models], ignore_index=True)
        written = pd.read_csv(tmp_path / "csv" / f"{kind}.csv", sep=";")
        pd.testing.assert_frame_equal(written, expected, check_dtype=False, atol=1e-6)
        assert flat.tables[kind] == db.tables[kind] == len(expected)


def test_a_new_exporter_s_params_are_checked_and_its_paths_resolved(csv_registered, tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": MODELS, "exports": [{"type": "csv", "params": {"folder": "x", "sep": ";"}}]})
    assert str(caught.value) == (
        "<config>: invalid config: unknown key 'exports.0.params.sep' (csv params: folder, separator)"
    )
    (tmp_path / "c.yaml").write_text(
        "models: [{name: als, type: als}]\nexports: [{type: csv, params: {folder: out}}]\n"
    )
    assert load_config(tmp_path / "c.yaml").exports[0].params["folder"] == str(tmp_path / "out")


def test_a_new_exporter_is_in_the_config_reference(csv_registered):
    text = reference.render()
    assert "### `type: csv`" in text
    assert "- **`params.folder`** (string; required): The folder the files are written to (created)." in text
    assert reference.undocumented() == []


def test_a_failing_exporter_stops_the_exports_in_one_line(csv_registered, int_root, tmp_path):
    (tmp_path / "taken").write_text("")  # a file where the folder should be
    raw = {"models": MODELS, "exports": [{"type": "csv", "params": {"folder": str(tmp_path / "taken")}}]}
    with pytest.raises(ExportError) as caught:
        run_exports(parse_config(raw).exports, int_root, "r1")
    assert str(caught.value).startswith(f"export csv (csv) of run r1 to {tmp_path / 'taken'} failed: ")
    assert "\n" not in str(caught.value)


def test_unknown_exporter():
    assert get_exporter("duckdb").name == "duckdb"
    with pytest.raises(ConfigError, match=r"^unknown exporter 'dukdb': expected one of duckdb$"):
        get_exporter("dukdb")


@pytest.mark.parametrize(
    ("export", "expected"),
    [
        ({"type": "dukdb"}, "exports.0.type: unknown exporter 'dukdb': expected one of duckdb"),
        (
            {"type": "duckdb", "params": {"path": "x.duckdb", "prefix": "r_"}},
            "unknown key 'exports.0.params.prefix' (duckdb params: path, table_prefix)",
        ),
        ({"type": "duckdb", "params": {}}, "missing key 'exports.0.params.path'"),
        ({"type": "duckdb"}, "missing key 'exports.0.params.path'"),
        (
            {"type": "duckdb", "params": {"path": "x.duckdb", "table_prefix": "1 x"}},
            "exports.0.params.table_prefix: a table prefix must be letters, digits and '_', not "
            "starting with a digit, found '1 x'",
        ),
        (
            {"type": "duckdb", "params": {"path": 3}},
            "exports.0.params.path: Input should be a valid string, found 3",
        ),
        ({"type": "duckdb", "parms": {"path": "x"}}, "unknown key 'exports.0.parms'"),
        ({"params": {"path": "x"}}, "missing key 'exports.0.type'"),
        (
            {"type": "duckdb", "name": "my export", "params": {"path": "x"}},
            "exports.0.name: export name 'my export' must be 1-64 characters",
        ),
    ],
)
def test_config_errors_are_one_line_naming_the_key(export, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": MODELS, "exports": [export]})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("<config>: invalid config: ")
    assert expected in message


def test_config_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "models: [{name: als, type: als}]\nexports: [{type: duckdb, params: {pathh: x.duckdb}}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: invalid config: missing key 'exports.0.params.path'; "
        "unknown key 'exports.0.params.pathh' (duckdb params: path, table_prefix)"
    )


def test_no_exports_by_default():
    assert parse_config({"models": MODELS}).exports == []


def test_a_new_exporter_serves_a_whole_run(csv_registered, tmp_path):
    """Registered with one line, the one-file exporter is made by a run itself once it is
    published: nothing else of recsys knows it."""
    from recsys.data import generate_interactions
    from tests.exports.conftest import CONFIG

    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=3)
    config = {**CONFIG, "exports": [{"type": "csv", "params": {"folder": str(tmp_path / "csv")}}]}
    run = recsys.run_pipeline(frame, config, output=tmp_path / "out", run_id="r1")
    written = pd.read_csv(tmp_path / "csv" / "recommendations.csv")
    assert len(written) == sum(len(run.recommendations(model)) for model in run.models) > 0
    assert set(written["run_id"]) == {"r1"}
