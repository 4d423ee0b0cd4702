import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TEST_RULE, write_raw

from atomic_data import HoldoutRule, RawDataError, prepare
from atomic_data.__main__ import main as atomic_data_cli
from atomic_data.holdout import LAST, NOT_HELD_OUT, RANDOM, holdout_parts
from atomic_data.items import Watched, representative_credit, title_words, year_from_title
from atomic_data.sample import main as sample_cli
from atomic_data.synthetic import main as synthetic_cli
from atomic_data.tables import read_inter
from recbole_ext.utils.files import staging_path

# ---------------------------------------------------------------- bad input


def prepare_fails(raw, tmp_path, message):
    out = tmp_path / "out"
    with pytest.raises(RawDataError) as error:
        prepare(raw, out, "m", TEST_RULE)
    assert message in str(error.value)
    leftovers = list(out.iterdir()) if out.exists() else []
    assert leftovers == [], f"half-written output left behind: {leftovers}"
    return str(error.value)


def test_missing_ratings_file_is_named(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    message = prepare_fails(raw, tmp_path, "train_ratings.csv: required file is missing")
    assert str(raw) in message


def test_missing_raw_folder(tmp_path):
    prepare_fails(tmp_path / "nowhere", tmp_path, "raw data folder does not exist")


def test_wrong_ratings_header(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 2, 3)])
    (raw / "train_ratings.csv").write_text("user,movie,time\n1,2,3\n")
    prepare_fails(raw, tmp_path, "train_ratings.csv:1: header is 'user,movie,time', expected 'user,item,time'")


def test_non_integer_item_names_the_line(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100), (1, 11, 101), (2, "x12", 102)])
    prepare_fails(raw, tmp_path, "train_ratings.csv:4: 'item' must be an integer, got 'x12'")


def test_non_integer_time_names_the_line(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100), (1, 11, "2015-01-01")])
    prepare_fails(raw, tmp_path, "train_ratings.csv:3: 'time' must be an integer (Unix seconds), got '2015-01-01'")


def test_missing_field_names_the_line(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    with open(raw / "train_ratings.csv", "a") as f:
        f.write("2,11\n")
    prepare_fails(raw, tmp_path, "train_ratings.csv:3: expected 3 fields 'user,item,time', got 2")


def test_empty_ratings_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train_ratings.csv").write_text("")
    prepare_fails(raw, tmp_path, "train_ratings.csv: file is empty, expected the header 'user,item,time'")


def test_header_only_ratings_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train_ratings.csv").write_text("user,item,time\n")
    prepare_fails(raw, tmp_path, "train_ratings.csv: no interactions after the header")


def test_side_file_with_wrong_separator(tmp_path):
    # the "/t" bug: a side file that is not tab-separated must not silently lose its columns
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (raw / "genres.tsv").write_text("item,genre\n10,Drama\n")
    prepare_fails(raw, tmp_path, "genres.tsv:1: header is 'item,genre', expected 'item\\tgenre'")


def test_side_file_non_integer_year(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)], years=[(10, 1999), (11, "199x")])
    prepare_fails(raw, tmp_path, "years.tsv:3: 'year' must be an integer, got '199x'")


def test_empty_side_file(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (raw / "directors.tsv").write_text("")
    prepare_fails(raw, tmp_path, "directors.tsv: file is empty, expected the header 'item\\tdirector'")


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (raw / "train_ratings.csv").write_text("user;item;time\n")
    assert atomic_data_cli([str(raw), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "header is 'user;item;time'" in err[0]


# ---------------------------------------------------------------- item features

# the 8 items of the real competition side files that have no row in years.tsv
REAL_TITLES_WITHOUT_YEAR = {
    6987: ("Cabinet of Dr. Caligari, The (Cabinet des Dr. Caligari., Das) (1920)", 1920),
    3310: ("Kid, The (1921)", 1921),
    7065: ("Birth of a Nation, The (1915)", 1915),
    7243: ("Intolerance: Love's Struggle Throughout the Ages (1916)", 1916),
    8511: ("Immigrant, The (1917)", 1917),
    6988: ("Broken Blossoms or The Yellow Man and the Girl (1919)", 1919),
    32898: ("Trip to the Moon, A (Voyage dans la lune, Le) (1902)", 1902),
    119145: ("Kingsman: The Secret Service (2015)", 2015),
}


@pytest.mark.parametrize(
    "title, year",
    [
        ("Fawlty Towers (1975-1979)", 1975),
        ("Big Bang Theory, The (2007-)", 2007),
        ("Matrix, The (1999)", 1999),
        ("No year here", None),
        ("Year not at the end (1999) Redux", None),
    ],
)
def test_year_from_title(title, year):
    assert year_from_title(title) == year


def test_all_eight_real_missing_years_are_filled(tmp_path):
    items = sorted(REAL_TITLES_WITHOUT_YEAR) + [1, 2]
    ratings = [(1, item, 100 + n) for n, item in enumerate(items)]
    titles = [(i, t) for i, (t, _) in REAL_TITLES_WITHOUT_YEAR.items()] + [(1, "A (1990)"), (2, "B (1991)")]
    raw = write_raw(tmp_path / "raw", ratings, titles=titles, years=[(1, 1990), (2, 1991)])
    prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    assert prepared.counts["years_filled"] == 8
    assert prepared.counts["items_without_year"] == 0
    table = read_item_file(prepared.data_path / "m" / "m.item")
    for item, (_, year) in REAL_TITLES_WITHOUT_YEAR.items():
        assert table.loc[item, "year:token"] == str(year)
    assert table.loc[3310, "title:token_seq"] == "kid the"


def test_title_words_drop_the_year():
    assert title_words("Matrix, The (1999)") == "matrix the"
    assert title_words("Fawlty Towers (1975-1979)") == "fawlty towers"


def test_representative_credit_prefers_most_distinct_users():
    # director d1 made items 1 and 2, d2 made items 2 and 3, d3 only item 4.
    # distinct users: d1 -> {a, b, c}, d2 -> {c, d}; item 2 has both: d1 wins.
    credits = pd.DataFrame({"item": [1, 2, 2, 3, 4], "director": ["d1", "d1", "d2", "d2", "d3"]})
    users = np.array([10, 11, 12, 12, 13, 13, 13])  # a=10, b=11, c=12, d=13
    items = np.array([1, 1, 1, 2, 3, 3, 3])  # d watched item 3 three times: still one user
    best = representative_credit(credits, "director", Watched(users, items))
    assert best.to_dict() == {1: "d1", 2: "d1", 3: "d2", 4: "d3"}


def test_representative_credit_ties_take_smallest_id():
    credits = pd.DataFrame({"item": [1, 1], "writer": ["w9", "w2"]})
    best = representative_credit(credits, "writer", Watched(np.array([5]), np.array([1])))
    assert best.to_dict() == {1: "w2"}


def read_item_file(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).set_index("item_id:token").rename(index=int)


def test_item_file_fields(tiny_prepared, tiny_raw):
    table = read_item_file(tiny_prepared.data_path / "tiny" / "tiny.item")
    assert list(table.columns) == [
        "title:token_seq",
        "year:token",
        "genre:token_seq",
        "director:token",
        "directors:token_seq",
        "writer:token",
        "writers:token_seq",
    ]
    genres = pd.read_csv(tiny_raw / "genres.tsv", sep="\t")
    item = genres["item"].iloc[0]
    assert sorted(table.loc[item, "genre:token_seq"].split()) == sorted(genres[genres.item == item].genre)
    directors = pd.read_csv(tiny_raw / "directors.tsv", sep="\t")
    for item, group in directors.groupby("item"):
        if item in table.index:
            assert table.loc[item, "director:token"] in set(group.director)
            assert sorted(table.loc[item, "directors:token_seq"].split()) == sorted(group.director)


def test_pipeline_runs_without_directors_and_writers(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 1), (1, 11, 2)], genres=[(10, "Drama"), (11, "Comedy"), (11, "Drama")])
    prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    table = read_item_file(prepared.data_path / "m" / "m.item")
    assert list(table.columns) == ["genre:token_seq"]
    assert table.loc[11, "genre:token_seq"] == "Comedy Drama"


# ---------------------------------------------------------------- interactions and holdout


def test_duplicates_dropped_keeping_the_earliest(tmp_path):
    ratings = [(1, 10, 300), (1, 11, 100), (1, 10, 200), (2, 10, 50), (2, 10, 50)]
    raw = write_raw(tmp_path / "raw", ratings)
    prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    assert prepared.counts["duplicates_dropped"] == 2
    inter = pd.read_csv(prepared.data_path / "m" / "m.inter", sep="\t")
    assert inter.values.tolist() == [[1, 11, 100], [1, 10, 200], [2, 10, 50]]


def test_holdout_sizes_follow_the_rule():
    rule = HoldoutRule(last=2, random=3, max_fraction=0.5, min_train=4, seed=1)
    counts = {1: 20, 2: 8, 3: 5, 4: 4, 5: 3}
    users = np.repeat(list(counts), list(counts.values()))
    parts = holdout_parts(users, rule)
    held = {u: int((parts[users == u] != NOT_HELD_OUT).sum()) for u in counts}
    # 20 -> min(5, 10, 16) = 5; 8 -> min(5, 4, 4) = 4; 5 -> min(5, 2, 1) = 1; 4 -> 0; 3 -> 0
    assert held == {1: 5, 2: 4, 3: 1, 4: 0, 5: 0}
    last_counts = {u: int((parts[users == u] == LAST).sum()) for u in counts}
    assert last_counts == {1: 2, 2: 2, 3: 1, 4: 0, 5: 0}


def test_holdout_last_items_are_the_latest_and_random_ones_earlier():
    rule = HoldoutRule(last=2, random=3, max_fraction=1.0, min_train=3, seed=5)
    users = np.repeat([1, 2], [12, 9])
    parts = holdout_parts(users, rule)
    for user in (1, 2):
        own = parts[users == user]
        assert (own[-2:] == LAST).all() and (own[:-2] != LAST).all()
        assert (own == RANDOM).sum() == 3


def test_holdout_random_picks_spread_over_each_users_earlier_history():
    # like the hidden set's sample "removed from the middle": anywhere before the last items, evenly
    rule = HoldoutRule(last=2, random=8, max_fraction=0.5, min_train=10, seed=3)
    users = np.repeat(np.arange(600), 82)  # 80 earlier interactions each
    parts = holdout_parts(users, rule)
    position = np.tile(np.arange(82), 600)
    picked = position[parts == RANDOM]
    assert len(picked) == 600 * 8
    quarters = np.bincount(picked // 20, minlength=4) / len(picked)
    assert quarters == pytest.approx([0.25] * 4, abs=0.03), quarters
    # and per user: not one block of neighbours
    first_user = np.flatnonzero(parts[:82] == RANDOM)
    assert first_user.max() - first_user.min() > 20


def test_holdout_is_deterministic_for_a_seed_and_varies_with_it():
    users = np.repeat(np.arange(50), 30)
    rule = HoldoutRule(last=1, random=4, max_fraction=0.5, min_train=5, seed=11)
    first, again = holdout_parts(users, rule), holdout_parts(users, rule)
    other = holdout_parts(users, HoldoutRule(1, 4, 0.5, 5, seed=12))
    assert (first == again).all()
    assert not (first == other).all()


def test_holdout_never_cuts_history_below_min_train(tiny_prepared):
    full = pd.read_csv(tiny_prepared.data_path / "tiny" / "tiny.inter", sep="\t")
    val = pd.read_csv(tiny_prepared.data_path / "tiny-val" / "tiny-val.inter", sep="\t")
    holdout = pd.read_csv(tiny_prepared.holdout_path)
    assert len(full) == len(val) + len(holdout)
    kept = val.groupby("user_id:token").size()
    assert kept.min() >= TEST_RULE.min_train
    # holdout rows are exactly the full rows missing from the validation files
    key = ["user_id:token", "item_id:token"]
    removed = full.merge(val[key], on=key, how="left", indicator=True)
    removed = removed[removed["_merge"] == "left_only"]
    assert sorted(map(tuple, removed[key].values)) == sorted(map(tuple, holdout[["user", "item"]].values))
    # each user's "last" holdout items come after all their training items
    last_time = holdout[holdout.part == "last"].groupby("user").time.min()
    train_end = val.groupby("user_id:token")["timestamp:float"].max()
    assert (last_time >= train_end.reindex(last_time.index)).all()


# ---------------------------------------------------------------- caching and output


def test_second_run_is_cached_and_does_no_work(tiny_raw, tmp_path):
    first = prepare(tiny_raw, tmp_path, "m", TEST_RULE)
    stamp = {p: p.stat().st_mtime_ns for p in first.data_path.rglob("*")}
    second = prepare(tiny_raw, tmp_path, "m", TEST_RULE)
    assert not first.cached and second.cached
    assert second.data_path == first.data_path
    assert {p: p.stat().st_mtime_ns for p in second.data_path.rglob("*")} == stamp


def test_changed_input_or_settings_get_a_new_version(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 1), (1, 11, 2), (1, 12, 3)])
    rule = HoldoutRule(1, 0, 1.0, 1, 0)
    first = prepare(raw, tmp_path / "out", "m", rule)
    assert prepare(raw, tmp_path / "out", "m", HoldoutRule(1, 0, 1.0, 1, 1)).fingerprint != first.fingerprint
    write_raw(raw, [(1, 10, 1), (1, 11, 2), (1, 13, 3)])
    changed = prepare(raw, tmp_path / "out", "m", rule)
    assert changed.fingerprint != first.fingerprint and not changed.cached
    manifest = json.loads((changed.data_path / "manifest.json").read_text())
    assert manifest["fingerprint"] == changed.fingerprint


def test_no_staging_left_after_success(tiny_prepared):
    out = tiny_prepared.data_path.parent
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_the_next_preparation_removes_what_a_killed_one_left(tiny_raw, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers = [staging_path(tmp_path / "0123456789abcdef", dead.pid), staging_path(tmp_path / "synthetic", dead.pid)]
    alive = staging_path(tmp_path / "fedcba9876543210", os.getppid())  # a live process's: not touched
    for folder in (*leftovers, alive):
        folder.mkdir()
    prepare(tiny_raw, tmp_path, "m", TEST_RULE)
    assert not any(folder.exists() for folder in leftovers) and alive.is_dir()


def test_a_cached_preparation_removes_what_killed_ones_left_under_old_and_new_names(tiny_raw, tmp_path):
    prepare(tiny_raw, tmp_path, "m", TEST_RULE)
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers = [
        tmp_path / f".staging-0123456789abcdef-{dead.pid}",
        staging_path(tmp_path / "fedcba9876543210", dead.pid),
    ]
    alive = tmp_path / f".staging-0123456789abcdef-{os.getppid()}"  # a live process's: not touched
    for folder in (*leftovers, alive):
        folder.mkdir()
    assert prepare(tiny_raw, tmp_path, "m", TEST_RULE).cached
    assert not any(folder.exists() for folder in leftovers) and alive.is_dir()


def test_cli_prints_counts(tiny_raw, tmp_path, capsys):
    assert atomic_data_cli([str(tiny_raw), "--out", str(tmp_path), "--name", "x", "--holdout-seed", "3"]) == 0
    out = capsys.readouterr().out
    for key in ("users: 120", "items:", "interactions:", "duplicates_dropped: 0", "years_filled:"):
        assert key in out
    assert "x/x.inter" in out and "x-val/x-val.inter" in out


# ---------------------------------------------------------------- RecBole reads the files


def test_recbole_create_dataset_loads_the_written_files(tiny_prepared):
    from recbole.config import Config
    from recbole.data import create_dataset

    full = pd.read_csv(tiny_prepared.data_path / "tiny" / "tiny.inter", sep="\t")
    items = read_item_file(tiny_prepared.data_path / "tiny" / "tiny.item")
    config = Config(
        model="BPR",
        dataset="tiny",
        config_dict={
            "data_path": str(tiny_prepared.data_path),
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"],
                "item": ["item_id", "genre", "directors", "year"],
            },
            "show_progress": False,
        },
    )
    dataset = create_dataset(config)
    assert dataset.user_num - 1 == full["user_id:token"].nunique()  # RecBole adds [PAD]
    assert dataset.item_num - 1 == full["item_id:token"].nunique()
    assert dataset.inter_num == len(full)
    assert str(dataset.field2type["genre"]) == "FeatureType.TOKEN_SEQ"
    assert dataset.num("genre") - 1 == len({g for s in items["genre:token_seq"] for g in s.split()})
    # a token_seq field round-trips: the genres of one item come back by name
    item = items.index[0]
    internal = dataset.token2id("item_id", str(item))
    genre_ids = np.asarray(dataset.item_feat["genre"][internal])
    names = dataset.id2token("genre", genre_ids[genre_ids > 0])
    assert sorted(names) == sorted(items.loc[item, "genre:token_seq"].split())


# ---------------------------------------------------------------- encodings, folders, id ranges


def test_a_cp1252_side_file_is_read_with_one_warning(tmp_path, caplog):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100), (1, 11, 101)])
    (raw / "titles.tsv").write_bytes("item\ttitle\n10\tAmélie (2001)\n11\tCafé “Noir” (1999)\n".encode("cp1252"))
    (raw / "directors.tsv").write_bytes("item\tdirector\n10\tJean-Pierre Jeunet\n11\tJosé\n".encode("latin-1"))
    with caplog.at_level("WARNING"):
        prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    table = read_item_file(prepared.data_path / "m" / "m.item")
    assert table.loc[10, "title:token_seq"] == "amélie" and table.loc[11, "title:token_seq"] == "café noir"
    assert table.loc[11, "director:token"] == "José"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{raw / 'titles.tsv'}: not UTF-8 (line 2, byte 0xe9); read as cp1252 (Windows Western European, "
        "which includes Latin-1's letters)",
        f"{raw / 'directors.tsv'}: not UTF-8 (line 3, byte 0xe9); read as cp1252 (Windows Western European, "
        "which includes Latin-1's letters)",
    ]


def test_a_byte_neither_utf8_nor_cp1252_names_the_file_line_and_byte(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (raw / "genres.tsv").write_bytes(b"item\tgenre\n10\tDrama\n10\tCom\x81dy\n")
    prepare_fails(raw, tmp_path, f"{raw / 'genres.tsv'}:3: byte 0x81 is neither UTF-8 nor cp1252 text")
    (raw / "genres.tsv").unlink()
    (raw / "train_ratings.csv").write_bytes(b"user,item,time\n1,10,100\n1,1\xe91,100\n")
    prepare_fails(raw, tmp_path, f"{raw / 'train_ratings.csv'}:3: byte 0xe9 is not UTF-8 text")


def test_a_folder_where_a_file_is_expected_is_named(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (raw / "genres.tsv").mkdir()
    prepare_fails(raw, tmp_path, f"{raw / 'genres.tsv'}: is a folder, expected a file")
    (raw / "genres.tsv").rmdir()
    (raw / "train_ratings.csv").unlink()
    (raw / "train_ratings.csv").mkdir()
    prepare_fails(raw, tmp_path, f"{raw / 'train_ratings.csv'}: is a folder, expected a file")


def test_an_output_path_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)])
    (tmp_path / "out").write_text("not a folder")
    assert atomic_data_cli([str(raw), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'out'}: is a file, expected a folder"]


@pytest.mark.parametrize(
    "row, message",
    [
        ((2**63, 10, 100), "'user' must be an integer below 2^63, got '9223372036854775808'"),
        ((1, 10**20, 100), "'item' must be an integer below 2^63, got '100000000000000000000'"),
        ((-1, 10, 100), "'user' must be a non-negative integer, got '-1'"),
        ((1, -10, 100), "'item' must be a non-negative integer, got '-10'"),
        ((1, 10, -100), "'time' must be a non-negative integer (Unix seconds), got '-100'"),
    ],
)
def test_ids_and_times_out_of_range_name_the_line(row, message, tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 11, 100), (1, 12, 101), row])
    prepare_fails(raw, tmp_path, f"train_ratings.csv:4: {message}")


def test_a_negative_item_in_a_side_file_names_the_line(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 100)], genres=[(10, "Drama"), (-3, "Comedy")])
    prepare_fails(raw, tmp_path, "genres.tsv:3: 'item' must be a non-negative integer, got '-3'")


def test_synthetic_data_never_replaces_data_without_force(tmp_path, capsys):
    folder = write_raw(tmp_path / "raw", [(1, 10, 100)])
    before = (folder / "train_ratings.csv").read_bytes()
    small = [str(folder), "--users", "20", "--items", "30", "--median", "8", "--min-count", "5", "--max-count", "12"]
    assert synthetic_cli(small) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {folder} already holds train_ratings.csv; add --force to replace it"
    ]
    assert (folder / "train_ratings.csv").read_bytes() == before
    assert synthetic_cli([*small, "--force"]) == 0
    ratings = pd.read_csv(folder / "train_ratings.csv")
    assert ratings["user"].nunique() == 20 and sorted(p.name for p in folder.iterdir()) == [
        "directors.tsv",
        "genres.tsv",
        "titles.tsv",
        "train_ratings.csv",
        "writers.tsv",
        "years.tsv",
    ]


def test_a_user_sample_keeps_every_interaction_of_the_drawn_users(tiny_raw, tmp_path, capsys):
    out = tmp_path / "sample"
    assert sample_cli([str(tiny_raw), str(out), "--users", "30", "--seed", "1"]) == 0
    full, sample = pd.read_csv(tiny_raw / "train_ratings.csv"), pd.read_csv(out / "train_ratings.csv")
    assert sample["user"].nunique() == 30
    expected = full[full["user"].isin(sample["user"].unique())]
    assert sample.reset_index(drop=True).equals(expected.reset_index(drop=True))  # same rows, same order
    for side in sorted(tiny_raw.glob("*.tsv")):
        assert (out / side.name).read_bytes() == side.read_bytes()
    other = tmp_path / "other"
    sample_cli([str(tiny_raw), str(other), "--users", "30", "--seed", "2"])
    assert set(pd.read_csv(other / "train_ratings.csv")["user"]) != set(sample["user"])  # the seed draws
    capsys.readouterr()
    assert sample_cli([str(tiny_raw), str(tmp_path / "too-many"), "--users", "121"]) == 2
    assert capsys.readouterr().err == f"error: --users must be between 1 and the 120 users of {tiny_raw}, got 121\n"
    assert not (tmp_path / "too-many").exists()
    assert sample_cli([str(tiny_raw), str(out), "--users", "3"]) == 2  # never over an existing folder
    assert capsys.readouterr().err == f"error: {out}: already exists; choose another folder\n"


# ---------------------------------------------------------------- input accepted with one warning


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_times_in_milliseconds_are_used_with_one_warning(tmp_path, caplog):
    ms = 1_700_000_000_000  # 2023-11-14 in milliseconds: the year 55,840 in seconds
    raw = write_raw(tmp_path / "raw", [(1, 10, ms + 2000), (1, 11, ms + 1000), (2, 10, ms)])
    with caplog.at_level("WARNING"):
        prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    assert warnings_of(caplog) == [
        f"{raw / 'train_ratings.csv'}: times look like milliseconds, not Unix seconds (line 2: {ms + 2000} would be "
        "the year 55,840); used as they are: only their order matters"
    ]
    inter = pd.read_csv(prepared.data_path / "m" / "m.inter", sep="\t")
    assert inter["item_id:token"].tolist() == [11, 10, 10]  # ordered by time


def test_times_in_seconds_and_milliseconds_mixed_are_refused(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 10, 1_700_000_000), (1, 11, 1_700_000_001_000)])
    prepare_fails(
        raw,
        tmp_path,
        "train_ratings.csv:3: time 1700000001000 is not in Unix seconds (milliseconds?), unlike line 2's "
        "1700000000: every row needs the same unit",
    )


def test_items_that_no_side_file_names_get_one_warning(tmp_path, caplog):
    ratings = [(1, item, item) for item in (10, 11, 12, 13, 14)]
    raw = write_raw(tmp_path / "raw", ratings, genres=[(10, "Drama"), (11, "Comedy")], years=[(11, 1999)])
    with caplog.at_level("WARNING"):
        prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    assert warnings_of(caplog) == [
        f"{raw / 'train_ratings.csv'}: 3 items are in no side file (years.tsv, genres.tsv), e.g. 12, 13, 14: "
        "their item features are empty"
    ]
    table = read_item_file(prepared.data_path / "m" / "m.item")
    assert table.loc[12, "genre:token_seq"] == "" and table.loc[12, "year:token"] == ""


def test_conflicting_rows_of_a_single_valued_side_file_get_one_warning_and_the_first_wins(tmp_path, caplog):
    ratings = [(1, 10, 1), (1, 11, 2)]
    years = [(10, 1999), (11, 2005), (10, 1999), (10, 2001), (11, 2006)]
    raw = write_raw(tmp_path / "raw", ratings, years=years, genres=[(10, "Drama"), (10, "Drama"), (11, "War")])
    with caplog.at_level("WARNING"):
        prepared = prepare(raw, tmp_path / "out", "m", HoldoutRule(0, 0, 1.0, 1, 0))
    assert warnings_of(caplog) == [  # a repeated row saying the same (item 10's 1999, its Drama) is no conflict
        f"{raw / 'years.tsv'}:5: item 10 again, with year 2001; line 2 said 1999: an item's first row is used "
        "(2 such rows)"
    ]
    table = read_item_file(prepared.data_path / "m" / "m.item")
    assert table.loc[10, "year:token"] == "1999" and table.loc[11, "year:token"] == "2005"


@pytest.mark.parametrize(
    "broken, damage",
    [
        ("manifest.json", lambda path: path.write_text('{"name": "tiny", ')),
        ("tiny/tiny.inter", lambda path: path.write_bytes(path.read_bytes()[:-20])),  # cut short
    ],
)
def test_a_broken_prepared_file_is_named_with_how_to_prepare_again(broken, damage, tiny_raw, tmp_path):
    prepared = prepare(tiny_raw, tmp_path, "tiny", TEST_RULE)
    damage(prepared.data_path / broken)
    with pytest.raises(RawDataError) as refused:
        prepare(tiny_raw, tmp_path, "tiny", TEST_RULE)
    assert str(refused.value).startswith(f"{prepared.data_path / broken}: ")
    assert str(refused.value).endswith(f"delete {prepared.data_path} to prepare the data again")


def test_a_prepared_inter_file_edited_by_hand_is_named(tiny_prepared):
    path = tiny_prepared.inter_path(tiny_prepared.valid_name)
    edited = path.with_name("edited.inter")
    edited.write_text(path.read_text().replace("\n1\t", "\nx\t", 1))  # the same size: a user id not a number
    with pytest.raises(RawDataError, match=f"^{edited}: not an .inter file written by atomic_data: "):
        read_inter(edited)


SLOW_PREPARATION = """
import os, sys, time
from atomic_data.__main__ import main
prepare = sys.modules["atomic_data.prepare"]  # (atomic_data.prepare is also the function's name)
write_version = prepare._write_version
def slow(*args):
    print("preparing", flush=True)
    time.sleep(float(os.environ.get("PREPARING_SECONDS", 60)))
    return write_version(*args)
prepare._write_version = slow  # time to be interrupted while preparing
sys.exit(main(sys.argv[1:]))
"""

SMALL_FILES = """
import resource, signal, sys
from atomic_data.__main__ import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with an OSError, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sent, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_preparation_says_so_in_one_line_and_leaves_nothing(sent, name, tiny_raw, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREPARATION, str(tiny_raw), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline() == "preparing\n"
        process.send_signal(sent)
        stderr = process.communicate(timeout=30)[1]
    finally:
        process.kill()
    assert process.returncode == 130 and stderr.splitlines() == [f"interrupted ({name}): nothing was written"]
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder left


def test_a_preparation_that_cannot_write_says_so_in_one_line_and_leaves_nothing(tiny_raw, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", SMALL_FILES, str(tiny_raw), "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: preparing {out} failed: ") and line.endswith("; nothing was written")
    assert "File too large" in line
    assert list(out.iterdir()) == []


def test_two_preparations_of_the_same_version_at_once_both_succeed(tiny_raw, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREPARATION, str(tiny_raw), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PREPARING_SECONDS": "3"},
    )
    try:
        assert first.stdout.readline() == "preparing\n"
        second = subprocess.run(
            [sys.executable, "-m", "atomic_data", str(tiny_raw), "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        first_out, first_err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, first_err + second.stderr
    [version] = out.iterdir()
    assert first_out.splitlines()[0] == f"{version} (written)"
    assert second.stdout.splitlines()[0] == f"{version} (cached, nothing to do)"  # it waited for the first
