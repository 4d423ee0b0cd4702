"""The learned second stage (blend method ``stack``): a ranker over the union of the members' lists.

Candidates are each user's items in any member's top N. Every (user, item) gets the features of
FEATURES' groups, computed from the training interactions of the fit the lists come from (the
validation fit's for the holdout, the final fit's for the submission), and a LightGBM lambdarank
model, trained on the holdout users' hidden items, orders each user's candidates.

Honest by construction: the holdout users are cut into folds; a fold's users are ranked by a
model trained on the other folds only (its early stopping on a share of those), so the
cross-fitted estimate never scores a user with a model that saw the user's hidden items. The
submission's model is trained on every holdout user for the folds' mean number of rounds and
applied to the lists of the members refit on all data. Raw scores change scale between a member's
validation fit and its refit (more data, other epochs), so the stage reads only what keeps its
meaning across fits: ranks, per-user min-max scaled scores, shares of users and interactions,
days and years.
"""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atomic_data.items import read_item_text
from atomic_data.tables import read_inter
from recbole_ext.fusion import EnsembleError, _check_enough
from recbole_ext.metrics import COMPETITION, K, objective_means

# feature group: what its features say (docs/blends.md lists them)
FEATURES = {
    "members": "each member's rank, scaled score and presence; how many members list the item, its best rank",
    "agreement": "each member's share of its top 10 that the other members' top 10s hold (per user)",
    "popularity": "the item's share of users overall, over the data's latest period, and their ratio",
    "history": "the user's training interactions and days since the user's last one",
    "year": "the item's release year, against the user's last active year and the years of the user's latest items",
    "genre": "the share of the user's latest items sharing each of the item's genres",
}
ITEM_FIELD = {"year": "year", "genre": "genre"}  # groups that need a field of the .item file
DEFAULT_CANDIDATES = 50
DEFAULT_FOLDS = 5
RECENT_ITEMS = 10  # a user's latest items: their release years and genres
LATEST_PERIOD = 0.1  # the data's latest period: its last 10% of interactions
SECONDS_PER_DAY = 86400
ABSENT_SCORE = -1.0  # a member's scaled score where its list lacks the item (scaled scores are in [0, 1])
LGBM = {  # the ranker; rounds are chosen by early stopping on EARLY_STOP_SHARE of the training users
    "objective": "lambdarank",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "lambdarank_truncation_level": 20,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 500
EARLY_STOP_ROUNDS = 50
EARLY_STOP_SHARE = 0.15


@dataclass(frozen=True)
class Options:
    candidates: int = DEFAULT_CANDIDATES  # each member's top N
    folds: int = DEFAULT_FOLDS
    features: tuple | None = None  # None: every group the data allows

    def check(self, where="stack"):
        """One line naming the bad option, before any work."""
        from recbole_ext.config import did_you_mean, is_int

        if not is_int(self.candidates) or self.candidates < K:
            raise EnsembleError(f"{where}.candidates must be an integer >= {K}, got {self.candidates!r}")
        if not is_int(self.folds) or self.folds < 2:
            raise EnsembleError(f"{where}.folds must be an integer >= 2, got {self.folds!r}")
        for name in self.features or ():
            if name not in FEATURES:
                raise EnsembleError(
                    f"{where}.features: unknown feature {name!r}; known: {', '.join(FEATURES)}"
                    f"{did_you_mean(str(name), FEATURES)}"
                )
        if self.features is not None and "members" not in self.features:
            raise EnsembleError(f"{where}.features must include 'members' (the lists it ranks), got {self.features!r}")


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
    )


def _codes(values):
    index = pd.Index(np.unique(values))
    return index, index.get_indexer(values)


# --- candidates and their features ---


def candidate_table(lists, depth):
    """The union of the members' top `depth` items: one row per (user, item), sorted by user, best rank in any
    member, item; member columns rank_m (depth where absent) and scaled score_m (ABSENT_SCORE)."""
    long = []
    for m, top in enumerate(lists):
        top = top[top["rank"] < depth]
        by_user = top.groupby("user")["score"]
        low, high = by_user.transform("min"), by_user.transform("max")
        scaled = ((top["score"] - low) / (high - low).where(high > low)).fillna(1.0)
        long.append(pd.DataFrame({"user": top["user"], "item": top["item"], "m": m, "rank": top["rank"], "s": scaled}))
    long = pd.concat(long, ignore_index=True)
    wide = long.pivot_table(index=["user", "item"], columns="m", values=["rank", "s"], aggfunc="first")
    table = pd.DataFrame(index=wide.index)
    for m in range(len(lists)):
        table[f"rank_{m}"] = wide["rank"][m].fillna(depth).to_numpy(np.float32) if m in wide["rank"] else depth
        table[f"score_{m}"] = wide["s"][m].fillna(ABSENT_SCORE).to_numpy(np.float32) if m in wide["s"] else -1.0
    table = table.reset_index()
    ranks = table[[f"rank_{m}" for m in range(len(lists))]].to_numpy()
    table["best_rank"] = ranks.min(axis=1)
    table["votes"] = (ranks < depth).sum(axis=1).astype(np.float32)
    table["votes_top10"] = (ranks < K).sum(axis=1).astype(np.float32)
    return table.sort_values(["user", "best_rank", "item"], kind="stable").reset_index(drop=True)


def features(table, n_members, groups, ctx, names):
    """The feature matrix (float32 frame) of the candidate table's rows; names: the members' names."""
    columns = {}
    if "members" in groups:
        for m, name in enumerate(names):
            columns[f"{name} rank"] = table[f"rank_{m}"]
            columns[f"{name} score"] = table[f"score_{m}"]
        for column in ("votes", "votes_top10", "best_rank"):
            columns[column] = table[column]
    if "agreement" in groups:
        top10 = table[[f"rank_{m}" for m in range(n_members)]].to_numpy() < K
        others = top10.sum(axis=1, keepdims=True) - top10  # members other than m that hold the item in their top 10
        shared = pd.DataFrame(top10 & (others > 0), index=table["user"]).groupby(level=0).sum() / K
        for m, name in enumerate(names):
            columns[f"{name} agreement"] = shared[m].reindex(table["user"]).to_numpy()
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
    return pd.DataFrame({name: np.asarray(values, dtype=np.float32) for name, values in columns.items()})


# --- training, cross-fitting, ranking ---


def _threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _groups(users):
    """The sizes of consecutive runs of equal users (rows sorted by user)."""
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return np.diff(np.r_[starts, len(users)])


def fit(x, labels, users, seed, rounds=None, gains=None):
    """A ranker (a lightgbm Booster) on these rows, sorted by user; users without a hidden item among their
    candidates teach nothing and are dropped. Without rounds: early stopping on EARLY_STOP_SHARE of the
    users. Returns (model, rounds)."""
    import lightgbm

    useful = pd.Series(labels).groupby(users).transform("max").to_numpy() > 0
    x, labels, users = x[useful], labels[useful], users[useful]
    if not len(users):
        raise EnsembleError("no holdout user has a hidden item among the candidates: the stage has nothing to learn")
    params = {**LGBM, "seed": seed, "num_threads": _threads(), "eval_at": [K]}
    if gains is not None:  # graded labels: what a hit of each grade is worth (part_labels)
        params["label_gain"] = gains

    def dataset(rows, reference=None):
        return lightgbm.Dataset(x[rows], labels[rows], group=_groups(users[rows]), reference=reference)

    if rounds is not None:
        return lightgbm.train(params, dataset(slice(None)), num_boost_round=rounds), rounds
    distinct = np.unique(users)
    stop_users = np.random.default_rng(seed).choice(distinct, max(1, int(EARLY_STOP_SHARE * len(distinct))), False)
    stop = np.isin(users, stop_users)
    train = dataset(~stop)
    model = lightgbm.train(
        params,
        train,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dataset(stop, train)],
        callbacks=[lightgbm.early_stopping(EARLY_STOP_ROUNDS, verbose=False)],
    )
    return model, max(1, model.best_iteration or MAX_ROUNDS)


def ranked(table, predictions, k=K):
    """Each user's k best candidates by the stage's prediction (ties: best rank in any member, then item)."""
    scored = table[["user", "item", "best_rank"]].assign(score=predictions)
    scored = scored.sort_values(["user", "score", "best_rank", "item"], ascending=[True, False, True, True])
    scored["rank"] = scored.groupby("user", sort=False).cumcount()
    return scored.loc[scored["rank"] < k, ["user", "item", "score", "rank"]].reset_index(drop=True)


def user_folds(users, folds, seed):
    """Each user's fold (0..folds-1), the same for the same seed: a seeded permutation dealt in turn."""
    users = np.sort(np.unique(users))
    fold = np.empty(len(users), np.int64)
    fold[np.random.default_rng(seed).permutation(len(users))] = np.arange(len(users)) % folds
    return pd.Series(fold, index=users)


@dataclass
class Stage:
    """A fitted stage: the model trained on every holdout user, and what it reads."""

    options: Options
    groups: list
    names: list  # the members', in the lists' order
    model: object
    rounds: int

    def predict(self, lists, ctx, k=K):
        """Each user's k best candidates of these lists, and the features' means (to compare with the
        validation lists': how far the refit members' lists moved)."""
        table = candidate_table(lists, self.options.candidates)
        _check_enough(table.groupby("user").size(), K)
        x = features(table, len(lists), self.groups, ctx, self.names)
        return ranked(table, self.model.predict(x), k), x.mean()


def part_labels(table, hidden, objective):
    """The candidates' labels and LightGBM's label_gain: 1 for a hidden item, gains None; for a mix of the
    parts, 1 for a random-part item and 2 for a last-part one, each worth its part's share of a user's score
    per item (share / items of the last part, (1 - share) / items of the random part, as the holdout has them)."""
    keys = pd.MultiIndex.from_frame(table[["user", "item"]])
    hidden = hidden.drop_duplicates(["user", "item"])
    if objective.share is None or "part" not in hidden:
        return keys.isin(pd.MultiIndex.from_frame(hidden[["user", "item"]])).astype(np.int32), None
    grade = {"random": 1, "last": 2}
    graded = pd.Series(hidden["part"].map(grade).to_numpy(), index=pd.MultiIndex.from_frame(hidden[["user", "item"]]))
    labels = graded.reindex(keys).fillna(0).to_numpy(np.int32)
    per_user = hidden.groupby("part").size() / hidden.groupby("part")["user"].nunique()
    gains = [0.0, (1 - objective.share) / per_user.get("random", 1), objective.share / per_user.get("last", 1)]
    return labels, [g / max(gains) for g in gains]


def evaluate(lists, names, hidden, ctx, options, groups, seed=0, objective=COMPETITION):
    """Cross-fitted and fitted holdout scores of the stage on the members' validation lists (with the
    objective's, whose part shares weigh the labels), the cross-fitted lists, the stage trained on every
    holdout user and the importance of its features."""
    table = candidate_table(lists, options.candidates)
    table = table[table["user"].isin(hidden["user"])].reset_index(drop=True)
    _check_enough(table.groupby("user").size(), K)
    x = features(table, len(lists), groups, ctx, names)
    labels, gains = part_labels(table, hidden, objective)
    users = table["user"].to_numpy()
    fold_of = user_folds(hidden["user"], options.folds, seed)
    row_fold = fold_of.reindex(users).to_numpy()
    predictions = np.empty(len(table))
    fold_records = []
    for fold in range(options.folds):
        scored = row_fold == fold
        model, rounds = fit(x[~scored], labels[~scored], users[~scored], seed, gains=gains)
        predictions[scored] = model.predict(x[scored])
        fold_records.append({"users": int((fold_of == fold).sum()), "rounds": rounds})
    cross = ranked(table, predictions)
    rounds = max(1, round(np.mean([record["rounds"] for record in fold_records])))
    model, _ = fit(x, labels, users, seed, rounds, gains)
    stage = Stage(options, groups, names, model, rounds)
    importance = pd.Series(model.feature_importance("gain"), index=x.columns)
    return {
        "fitted": objective_means(ranked(table, model.predict(x)), hidden, objective),
        "cross_fitted": objective_means(cross, hidden, objective),
        "cross_fitted_lists": cross,
        "stage": stage,
        "folds": fold_records,
        "candidates_per_user": float(len(table) / table["user"].nunique()),
        "hidden_in_candidates": float((labels > 0).sum() / len(hidden[["user", "item"]].drop_duplicates())),
        "importance": (importance / importance.sum()).sort_values(ascending=False),
        "feature_means": x.mean(),
    }


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
