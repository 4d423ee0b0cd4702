"""What the learned second stage (recbole_ext.blend.stack) knows of each (user, item) candidate.

Candidates are each user's items in any member's top N; their features come from the members'
lists and from the training interactions and item table of the fit the lists come from (the
validation fit's for the holdout, the final fit's for the submission). Raw scores change scale
between a member's validation fit and its refit, so the features are only what keeps its meaning
across fits: ranks, per-user min-max scaled scores, shares of users and interactions, days, years.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from atomic_data.items import read_item_text
from atomic_data.tables import read_inter
from recbole_ext.blend.fusion import RRF_OFFSET, EnsembleError, candidates, normalised_score
from recbole_ext.evaluator.metrics import K

FEATURES = {
    "members": "each member's rank, scaled score and presence; how many members list the item, its best rank",
    "agreement": "each member's share of its top 10 that the other members' top 10s hold, and its list's flatness (per user)",
    "popularity": "the item's share of users overall, over the data's latest period, and their ratio",
    "history": "the user's training interactions and days since the user's last one",
    "year": "the item's release year, against the user's last active year and the years of the user's latest items",
    "genre": "the share of the user's latest items sharing each of the item's genres",
    "sequence": "how often the item follows the user's latest items in other users' sequences; the user's last session",
}
ITEM_FIELD = {"year": "year", "genre": "genre"}  # groups that need a field of the .item file
RECENT_ITEMS = 10  # a user's latest items: their release years and genres
LATEST_PERIOD = 0.1  # the data's latest period: its last 10% of interactions
FOLLOW_WINDOW = 5  # sequence: an item "follows" another when it comes at most this many interactions later
LAST_ITEMS = 3  # sequence: the user's latest items whose followers count
SESSION_SECONDS = 3600  # sequence: the user's last session: interactions within an hour of the one before
SECONDS_PER_DAY = 86400
ABSENT_SCORE = -1.0  # a member's scaled score where its list lacks the item (scaled scores are in [0, 1])


def feature_groups(options, item_fields, where="stack"):
    """The groups the stage uses: the ones asked for (refused when the data lacks their field), or every
    group the data allows."""
    if options.features is None:
        return [group for group in FEATURES if ITEM_FIELD.get(group, "item") in {*item_fields, "item"}]
    for group in options.features:
        if group in ITEM_FIELD and ITEM_FIELD[group] not in item_fields:
            raise EnsembleError(
                f"{where}.features: {group!r} needs the item field {ITEM_FIELD[group]!r}, which the data lacks "
                f"(its item fields: {', '.join(item_fields) or 'none'})"
            )
    return list(dict.fromkeys(options.features))


# --- what the features read of one fit's training data ---


@dataclass
class Context:
    """One fit's training interactions and item table, as the features read them."""

    users: pd.Index
    items: pd.Index
    interactions: np.ndarray  # per user
    days_since_last: np.ndarray  # per user: to the data's last interaction
    last_year: np.ndarray  # per user: the calendar year of the user's last interaction
    recent_year: np.ndarray  # per user: the mean release year of the user's latest items (NaN: unknown)
    popularity: np.ndarray  # per item: the share of users who have it
    latest_popularity: np.ndarray  # per item: its share of the latest period's interactions
    item_year: np.ndarray  # per item (NaN: unknown)
    item_genres: np.ndarray  # items x genres, 0/1
    recent_genres: np.ndarray  # users x genres: the share of the user's latest items with the genre
    follows: object  # items x items (scipy csr): row a, the share of a's followers that are b
    last_items: np.ndarray  # users x LAST_ITEMS item codes, latest first (-1: none)
    last_session: np.ndarray  # per user: interactions in the user's last session


def context(users, items, times, item_table):
    """users, items, times: the training interactions (any order); item_table: the .item file's text columns
    indexed by original item id (read_item_table)."""
    order = np.lexsort((times, users))
    users, items, times = users[order], items[order], times[order]
    user_index, user_codes = _codes(users)
    item_index, item_codes = _codes(items)
    n_users, n_items = len(user_index), len(item_index)
    counts = np.bincount(user_codes, minlength=n_users)
    ends = np.cumsum(counts) - 1  # each user's last row
    from_end = ends[user_codes] - np.arange(len(users))
    recent = from_end < RECENT_ITEMS

    last_time = times[ends]
    popularity = np.bincount(np.unique(user_codes * n_items + item_codes) % n_items, minlength=n_items) / n_users
    cut = np.quantile(times, 1 - LATEST_PERIOD)
    latest = times >= cut
    latest_popularity = np.bincount(item_codes[latest], minlength=n_items) / max(1, latest.sum())

    years = pd.to_numeric(item_table.get("year", pd.Series(dtype=str)), errors="coerce")
    item_year = years.reindex(item_index).to_numpy(dtype=float)
    genre_text = item_table.get("genre", pd.Series(dtype=str)).reindex(item_index).fillna("")
    genre_lists = genre_text.str.split()
    pairs = genre_lists.explode().dropna()
    genre_codes, genre_names = pd.factorize(pairs)
    item_genres = np.zeros((n_items, len(genre_names)), np.float32)
    item_genres[item_index.get_indexer(pairs.index), genre_codes] = 1.0

    recent_users = user_codes[recent]
    recent_items = item_codes[recent]
    recent_counts = np.bincount(recent_users, minlength=n_users)
    recent_genres = np.zeros((n_users, len(genre_names)), np.float32)
    np.add.at(recent_genres, recent_users, item_genres[recent_items])
    recent_genres /= np.maximum(recent_counts, 1)[:, None]
    known = ~np.isnan(item_year[recent_items])
    year_sums = np.bincount(recent_users[known], item_year[recent_items][known], minlength=n_users)
    year_counts = np.bincount(recent_users[known], minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        recent_year = year_sums / year_counts
    follows, last_items, last_session = _sequence(user_codes, item_codes, times, counts, ends, n_items)
    return Context(
        user_index,
        item_index,
        counts,
        (times.max() - last_time) / SECONDS_PER_DAY,
        pd.to_datetime(last_time, unit="s").year.to_numpy(),
        recent_year,
        popularity,
        latest_popularity,
        item_year,
        item_genres,
        recent_genres,
        follows,
        last_items,
        last_session,
    )


def _sequence(user_codes, item_codes, times, counts, ends, n_items):
    """The follow matrix, each user's latest item codes and last session size (rows sorted by user, time)."""
    from scipy import sparse

    sources, targets = [], []
    for step in range(1, FOLLOW_WINDOW + 1):
        same_user = user_codes[step:] == user_codes[:-step]
        sources.append(item_codes[:-step][same_user])
        targets.append(item_codes[step:][same_user])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    follows = sparse.csr_matrix((np.ones(len(sources), np.float32), (sources, targets)), shape=(n_items, n_items))
    totals = np.asarray(follows.sum(axis=1)).ravel()
    follows = sparse.diags(1 / np.maximum(totals, 1)).astype(np.float32) @ follows
    last_items = np.full((len(counts), LAST_ITEMS), -1)
    for back in range(LAST_ITEMS):
        has = counts > back
        last_items[has, back] = item_codes[ends[has] - back]
    new_session = np.r_[True, (np.diff(times) > SESSION_SECONDS) | (user_codes[1:] != user_codes[:-1])]
    session_start = np.maximum.accumulate(np.where(new_session, np.arange(len(times)), 0))
    follows = follows.tocsr()
    follows.sum_duplicates()  # canonical (sorted, unique indices): its look-ups by (row, column) search, not scan
    return follows, last_items, ends - session_start[ends] + 1


def _codes(values):
    index = pd.Index(np.unique(values))
    return index, index.get_indexer(values)


# --- candidates and their features ---


def candidate_table(lists, depth):
    """The union of the members' top `depth` items (fusion.candidates: one row per (user, item), sorted by
    user, best rank in any member, item) with member columns rank_m (depth where absent) and scaled
    score_m (ABSENT_SCORE)."""
    lists = [top[top["rank"] < depth] for top in lists]
    both = candidates(  # one pass over the lists; 0 where absent: rank depth, score ABSENT_SCORE
        lists, lambda top: np.column_stack([depth - top["rank"], normalised_score(top) - ABSENT_SCORE])
    )
    ranks, scores = both.values[..., 0], both.values[..., 1]
    table = both.keys.astype({"best_rank": np.float32})
    for m in range(len(lists)):
        table[f"rank_{m}"] = (depth - ranks[:, m]).astype(np.float32)
        table[f"score_{m}"] = (scores[:, m] + ABSENT_SCORE).astype(np.float32)
    table["votes"] = (ranks > 0).sum(axis=1).astype(np.float32)
    table["votes_top10"] = (ranks > depth - K).sum(axis=1).astype(np.float32)
    return table


def features(table, groups, ctx, names):
    """The feature matrix (float32 frame) of the candidate table's rows; names: the members' names."""
    columns = {}
    if "members" in groups:
        for m, name in enumerate(names):
            columns[f"{name} rank"] = table[f"rank_{m}"]
            columns[f"{name} score"] = table[f"score_{m}"]
        for column in ("votes", "votes_top10", "best_rank"):
            columns[column] = table[column]
        # the simple blends' sums with equal weights, a start trees cannot build from sums of their own (the rank
        # sum counts a run that lacks the item at rank N, where the rank blend counts nothing)
        scores = table[[f"score_{m}" for m in range(len(names))]].to_numpy()
        ranks = table[[f"rank_{m}" for m in range(len(names))]].to_numpy()
        columns["scaled score sum"] = np.maximum(scores, 0).sum(axis=1)
        columns["reciprocal rank sum"] = (1 / (RRF_OFFSET + ranks)).sum(axis=1)
    if "agreement" in groups:
        top10 = table[[f"rank_{m}" for m in range(len(names))]].to_numpy() < K
        others = top10.sum(axis=1, keepdims=True) - top10  # members other than m that hold the item in their top 10
        shared = pd.DataFrame(top10 & (others > 0), index=table["user"]).groupby(level=0).sum() / K
        for m, name in enumerate(names):
            columns[f"{name} agreement"] = shared[m].reindex(table["user"]).to_numpy()
            # how flat the run's list is for this user: its 10th item's scaled score (1: as sure as of its first)
            tenth = table.loc[table[f"rank_{m}"] == K - 1].set_index("user")[f"score_{m}"]
            columns[f"{name} flatness"] = tenth.reindex(table["user"]).to_numpy()
    u = ctx.users.get_indexer(table["user"])
    i = ctx.items.get_indexer(table["item"])
    known_item = i >= 0  # every listed item is a training item; kept safe for hand-made lists
    i = np.where(known_item, i, 0)

    def per_item(values):
        return np.where(known_item, values[i], np.nan)

    if "popularity" in groups:
        columns["popularity"] = per_item(ctx.popularity)
        columns["latest popularity"] = per_item(ctx.latest_popularity)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns["trend"] = np.log((columns["latest popularity"] + 1e-6) / (columns["popularity"] + 1e-6))
    if "history" in groups:
        columns["interactions"] = np.log1p(ctx.interactions[u])
        columns["days since last"] = ctx.days_since_last[u]
    if "year" in groups:
        year = per_item(ctx.item_year)
        columns["year"] = year
        columns["year - last active year"] = year - ctx.last_year[u]
        columns["year - latest items' year"] = year - ctx.recent_year[u]
    if "genre" in groups:
        genres = ctx.item_genres[i]
        shared = (genres * ctx.recent_genres[u]).sum(axis=1) / np.maximum(genres.sum(axis=1), 1)
        columns["genre match"] = np.where(known_item, shared, np.nan)
    if "sequence" in groups:
        latest = ctx.last_items[u]
        for back in range(LAST_ITEMS):
            source = latest[:, back]
            found = np.asarray(ctx.follows[np.maximum(source, 0), i]).ravel()
            columns[f"follows latest {back + 1}"] = np.where(known_item & (source >= 0), found, 0.0)
        columns["last session"] = np.log1p(ctx.last_session[u])
    return pd.DataFrame({name: np.asarray(values, dtype=np.float32) for name, values in columns.items()})


def fit_context(prepared, dataset):
    """The Context of a prepared dataset (its name or valid_name): the training interactions of that fit."""
    users, items, times = read_inter(prepared.inter_path(dataset))
    item_path = prepared.data_path / dataset / f"{dataset}.item"
    table = read_item_text(item_path) if item_path.is_file() else pd.DataFrame(index=pd.Index([], name="item"))
    return context(users, items, times, table)


def item_fields(prepared):
    """The fields of the prepared data's .item file (none without side files)."""
    item_path = prepared.data_path / prepared.name / f"{prepared.name}.item"
    if not item_path.is_file():
        return []
    return [column.split(":")[0] for column in item_path.open().readline().rstrip("\n").split("\t")[1:]]
