"""The embedded default data: MovieLens-100K, rewritten in the competition's raw format.

The installed recbole package ships ``dataset_example/ml-100k`` (real
ratings with timestamps, titles, release years and genres; no directors or
writers), so the default needs no download. Every rating becomes an
implicit interaction, as in the competition.
"""

from pathlib import Path

import pandas as pd

from atomic_data.raw import RATINGS_FILE
from recbole_ext.files import staged

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
    return raw_dir


def _tsv(path, column, items, values):
    frame = pd.DataFrame({"item": items.to_numpy(), column: values.to_numpy()})
    frame.to_csv(path, sep="\t", index=False)


def embedded_default(data_dir):
    """The raw folder of the embedded default under data_dir, written on first use."""
    return write_ml100k_raw(Path(data_dir) / "raw" / "ml-100k")
