"""Item features from the side files, with the preprocessing the best teams used.

- ``year``: from years.tsv; items without a row get the year in their title,
  also for ranges like ``(1975-1979)`` and ``(2007-)`` (the first year).
- ``genre``: all genres of an item, a token sequence.
- ``directors`` / ``writers``: all credits, token sequences; ``director`` /
  ``writer``: one representative credit, the one whose items were watched by
  the most distinct users (ties: the smallest id).
- ``title``: the lower-cased words of the title without its year.
"""

import re

import numpy as np
import pandas as pd

TITLE_YEAR = re.compile(r"\((\d{4})(?:-\d{4})?-?\)\s*$")
WORD = re.compile(r"\w+")


def year_from_title(title):
    """First year of a title's trailing ``(YYYY)``, ``(YYYY-YYYY)`` or ``(YYYY-)``."""
    match = TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def title_words(title):
    return " ".join(WORD.findall(TITLE_YEAR.sub("", title).lower()))


def representative_credit(credits, column, users, items):
    """Per item, the credit whose items were watched by the most distinct users.

    credits: frame (item, <column>); users, items: the interactions.
    Returns a Series item -> credit for items that have at least one credit.
    """
    credit_codes, credit_names = pd.factorize(credits[column], sort=True)
    user_codes, user_names = pd.factorize(users)
    # every (interaction, credit of its item) pair, as credit * n_users + user
    watched = pd.DataFrame({"item": items, "user": user_codes}).merge(
        pd.DataFrame({"item": credits["item"].to_numpy(), "credit": credit_codes}), on="item"
    )
    pair = np.unique(watched["credit"].to_numpy(np.int64) * len(user_names) + watched["user"].to_numpy())
    distinct_users = np.bincount(pair // len(user_names), minlength=len(credit_names))
    ranked = pd.DataFrame(
        {"item": credits["item"].to_numpy(), "credit": credit_codes, "users": distinct_users[credit_codes]}
    ).sort_values(["item", "users", "credit"], ascending=[True, False, True], kind="stable")
    best = ranked.drop_duplicates("item")
    return pd.Series(np.asarray(credit_names)[best["credit"].to_numpy()], index=best["item"].to_numpy())


def build_item_table(item_ids, side, users, items):
    """The ``.item`` table (RecBole header names) for ``item_ids``.

    side: filename -> frame from raw.read_side_file (absent files are missing).
    users, items: the interactions the representative credits are counted on.
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

    for filename, column in (("directors.tsv", "director"), ("writers.tsv", "writer")):
        credits = side.get(filename)
        if credits is None:
            continue
        credits = credits[credits["item"].isin(index)].drop_duplicates()
        best = representative_credit(credits, column, users, items)
        table[f"{column}:token"] = best.reindex(index).fillna("").to_numpy()
        table[f"{column}s:token_seq"] = _joined(credits, column, index)
        stats[f"{column}s"] = int(credits[column].nunique())
        stats[f"representative_{column}s"] = int(best.nunique())
    return table, stats


def _joined(frame, column, index):
    """All values of each item joined by spaces (RecBole's token_seq separator)."""
    joined = frame.groupby("item", sort=False)[column].agg(" ".join)
    return joined.reindex(index).fillna("").to_numpy()
