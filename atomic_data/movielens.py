"""MovieLens rewritten in the competition's raw format: the embedded default and public releases.

The installed recbole package ships ``dataset_example/ml-100k`` (real
ratings with timestamps, titles, release years and genres; no directors or
writers), so the default needs no download. The public releases of GroupLens
(ml-latest-small, ml-25m, ml-latest: ``ratings.csv`` and ``movies.csv``) convert with

    python -m atomic_data.movielens SRC_DIR --out RAW_DIR [--min-interactions 16]

Every rating becomes an implicit interaction, as in the competition, and users
with fewer interactions than the competition's minimum (16) are left out.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from atomic_data.items import year_from_title
from atomic_data.raw import RATINGS_FILE, RawDataError
from recbole_ext.utils.files import claimed, staged

MIN_INTERACTIONS = 16  # the competition's least active user has 16
NO_GENRE = "(no genres listed)"  # movies.csv's placeholder

SIDE_FILES = ("titles.tsv", "years.tsv", "genres.tsv")  # what write_ml100k_raw writes besides the ratings


def ml100k_source():
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None:
        raise RuntimeError("recbole is not installed: run `make install` first")
    return Path(spec.origin).parent / "dataset_example" / "ml-100k"


def write_ml100k_raw(raw_dir):
    """Write the competition-format folder once; returns its path."""
    raw_dir = Path(raw_dir)
    if (raw_dir / RATINGS_FILE).is_file():
        return raw_dir
    with claimed(raw_dir, wait=True):  # a second command writing it at the same time waits, then uses it
        if not (raw_dir / RATINGS_FILE).is_file():
            _write_ml100k_raw(raw_dir)
    return raw_dir


def _write_ml100k_raw(raw_dir):
    source = ml100k_source()
    inter = pd.read_csv(source / "ml-100k.inter", sep="\t")
    item = pd.read_csv(source / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)

    ratings = pd.DataFrame(
        {
            "user": inter["user_id:token"].astype("int64"),
            "item": inter["item_id:token"].astype("int64"),
            "time": inter["timestamp:float"].astype("int64"),
        }
    ).sort_values(["user", "time"], kind="stable")
    ids = item["item_id:token"].astype("int64")
    year = item["release_year:token"]
    has_year = year.str.fullmatch(r"\d{4}")  # one item says "unkonwn"
    titles = item["movie_title:token_seq"] + (" (" + year + ")").where(has_year, "")
    genres = item["class:token_seq"].str.split(" ").explode()

    with staged(raw_dir) as staging:
        ratings.to_csv(staging / RATINGS_FILE, index=False)
        titles_tsv, years_tsv, genres_tsv = SIDE_FILES
        _tsv(staging / titles_tsv, "title", ids, titles)
        _tsv(staging / years_tsv, "year", ids[has_year], year[has_year])
        _tsv(staging / genres_tsv, "genre", ids[genres.index], genres)


def _tsv(path, column, items, values):
    frame = pd.DataFrame({"item": items.to_numpy(), column: values.to_numpy()})
    frame.to_csv(path, sep="\t", index=False)


def write_movielens_raw(source, raw_dir, min_interactions=MIN_INTERACTIONS):
    """A GroupLens release folder (ratings.csv, movies.csv) as a competition folder at raw_dir (which must
    not exist); returns (users, items, interactions) kept."""
    source, raw_dir = Path(source), Path(raw_dir)
    frames = {}
    for name, columns in (("ratings.csv", ["userId", "movieId", "timestamp"]), ("movies.csv", ["movieId", "title"])):
        path = source / name
        if not path.is_file():
            raise RawDataError(f"{path}: not found (a MovieLens release folder has ratings.csv and movies.csv)")
        try:
            frames[name] = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise RawDataError(f"{path}: not a CSV file ({error})") from None
        missing = [column for column in columns if column not in frames[name]]
        if missing:
            raise RawDataError(f"{path}: no column {', '.join(missing)}; expected the header of a MovieLens release")
    ratings = frames["ratings.csv"]
    try:
        ratings = pd.DataFrame(
            {
                "user": ratings["userId"].astype("int64"),
                "item": ratings["movieId"].astype("int64"),
                "time": ratings["timestamp"].astype("int64"),
            }
        )
    except ValueError as error:
        raise RawDataError(
            f"{source / 'ratings.csv'}: userId, movieId and timestamp must be integers ({error})"
        ) from None
    counts = ratings.groupby("user")["item"].transform("size")
    ratings = ratings[counts >= min_interactions].sort_values(["user", "time"], kind="stable")
    if ratings.empty:
        raise RawDataError(f"{source / 'ratings.csv'}: no user has {min_interactions} or more ratings")

    movies = frames["movies.csv"]
    movies = movies[movies["movieId"].str.fullmatch(r"\d+")]
    ids = movies["movieId"].astype("int64")
    keep = ids.isin(ratings["item"]).to_numpy()
    movies, ids = movies[keep], ids[keep]
    titles = movies["title"].str.strip()
    years = titles.map(year_from_title)
    has_year = years.notna()
    genres = movies["genres"].str.split("|").explode() if "genres" in movies else pd.Series(dtype=str)
    genres = genres[genres.ne(NO_GENRE) & genres.ne("")]

    with staged(raw_dir) as staging:
        ratings.to_csv(staging / RATINGS_FILE, index=False)
        _tsv(staging / "titles.tsv", "title", ids, titles)
        _tsv(staging / "years.tsv", "year", ids[has_year], years[has_year].astype("int64"))
        _tsv(staging / "genres.tsv", "genre", ids[genres.index], genres)
    return ratings["user"].nunique(), ratings["item"].nunique(), len(ratings)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m atomic_data.movielens",
        description="Rewrite a MovieLens release (ratings.csv, movies.csv) as a competition folder.",
    )
    parser.add_argument("source", type=Path, help="the release's folder, e.g. ml-latest-small")
    parser.add_argument("--out", type=Path, required=True, help="the competition folder to write (must not exist)")
    parser.add_argument(
        "--min-interactions",
        type=int,
        default=MIN_INTERACTIONS,
        help="leave out users with fewer (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        if args.out.exists():
            raise RawDataError(f"{args.out}: already exists; choose another folder")
        users, items, interactions = write_movielens_raw(args.source, args.out, args.min_interactions)
    except RawDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {interactions} interactions of {users} users and {items} items from {args.source}")
    return 0


def embedded_default(data_dir):
    """The raw folder of the embedded default under data_dir, written on first use."""
    return write_ml100k_raw(Path(data_dir) / "raw" / "ml-100k")


if __name__ == "__main__":
    sys.exit(main())
