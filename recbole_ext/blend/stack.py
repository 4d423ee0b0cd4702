"""The learned second stage (blend method ``stack``): a ranker over the union of the members' lists.

Candidates are each user's items in any member's top N, with the features of
recbole_ext.blend.stack_features; a LightGBM model, trained on the holdout users' hidden items,
orders each user's candidates.

Honest by construction: the holdout users are cut into folds; a fold's users are ranked by a
model trained on the other folds only (its early stopping on a share of those), so the
cross-fitted estimate never scores a user with a model that saw the user's hidden items. This
cross-fit runs once per bag, each on its own draw of the folds, and the bags' predictions are
averaged. Each bag's final model is trained on every holdout user for its folds' mean number of
rounds; their mean ranks the lists of the members refit on all data (the features keep their
meaning across fits: stack_features says how).
"""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recbole_ext.blend.fusion import EnsembleError, _check_enough
from recbole_ext.blend.stack_features import FEATURES, candidate_table, features
from recbole_ext.evaluator.metrics import COMPETITION, K, objective_means

DEFAULT_CANDIDATES = 50
DEFAULT_FOLDS = 3  # as good as 5 on the three real sets (docs/results.md), and 40% less training
# cross-fits on other draws of the folds (seeds seed, seed + 1, ...), their predictions averaged: 3 gained over one
# on all three real sets, 6 no more than 3 (docs/results.md, "Bagged cross-fits")
DEFAULT_BAGS = 3
LGBM = {  # the model; rounds are chosen by early stopping on EARLY_STOP_SHARE of the training users
    # pointwise (binary) with small, well-filled leaves: it beat lambdarank and 31-leaf trees on the
    # cross-fitted holdout of every data set tried (docs/blends.md): a few thousand users teach little
    "objective": "binary",
    "num_leaves": 7,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 500
EARLY_STOP_SHARE = 0.15
NOTHING_TO_LEARN = "no holdout user has a hidden item among the candidates: the stage has nothing to learn"


@dataclass(frozen=True)
class Boosting:
    """How fast the stage's trees learn: 0.05 and 50 rounds of patience trained twice as many rounds for the same
    estimate (docs/results.md, "A cheaper stage"); bench/stack.py --compare times those beside these."""

    learning_rate: float = 0.1
    early_stop_rounds: int = 20


@dataclass(frozen=True)
class Options:
    candidates: int = DEFAULT_CANDIDATES  # each member's top N
    folds: int = DEFAULT_FOLDS
    features: tuple | None = None  # None: every group the data allows
    bags: int = DEFAULT_BAGS

    def check(self, where="stack"):
        """One line naming the bad option, before any work."""
        from recbole_ext.config.keys import did_you_mean, is_int

        if not is_int(self.candidates) or self.candidates < K:
            raise EnsembleError(f"{where}.candidates must be an integer >= {K}, got {self.candidates!r}")
        if not is_int(self.folds) or self.folds < 2:
            raise EnsembleError(f"{where}.folds must be an integer >= 2, got {self.folds!r}")
        if not is_int(self.bags) or self.bags < 1:
            raise EnsembleError(f"{where}.bags must be an integer >= 1, got {self.bags!r}")
        for name in self.features or ():
            if name not in FEATURES:
                raise EnsembleError(
                    f"{where}.features: unknown feature {name!r}; known: {', '.join(FEATURES)}"
                    f"{did_you_mean(str(name), FEATURES)}"
                )
        if self.features is not None and "members" not in self.features:
            raise EnsembleError(f"{where}.features must include 'members' (the lists it ranks), got {self.features!r}")


# --- training, cross-fitting, ranking ---


def _threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def params(seed, boosting):
    return {**LGBM, "learning_rate": boosting.learning_rate, "seed": seed, "num_threads": _threads()}


def binned(x, labels, users, weights, seed, boosting):
    """The rows that teach, binned once for every model of the cross-fit and the final one (a lightgbm Dataset
    whose subsets share its bins; the bins read the features only, never the labels): users without a hidden
    item among their candidates teach nothing and are dropped. Returns (dataset, the rows of x it holds)."""
    import lightgbm

    useful = np.flatnonzero(pd.Series(labels).groupby(users).transform("max").to_numpy() > 0)
    if not len(useful):
        raise EnsembleError(NOTHING_TO_LEARN)
    data = lightgbm.Dataset(x.iloc[useful], labels[useful], weight=weights[useful], params=params(seed, boosting))
    return data.construct(), useful


def fit(data, rows, users, seed, boosting, rounds=None):
    """A model (a lightgbm Booster) of each candidate's chance to be hidden, trained on these rows of the binned
    data (users: each of its rows' user). Without rounds: early stopping on EARLY_STOP_SHARE of the rows' users.
    Returns (model, rounds)."""
    import lightgbm

    if not len(rows):
        raise EnsembleError(NOTHING_TO_LEARN)
    if rounds is not None:
        return lightgbm.train(params(seed, boosting), data.subset(rows), num_boost_round=rounds), rounds
    distinct = np.unique(users[rows])
    stop_users = np.random.default_rng(seed).choice(distinct, max(1, int(EARLY_STOP_SHARE * len(distinct))), False)
    stop = np.isin(users[rows], stop_users)
    model = lightgbm.train(
        params(seed, boosting),
        data.subset(rows[~stop]),
        num_boost_round=MAX_ROUNDS,
        valid_sets=[data.subset(rows[stop])],
        callbacks=[lightgbm.early_stopping(boosting.early_stop_rounds, verbose=False)],
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
    """A fitted stage: one model per bag, each trained on every holdout user, and what they read."""

    options: Options
    groups: list
    names: list  # the members', in the lists' order
    models: list
    rounds: list  # each model's

    def predict(self, lists, ctx, k=K):
        """Each user's k best candidates of these lists (the models' predictions averaged), and the features'
        means (to compare with the validation lists': how far the refit members' lists moved)."""
        table = candidate_table(lists, self.options.candidates)
        _check_enough(table.groupby("user").size(), K)
        x = features(table, self.groups, ctx, self.names)
        return ranked(table, averaged(self.models, x), k), x.mean()


def averaged(models, x):
    """The models' mean prediction for each row of x."""
    return np.mean([model.predict(x) for model in models], axis=0)


def part_weights(table, hidden, objective):
    """Each candidate's training weight: 1, and for a hidden item under a mix of the parts, its part's share
    of a user's score per item (share / items of the last part, (1 - share) / items of the random part, as
    the holdout has them), scaled to a mean of 1 over the hidden items."""
    weights = np.ones(len(table))
    hidden = hidden.drop_duplicates(["user", "item"])
    if objective.share is None or "part" not in hidden:
        return weights
    per_user = hidden.groupby("part").size() / hidden.groupby("part")["user"].nunique()
    worth = {
        "last": objective.share / per_user.get("last", 1),
        "random": (1 - objective.share) / per_user.get("random", 1),
    }
    part = pd.Series(hidden["part"].to_numpy(), index=pd.MultiIndex.from_frame(hidden[["user", "item"]]))
    of_row = part.reindex(pd.MultiIndex.from_frame(table[["user", "item"]])).map(worth).to_numpy(float)
    hit = ~np.isnan(of_row)
    weights[hit] = of_row[hit] / of_row[hit].mean()
    return weights


def labelled(lists, names, hidden, ctx, options, groups, objective=COMPETITION):
    """The holdout users' candidates (candidate_table), their features, their labels (1: a hidden item) and their
    training weights (part_weights, for the objective)."""
    table = candidate_table(lists, options.candidates)
    table = table[table["user"].isin(hidden["user"])].reset_index(drop=True)
    _check_enough(table.groupby("user").size(), K)
    x = features(table, groups, ctx, names)
    positives = pd.MultiIndex.from_frame(hidden[["user", "item"]].drop_duplicates())
    labels = pd.MultiIndex.from_frame(table[["user", "item"]]).isin(positives).astype(np.int32)
    return table, x, labels, part_weights(table, hidden, objective)


def cross_fit(table, x, data, hidden, folds, seed, boosting, teach=None):
    """Each candidate's prediction by a model trained on the other folds' users only; data: binned's (dataset,
    rows), shared by every cross-fit of the same candidates; teach(fold, users): the training users a fold's
    model keeps of those (default: all; bench/stack.py --curve keeps a share). Returns the predictions and each
    fold's record."""
    data, useful = data
    users = table["user"].to_numpy()
    fold_of = user_folds(hidden["user"], folds, seed)
    row_fold = fold_of.reindex(users).to_numpy()
    useful_users, useful_fold = users[useful], row_fold[useful]
    predictions = np.empty(len(table))
    records = []
    for fold in range(folds):
        rows = np.flatnonzero(useful_fold != fold)
        if teach is not None:
            rows = rows[np.isin(useful_users[rows], teach(fold, np.unique(useful_users[rows])))]
        model, rounds = fit(data, rows, useful_users, seed, boosting)
        scored = row_fold == fold
        predictions[scored] = model.predict(x[scored])
        records.append({"users": int((fold_of == fold).sum()), "rounds": rounds})
    return predictions, records


def evaluate(lists, names, hidden, ctx, options, groups, seed=0, objective=COMPETITION, boosting=Boosting()):
    """Cross-fitted and fitted holdout scores of the stage on the members' validation lists (with the
    objective's, whose part shares weigh the hidden items in training), the cross-fitted lists, the stage
    trained on every holdout user and the importance of its features. Each of options.bags cross-fits draws
    its own folds (seeds seed, seed + 1, ...) and trains its own final model; a candidate's prediction is
    their mean, each from a model that never saw the candidate's user."""
    table, x, labels, weights = labelled(lists, names, hidden, ctx, options, groups, objective)
    users = table["user"].to_numpy()
    data = binned(x, labels, users, weights, seed, boosting)  # once: every bag's folds and final model share it
    useful_users = users[data[1]]
    predictions, models, rounds, fold_records = [], [], [], []
    for bag_seed in range(seed, seed + options.bags):
        bag, records = cross_fit(table, x, data, hidden, options.folds, bag_seed, boosting)
        rounds.append(max(1, round(np.mean([record["rounds"] for record in records]))))
        models.append(fit(data[0], np.arange(len(useful_users)), useful_users, bag_seed, boosting, rounds[-1])[0])
        predictions.append(bag)
        fold_records += [{"bag": bag_seed - seed, **record} for record in records]
    cross = ranked(table, np.mean(predictions, axis=0))
    stage = Stage(options, groups, names, models, rounds)
    importance = pd.Series(np.sum([model.feature_importance("gain") for model in models], axis=0), index=x.columns)
    return {
        "fitted": objective_means(ranked(table, averaged(models, x)), hidden, objective),
        "cross_fitted": objective_means(cross, hidden, objective),
        "cross_fitted_lists": cross,
        "stage": stage,
        "folds": fold_records,
        "candidates_per_user": float(len(table) / table["user"].nunique()),
        "hidden_in_candidates": float(labels.sum() / len(hidden[["user", "item"]].drop_duplicates())),
        "importance": (importance / importance.sum()).sort_values(ascending=False),
        "feature_means": x.mean(),
    }
