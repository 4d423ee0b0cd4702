"""A MovieLens release (ratings.csv, movies.csv) rewritten as a competition folder."""

from pathlib import Path

import pandas as pd
import pytest

from atomic_data import HoldoutRule, prepare
from atomic_data.movielens import main

LATEST_SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def write_release(folder, ratings, movies):
    folder.mkdir(parents=True)
    pd.DataFrame(ratings, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        folder / "ratings.csv", index=False
    )
    pd.DataFrame(movies, columns=["movieId", "title", "genres"]).to_csv(folder / "movies.csv", index=False)
    return folder


def test_a_release_becomes_competition_files_with_the_competitions_user_minimum(tmp_path, capsys):
    ratings = [(1, item, 4.0, 1000 - item) for item in range(1, 17)]  # 16 ratings: kept, in time order
    ratings += [(2, item, 3.5, 5000 + item) for item in range(1, 16)]  # 15: left out
    movies = [(item, f"Film {item} ({1990 + item})", "Comedy|Drama") for item in range(1, 16)]
    movies += [(16, "Untitled", "(no genres listed)"), (99, "Never Rated (2001)", "Horror")]
    source = write_release(tmp_path / "ml", ratings, movies)
    assert main([str(source), "--out", str(tmp_path / "raw")]) == 0
    assert "16 interactions of 1 users and 16 items" in capsys.readouterr().out
    inter = pd.read_csv(tmp_path / "raw" / "train_ratings.csv")
    assert list(inter.columns) == ["user", "item", "time"] and set(inter["user"]) == {1}
    assert inter["time"].is_monotonic_increasing and len(inter) == 16
    years = pd.read_csv(tmp_path / "raw" / "years.tsv", sep="\t")
    assert dict(zip(years["item"], years["year"]))[3] == 1993 and 16 not in set(years["item"])  # no year, no row
    genres = pd.read_csv(tmp_path / "raw" / "genres.tsv", sep="\t")
    assert set(genres["genre"]) == {"Comedy", "Drama"} and 16 not in set(genres["item"])
    titles = pd.read_csv(tmp_path / "raw" / "titles.tsv", sep="\t")
    assert set(titles["item"]) == set(range(1, 17))  # films nobody kept rated are left out
    prepared = prepare(tmp_path / "raw", tmp_path / "prepared", "movies", HoldoutRule(2, 3, 0.5, 8, 0))
    assert prepared.counts["users"] == 1 and prepared.counts["holdout_interactions"] == 5


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda folder: (folder / "movies.csv").unlink(), "movies.csv: not found"),
        (lambda folder: (folder / "ratings.csv").write_text("user,item\n1,2\n"), "ratings.csv: no column userId"),
        (
            lambda folder: (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,x,4,5\n"),
            "userId, movieId and timestamp must be integers",
        ),
    ],
)
def test_a_bad_release_is_refused_in_one_line_and_writes_nothing(change, expected, tmp_path, capsys):
    source = write_release(tmp_path / "ml", [(1, 1, 4.0, 1)], [(1, "A (2000)", "Drama")])
    change(source)
    assert main([str(source), "--out", str(tmp_path / "raw")]) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1
    assert not (tmp_path / "raw").exists()


@pytest.mark.skipif(not LATEST_SMALL.is_dir(), reason=f"MovieLens ml-latest-small is not at {LATEST_SMALL}")
def test_ml_latest_small_converts_and_prepares(tmp_path):
    """The real release, cut to its first 40 users: every one of them has 20 or more ratings."""
    ratings = pd.read_csv(LATEST_SMALL / "ratings.csv")
    sample = tmp_path / "ml"
    sample.mkdir()
    ratings[ratings["userId"] <= 40].to_csv(sample / "ratings.csv", index=False)
    (sample / "movies.csv").write_bytes((LATEST_SMALL / "movies.csv").read_bytes())
    assert main([str(sample), "--out", str(tmp_path / "raw")]) == 0
    prepared = prepare(tmp_path / "raw", tmp_path / "prepared", "movies", HoldoutRule(2, 8, 0.25, 10, 42))
    kept = ratings[ratings["userId"] <= 40]
    assert prepared.counts["users"] == 40 and prepared.counts["interactions"] == len(kept)
    assert prepared.counts["items_without_year"] < 0.01 * prepared.counts["items"]
