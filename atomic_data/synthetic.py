"""Synthetic competition data with structure a model can learn.

    python -m atomic_data.synthetic OUT_DIR [--users N] [--items N] [--seed S] [--catalogue DIR] [--force]

Writes all six competition files (a folder that holds any of them already is
refused unless --force). The defaults are the competition's scale
(31,360 users, 6,807 items, about 5.15M interactions, 16 to about 2,900 per
user, median 114). Structure:
- taste: each user prefers a few genres (Dirichlet), items belong to genres;
- popularity: a heavy-tailed item popularity multiplies the taste;
- order in time: a user watches genre by genre in a personal order, older
  films first within a genre, in sessions of minutes separated by days;
- credits: directors and writers work mostly within one genre, so the
  attributes predict co-watching.
With ``--catalogue`` the items and their side files come from a real
competition folder (its five .tsv files); otherwise they are generated.
"""

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atomic_data.raw import RATINGS_FILE, SIDE_FILES, RawDataError, read_side_file
from atomic_data.tables import write_table
from recbole_ext.utils.files import new_staging

GENRES = (
    "Drama Comedy Thriller Romance Action Crime Adventure Sci-Fi Horror Fantasy "
    "Mystery Children Animation War Documentary Musical Western Film-Noir"
).split()
# the real catalogue's genre frequencies, most common first
GENRE_WEIGHTS = np.array(
    [3490, 2408, 1466, 1251, 1246, 924, 891, 653, 602, 557, 471, 432, 355, 346, 323, 282, 139, 97], float
)
FIRST_TIME = 1_104_537_600  # 2005-01-01
LAST_TIME = 1_427_760_000  # 2015-03-31


@dataclass
class Scale:
    users: int = 31_360
    items: int = 6_807
    median: float = 114  # interactions per user
    spread: float = 0.853  # lognormal sigma: mean about 164 at the default median
    min_count: int = 16
    max_count: int = 2_912


def generate(out_dir, scale=None, seed=0, catalogue=None):
    """Write the six files into out_dir (replacing them); returns the number of interactions."""
    scale = scale or Scale()
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    staging = new_staging(out_dir / "synthetic")  # the files appear together, when complete
    try:
        if catalogue is not None:
            side = _catalogue_side_files(Path(catalogue), scale.items, rng)
        else:
            side = _generated_side_files(scale.items, rng)
        for filename, frame in side.items():
            write_table(staging / filename, list(frame.columns), [frame[c] for c in frame.columns])

        item_ids, genre_matrix, era = _item_structure(side)
        ratings = _interactions(item_ids, genre_matrix, era, scale, rng)
        columns = [ratings[c] for c in ("user", "item", "time")]
        write_table(staging / RATINGS_FILE, ["user", "item", "time"], columns, sep=",")
        for path in staging.iterdir():
            path.replace(out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(ratings)


def _item_structure(side):
    genres = side["genres.tsv"]
    item_ids = np.sort(side["titles.tsv"]["item"].to_numpy())
    row = np.searchsorted(item_ids, genres["item"].to_numpy())
    col = pd.Index(GENRES).get_indexer(genres["genre"])
    keep = col >= 0
    genre_matrix = np.zeros((len(item_ids), len(GENRES)), np.float32)
    genre_matrix[row[keep], col[keep]] = 1.0
    genre_matrix /= np.maximum(genre_matrix.sum(1, keepdims=True), 1.0)
    years = side["years.tsv"].set_index("item")["year"].reindex(item_ids).astype(float)
    years = years.fillna(years.median()).to_numpy()
    era = (years - years.min()) / max(np.ptp(years), 1.0)
    return item_ids, genre_matrix, era


def _interactions(item_ids, genre_matrix, era, scale, rng, chunk=512):
    n_items = len(item_ids)
    counts = np.exp(rng.normal(np.log(scale.median), scale.spread, scale.users)).round().astype(np.int64)
    counts = np.clip(counts, scale.min_count, min(scale.max_count, int(0.6 * n_items)))
    taste = rng.dirichlet(np.full(len(GENRES), 0.3), scale.users).astype(np.float32)
    log_popularity = rng.normal(0.0, 1.2, n_items).astype(np.float32)
    genre_order = rng.random((scale.users, len(GENRES))).argsort(1).argsort(1)  # a user's genre sequence
    primary_genre = genre_matrix.argmax(1)
    user_ids = rng.permutation(np.arange(1, 4 * scale.users))[: scale.users]
    user_ids.sort()

    users, items, times = [], [], []
    for start in range(0, scale.users, chunk):
        stop = min(start + chunk, scale.users)
        affinity = taste[start:stop] @ genre_matrix.T  # [U, I]
        logits = 0.7 * log_popularity + 2.0 * np.log(affinity + 1e-3)
        logits += rng.gumbel(size=logits.shape).astype(np.float32)
        ranked = np.argsort(-logits, axis=1)  # Gumbel top-k: sampling without replacement
        for offset, user in enumerate(range(start, stop)):
            chosen = ranked[offset, : counts[user]]
            order_key = genre_order[user, primary_genre[chosen]] + 0.8 * era[chosen] + 0.3 * rng.random(len(chosen))
            chosen = chosen[np.argsort(order_key)]
            users.append(np.full(len(chosen), user_ids[user]))
            items.append(item_ids[chosen])
            times.append(_session_times(len(chosen), rng))
    return pd.DataFrame({"user": np.concatenate(users), "item": np.concatenate(items), "time": np.concatenate(times)})


def _session_times(n, rng):
    """Increasing timestamps: bursts of ratings minutes apart, days between bursts."""
    gaps = np.where(rng.random(n) < 0.9, rng.exponential(120.0, n), rng.exponential(5 * 86_400.0, n))
    times = np.cumsum(gaps.astype(np.int64))
    start = rng.integers(FIRST_TIME, max(FIRST_TIME + 1, LAST_TIME - times[-1]))
    return start + times


def _generated_side_files(n_items, rng):
    ids = np.sort(rng.choice(np.arange(1, 120_000), n_items, replace=False))
    primary = rng.choice(len(GENRES), n_items, p=GENRE_WEIGHTS / GENRE_WEIGHTS.sum())
    extra = rng.integers(0, 3, n_items)  # 0-2 more genres
    genre_rows = [(i, GENRES[g]) for i, g in zip(ids, primary)]
    for i, k in zip(ids, extra):
        for g in rng.choice(len(GENRES), k, replace=False):
            genre_rows.append((i, GENRES[g]))
    genres = pd.DataFrame(genre_rows, columns=["item", "genre"]).drop_duplicates()

    years = np.clip(np.round(2014 - rng.gamma(2.0, 9.0, n_items)), 1922, 2014).astype(np.int64)
    titles = [f"Synthetic Movie {i} ({y})" for i, y in zip(ids, years)]
    if n_items >= 2:  # the two title forms with ranges
        titles[0] = f"Synthetic Series {ids[0]} ({years[0]}-{years[0] + 4})"
        titles[1] = f"Synthetic Series {ids[1]} ({years[1]}-)"
    without_year = rng.choice(n_items, min(8, n_items // 10), replace=False)
    has_year = np.ones(n_items, bool)
    has_year[without_year] = False

    return {
        "titles.tsv": pd.DataFrame({"item": ids, "title": titles}),
        "years.tsv": pd.DataFrame({"item": ids[has_year], "year": years[has_year]}),
        "directors.tsv": _credits(ids, primary, "director", "nm1", 0.20, 0.81, [0.93, 0.05, 0.02], rng),
        "writers.tsv": _credits(ids, primary, "writer", "nm2", 0.44, 0.83, [0.45, 0.33, 0.14, 0.08], rng),
        "genres.tsv": genres,
    }


def _credits(ids, primary, column, prefix, pool_share, coverage, per_item, rng):
    """Credits drawn from people who work mostly in the item's primary genre."""
    n_people = max(2, int(pool_share * len(ids)))
    person_genre = rng.choice(len(GENRES), n_people, p=GENRE_WEIGHTS / GENRE_WEIGHTS.sum())
    by_genre = [np.flatnonzero(person_genre == g) for g in range(len(GENRES))]
    rows = []
    for i, g in zip(ids, primary):
        if rng.random() > coverage:
            continue
        k = rng.choice(len(per_item), p=per_item) + 1
        pool = by_genre[g] if len(by_genre[g]) and rng.random() < 0.85 else np.arange(n_people)
        for person in rng.choice(pool, min(k, len(pool)), replace=False):
            rows.append((i, f"{prefix}{person:06d}"))
    return pd.DataFrame(rows, columns=["item", column])


def _catalogue_side_files(catalogue, n_items, rng):
    side = {
        name: read_side_file(catalogue, name)
        for name in ("titles.tsv", "years.tsv", "directors.tsv", "writers.tsv", "genres.tsv")
    }
    missing = [name for name, frame in side.items() if frame is None]
    if missing:
        raise FileNotFoundError(f"{catalogue}: the catalogue needs {missing}")
    ids = side["titles.tsv"]["item"].to_numpy()
    if n_items < len(ids):
        ids = np.sort(rng.choice(ids, n_items, replace=False))
    return {name: frame[frame["item"].isin(ids)].reset_index(drop=True) for name, frame in side.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m atomic_data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    defaults = Scale()
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--median", type=float, default=defaults.median, help="median interactions per user")
    parser.add_argument("--min-count", type=int, default=defaults.min_count)
    parser.add_argument("--max-count", type=int, default=defaults.max_count)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalogue", type=Path, help="a folder with the five real side files")
    parser.add_argument("--force", action="store_true", help="replace competition files already in OUT_DIR")
    args = parser.parse_args(argv)
    present = [name for name in (RATINGS_FILE, *SIDE_FILES) if (args.out_dir / name).exists()]
    if args.out_dir.exists() and not args.out_dir.is_dir():
        return _refuse(f"{args.out_dir}: is a file, expected a folder")
    if present and not args.force:
        its = "it" if len(present) == 1 else "them"
        return _refuse(f"{args.out_dir} already holds {', '.join(present)}; add --force to replace {its}")
    scale = Scale(args.users, args.items, args.median, Scale.spread, args.min_count, args.max_count)
    try:
        rows = generate(args.out_dir, scale, args.seed, args.catalogue)
    except (RawDataError, FileNotFoundError) as error:  # a bad --catalogue
        return _refuse(str(error))
    print(f"{args.out_dir}: {rows:,} interactions, {args.users:,} users, {args.items:,} items")
    return 0


def _refuse(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
