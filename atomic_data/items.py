"""Item features from the side files, with the preprocessing the best teams used.

- ``year``: from years.tsv; items without a row get the year in their title,
  also for ranges like ``(1975-1979)`` and ``(2007-)`` (the first year).
- ``genre``: all genres of an item, a token sequence.
- ``directors`` / ``writers``: all credits, token sequences; ``director`` /
  ``writer``: one representative credit, the one whose items were watched by
  the most distinct users (ties: the smallest id).
- ``title``: the lower-cased words of the title without its year.
"""

import csv
import re
from collections import defaultdict

import numpy as np
import pandas as pd
import scipy.sparse as sp

# every field the .item file can hold, and the side files it is built from (any one of them suffices)
ITEM_FIELDS = {
    "title": ("titles.tsv",),
    "year": ("years.tsv", "titles.tsv"),
    "genre": ("genres.tsv",),
    "director": ("directors.tsv",),
    "directors": ("directors.tsv",),
    "writer": ("writers.tsv",),
    "writers": ("writers.tsv",),
}
TITLE_YEAR = re.compile(r"\((\d{4})(?:-\d{4})?-?\)\s*$")
WORD = re.compile(r"\w+")


def item_fields(side_files):
    """The fields of the .item file prepared from a folder with these side files, in ITEM_FIELDS' order."""
    return [field for field, sources in ITEM_FIELDS.items() if set(sources) & set(side_files)]


def year_from_title(title):
    """First year of a title's trailing ``(YYYY)``, ``(YYYY-YYYY)`` or ``(YYYY-)``."""
    match = TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def title_words(title):
    return " ".join(WORD.findall(TITLE_YEAR.sub("", title).lower()))


class Watched:
    """The interactions as a binary user x item matrix (one row per distinct pair)."""

    def __init__(self, users, items):
        if (np.diff(users) < 0).any():  # prepare() passes them sorted by user already
            order = np.argsort(users, kind="stable")
            users, items = users[order], items[order]
        item_codes, item_names = pd.factorize(items)
        self.items = pd.Index(item_names)
        # rows straight from the user boundaries: no COO -> CSR sort of millions of entries
        indptr = np.concatenate(([0], np.flatnonzero(np.diff(users)) + 1, [len(users)]))
        self.matrix = sp.csr_matrix(
            (np.ones(len(users), np.float32), item_codes, indptr), shape=(len(indptr) - 1, len(item_names))
        )


def representative_credit(credits, column, watched):
    """Per item, the credit whose items were watched by the most distinct users.

    credits: frame (item, <column>); watched: the interactions (Watched).
    Returns a Series item -> credit for the items that have a credit.
    """
    credit_codes, credit_names = pd.factorize(credits[column], sort=True)
    credit_item = watched.items.get_indexer(credits["item"])  # -1: credit of an unwatched item
    known = credit_item >= 0
    credited = sp.csr_matrix(
        (np.ones(known.sum(), np.float32), (credit_item[known], credit_codes[known])),
        shape=(len(watched.items), len(credit_names)),
    )
    # (user x credit) has a nonzero where the user watched any item of the credit
    distinct_users = (watched.matrix @ credited).getnnz(axis=0)
    ranked = pd.DataFrame(
        {"item": credits["item"].to_numpy(), "credit": credit_codes, "users": distinct_users[credit_codes]}
    ).sort_values(["item", "users", "credit"], ascending=[True, False, True], kind="stable")
    best = ranked.drop_duplicates("item")
    return pd.Series(np.asarray(credit_names)[best["credit"].to_numpy()], index=best["item"].to_numpy())


def build_item_table(item_ids, side, users, items):
    """The ``.item`` table (RecBole header names) for ``item_ids``.

    side: filename -> frame from raw.read_side_file (absent files are missing).
    users, items: the distinct (user, item) interactions the representative
    credits are counted on.
    Returns (table, stats).
    """
    table = pd.DataFrame({"item_id:token": item_ids})
    index = pd.Index(item_ids)
    stats = {}

    titles = side.get("titles.tsv")
    if titles is not None:
        titles = titles.drop_duplicates("item").set_index("item")["title"]
        table["title:token_seq"] = titles.reindex(index).fillna("").map(title_words).to_numpy()

    years = side.get("years.tsv")
    year = pd.Series(pd.NA, index=index, dtype="Int64")
    if years is not None:
        year.update(years.drop_duplicates("item").set_index("item")["year"].astype("Int64"))
    if titles is not None:
        missing = year.isna() & index.isin(titles.index)
        from_title = titles.reindex(index[missing]).map(year_from_title)
        year[missing] = from_title.astype("Int64").to_numpy()
        stats["years_filled"] = int(from_title.notna().sum())
    if years is not None or titles is not None:
        stats["items_without_year"] = int(year.isna().sum())
        table["year:token"] = year.astype("string").fillna("").to_numpy()

    genres = side.get("genres.tsv")
    if genres is not None:
        table["genre:token_seq"] = _joined(genres, "genre", index)

    watched = None
    for filename, column in (("directors.tsv", "director"), ("writers.tsv", "writer")):
        credits = side.get(filename)
        if credits is None:
            continue
        watched = watched or Watched(users, items)
        credits = credits[credits["item"].isin(index)].drop_duplicates()
        best = representative_credit(credits, column, watched)
        table[f"{column}:token"] = best.reindex(index).fillna("").to_numpy()
        table[f"{column}s:token_seq"] = _joined(credits, column, index)
        stats[f"{column}s"] = int(credits[column].nunique())
        stats[f"representative_{column}s"] = int(best.nunique())
    return table, stats


def _joined(frame, column, index):
    """All values of each item joined by spaces (RecBole's token_seq separator), in file order."""
    values = defaultdict(list)  # a dict of lists: 20x faster than a pandas groupby-join here
    for item, value in zip(frame["item"].tolist(), frame[column].tolist()):
        values[item].append(value)
    return np.array([" ".join(values.get(item, ())) for item in index.tolist()], dtype=object)


def read_item_text(path):
    """A prepared .item file as text: a frame indexed by original item id, one column per field, named
    without its type; a token_seq value is space-separated."""
    # titles hold quotes (11'09"01): no quoting, as atomic_data writes them
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    table.columns = [column.split(":")[0] for column in table.columns]
    ids = table.pop(table.columns[0]).astype(np.int64)  # item_id: atomic_data writes it first
    return table.set_index(pd.Index(ids.to_numpy(), name="item"))
