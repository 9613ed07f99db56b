"""Importers, each on a tiny fixture in its source's exact format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.errors import InputError
from recsys.storage.importers import map_columns, parse_mapping, read_source, to_implicit


def test_movielens_100k(tmp_path):
    (tmp_path / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
    )
    frame = read_source("movielens-100k", tmp_path / "u.data")
    assert frame.to_dict("list") == {
        "user_id": [196, 186, 22],
        "item_id": [242, 302, 377],
        "weight": [3, 3, 1],
        "timestamp": [881250949, 891717742, 878887116],
    }


def test_movielens_1m(tmp_path):
    (tmp_path / "ratings.dat").write_bytes(
        b"1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n"
    )
    frame = read_source("movielens-1m", tmp_path / "ratings.dat")
    assert frame["user_id"].tolist() == [1, 1, 2] and frame["item_id"].tolist() == [1193, 661, 1357]
    assert frame["weight"].tolist() == [5, 3, 5]


def test_movielens_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,6,4.5,964982224\n"
    )
    frame = read_source("movielens", tmp_path / "ratings.csv")
    assert list(frame.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert frame["weight"].tolist() == [4.0, 4.0, 4.5]


def test_lastfm_hetrec(tmp_path):
    (tmp_path / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t5\n"
    )
    frame = read_source("lastfm-hetrec", tmp_path / "user_artists.dat")
    assert frame.to_dict("list") == {
        "user_id": [2, 2, 3],
        "item_id": [51, 52, 51],
        "weight": [13883, 11690, 5],
    }


def test_lastfm_360k_uses_name_where_mbid_is_empty(tmp_path):
    rows = [
        "00000c289a1829a808ac09c00daf10bc3c4e223b\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty\t2137",
        '00000c289a1829a808ac09c00daf10bc3c4e223b\t\tdie "Ärzte\t1099',
        "00001411dc427966b17297bf4d69e7e193135d89\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty\t12",
    ]
    (tmp_path / "plays.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    frame = read_source("lastfm-360k", tmp_path / "plays.tsv")
    assert frame["item_id"].tolist()[1] == 'name:die "Ärzte'
    assert frame["item_id"].tolist()[0] == frame["item_id"].tolist()[2]
    assert frame["weight"].tolist() == [2137, 1099, 12]


def test_table_with_mapping(tmp_path):
    pd.DataFrame({"who": ["a", "b"], "what": [1, 2], "n": [3.0, 4.0]}).to_parquet(tmp_path / "t.parquet")
    mapping = parse_mapping("user=who, item=what, weight=n")
    frame = read_source("table", tmp_path / "t.parquet", mapping)
    assert frame.to_dict("list") == {"user_id": ["a", "b"], "item_id": [1, 2], "weight": [3.0, 4.0]}
    with pytest.raises(InputError, match="missing column userId"):
        map_columns(frame, {"user": "userId", "item": "item_id"}, "t.parquet")
    with pytest.raises(InputError, match="expected target=column"):
        parse_mapping("user")


def test_wrong_layout_is_refused(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\n")
    with pytest.raises(InputError, match="expected 4 columns"):
        read_source("movielens-100k", tmp_path / "u.data")
    with pytest.raises(InputError, match="file not found"):
        read_source("movielens-1m", tmp_path / "nothing.dat")


def test_min_rating_and_weightings():
    frame = pd.DataFrame(
        {"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 3, 1], "weight": [5.0, 2.0, 4.0, 3.5, 1.0]}
    )
    kept = to_implicit(frame, min_rating=3.5)
    assert kept["weight"].tolist() == [5.0, 4.0, 3.5]
    assert to_implicit(frame, weighting="binary")["weight"].eq(1.0).all()
    np.testing.assert_allclose(to_implicit(frame, weighting="log")["weight"], 1 + np.log1p(frame["weight"]))
    rng = np.random.default_rng(0)
    sparse = pd.DataFrame({"user_id": rng.integers(0, 50, 300), "item_id": rng.integers(0, 40, 300)})
    sparse["weight"] = rng.integers(1, 20, len(sparse)).astype(float)
    pairs = len(sparse.drop_duplicates(["user_id", "item_id"]))
    for weighting in ("bm25", "tfidf"):
        weighted = to_implicit(sparse, weighting=weighting)
        assert len(weighted) == pairs  # duplicates summed before weighting
        assert (weighted["weight"] > 0).all()
        assert not np.allclose(weighted["weight"].sort_values(), sparse["weight"].iloc[:pairs].sort_values())
    with pytest.raises(InputError, match="no rows have a rating of at least 9"):
        to_implicit(frame, min_rating=9)


def test_import_command_writes_a_runnable_table(tmp_path, capsys):
    (tmp_path / "u.data").write_text(
        "".join(f"{u}\t{i}\t{1 + (u * i) % 5}\t{1000 + u * i}\n" for u in range(1, 30) for i in range(1, 12))
    )
    code = main(
        [
            "import",
            "movielens-100k",
            str(tmp_path / "u.data"),
            "--output",
            str(tmp_path / "out.parquet"),
            "--min-rating",
            "3",
        ]
    )
    assert code == 0 and "wrote" in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "out.parquet")
    assert (table["weight"] >= 3).all() and set(table.columns) == {
        "user_id",
        "item_id",
        "weight",
        "timestamp",
    }
    assert (
        main(["import", "movielens-100k", str(tmp_path / "none"), "--output", str(tmp_path / "x.parquet")])
        == 2
    )
    assert "file not found" in capsys.readouterr().err


def _import(tmp_path, *args: str):
    import subprocess

    from tests.processes import RECSYS, environment

    return subprocess.run(
        [RECSYS, "import", "table", *args],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )


def test_import_table_keeps_the_contract_columns_it_finds(tmp_path):
    """Without --map, a column already named weight (or timestamp) is the weight: a
    negative rating is dropped as one, never made 1.0; with --map, the columns it names."""
    source = pd.DataFrame(
        {
            "user_id": ["a", "b", "a", "c"],
            "item_id": [1, 2, 2, 3],
            "weight": [3.0, -1.0, 2.0, 0.5],
            "timestamp": [10, 20, 30, 40],
        }
    )
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"plain.{suffix}"
        source.to_csv(path, index=False) if suffix == "csv" else source.to_parquet(path)
        result = _import(tmp_path, str(path), "--output", f"out-{suffix}.parquet")
        assert result.returncode == 0, result.stderr
        assert "dropped 1 row(s) with a zero or negative rating" in result.stdout
        table = pd.read_parquet(tmp_path / f"out-{suffix}.parquet")
        assert table.to_dict("list") == {
            "user_id": ["a", "a", "c"],
            "item_id": [1, 2, 3],
            "weight": [3.0, 2.0, 0.5],
            "timestamp": [10, 30, 40],
        }
    # the mapping names the weight column: the mapped one wins over a column named weight
    renamed = source.rename(columns={"user_id": "who", "item_id": "what"}).assign(stars=[1.0, 2.0, 3.0, 4.0])
    renamed.to_csv(tmp_path / "renamed.csv", index=False)
    result = _import(
        tmp_path, "renamed.csv", "--output", "mapped.parquet", "--map", "user=who,item=what,weight=stars"
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "mapped.parquet")
    assert table["weight"].tolist() == [1.0, 2.0, 3.0, 4.0] and table["timestamp"].tolist() == [
        10,
        20,
        30,
        40,
    ]


def test_import_table_with_a_mapping(tmp_path):
    """Any real --map is applied (it was refused: 'missing column user_id, item_id')."""
    pd.DataFrame({"who": ["a", "b", "a"], "what": [1, 2, 2], "n": [3.0, -1.0, 2.0]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    result = _import(tmp_path, "t.csv", "--output", "o.parquet", "--map", "user=who,item=what,weight=n")
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(tmp_path / "o.parquet").to_dict("list") == {
        "user_id": ["a", "a"],
        "item_id": [1, 2],
        "weight": [3.0, 2.0],
    }
    result = _import(tmp_path, "t.csv", "--output", "o2.parquet", "--map", "user=who,item=what")
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(tmp_path / "o2.parquet")["weight"].tolist() == [1.0, 1.0, 1.0]
    # a mapped column the file lacks names the file's columns; --map of another format
    result = _import(tmp_path, "t.csv", "--output", "o3.parquet", "--map", "user=userId,item=what")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "missing column userId (found columns: who, what, n)" in result.stderr
    assert not (tmp_path / "o3.parquet").exists()
    bad = main(
        [
            "import",
            "movielens",
            str(tmp_path / "t.csv"),
            "--output",
            str(tmp_path / "x.parquet"),
            "--map",
            "user=who",
        ]
    )
    assert bad == 2 and not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize(
    "content, mapping, message",
    [
        ("who,what,n\na,1,2\n", "user=who,item=who", "column who is mapped to user and item"),
        ("who,what,n\na,1,2\n", "user=who,item=what,weight=who", "column who is mapped to user and weight"),
        ("user_id,item_id,weight\n1,2,true\n1,3,false\n", None, "the weight column holds booleans"),
        ("user_id,item_id,weight\n1,2,3\n1,3,x\n", None, "1 row(s) have a missing or non-numeric weight"),
    ],
)
def test_import_table_mistakes_are_one_line(tmp_path, content, mapping, message):
    (tmp_path / "s.csv").write_text(content)
    result = _import(tmp_path, "s.csv", "--output", "o.parquet", *(["--map", mapping] if mapping else []))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("recsys: error: ") and message in result.stderr
    assert not (tmp_path / "o.parquet").exists()
