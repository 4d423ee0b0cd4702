"""The competition's metric, per user, and every number built from per-user values.

Recall@K = mean over users u of |topK(u) & I_u| / min(K, |I_u|), I_u the
hidden items of u. RecBole's Recall divides by |I_u|: a different number.
NDCG@K is the usual one (binary gains, ideal DCG over min(K, |I_u|) hits).

``user_scores`` is the one place of the formula: recall@K and ndcg@K of each
user. Everything else averages per-user values:

- the holdout score: the mean over the holdout users (``holdout_metrics``);
- a holdout part's (``last``, ``random``): the same formula with I_u cut to
  the part, over the users who have items in it (``part_scores``);
- an activity group's: the mean over the group's users, the groups being the
  terciles of the users' training interactions (``activity_groups``);
- a 95% interval: users resampled with replacement (``bootstrap_interval``);
- a paired difference of two runs: the per-user differences resampled, the
  same users for both runs (``paired_differences``);
- a choice made on one half of the users and scored on the other
  (``cross_fitted_choice``: tune.py's honest estimate);
- what a choice maximises (``Objective``, parsed from a name in one place,
  ``parse_objective``): a metric of all users, of one part, or a mix of the
  two parts, `recall@10 last:0.4` (calibration.py reads `calibrated` shares).
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

K = 10
RECALL, NDCG = f"recall@{K}", f"ndcg@{K}"
METRICS = (RECALL, NDCG)
ACTIVITY = ("light", "medium", "heavy")  # terciles of training interactions, fewest first
LEVEL = 0.95  # of every interval
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0  # one seed for every run: the same resampled users, comparable intervals


PARTS = ("last", "random")  # a holdout's parts (atomic_data.holdout.PART_NAMES)
CALIBRATED = "calibrated"  # the share estimated from the leaderboard log (calibration.py)
OBJECTIVE_TEXT = (
    f"{' or '.join(METRICS)}, of all users, of one holdout part (`{RECALL} last`, `{RECALL} random`), or a mix "
    f"of the parts: `{RECALL} last:0.4` (the last part's share) or `{RECALL} {CALIBRATED}` (the share the "
    "leaderboard log estimates)"
)


@dataclass(frozen=True)
class Objective:
    """What a choice maximises: metric over all users, over one part, or the mix share * last + (1 - share) *
    random of each user's part scores (a user with one part: that part's score)."""

    metric: str
    part: str | None = None
    share: float | str | None = None  # a number in [0, 1], or CALIBRATED until calibration.py reads it
    estimated: bool = field(default=False, compare=False)  # the share was read from the leaderboard's estimate

    @property
    def name(self):
        if self.share is None:
            return f"{self.metric} {self.part}" if self.part else self.metric
        return f"{self.metric} {CALIBRATED}" if self.share == CALIBRATED else f"{self.metric} last:{self.share:g}"

    @property
    def parts(self):
        """The holdout parts it needs items in."""
        if self.share is None:
            return (self.part,) if self.part else ()
        if self.share == CALIBRATED:
            return PARTS
        return tuple(part for part, weight in zip(PARTS, (self.share, 1 - self.share)) if weight != 0)

    def user_values(self, scores):
        """Its value for each user of part_scores' columns."""
        if self.share is None:
            return scores[self.name]
        last, random = scores[f"{self.metric} last"], scores[f"{self.metric} random"]
        return (self.share * last + (1 - self.share) * random).fillna(last).fillna(random).rename(self.name)

    def value(self, scores):
        return float(self.user_values(scores).mean())


COMPETITION = Objective(RECALL)  # the default: the leaderboard's metric over all holdout users


def parse_objective(text):
    """The Objective a name says (any case); ValueError (`must be ...`, for after the setting's name) when
    it names none."""
    words = str(text).lower().split()
    if len(words) in (1, 2) and words[0] in METRICS:
        rest = words[1] if len(words) == 2 else None
        if rest is None or rest in PARTS:
            return Objective(words[0], rest)
        if rest == CALIBRATED:
            return Objective(words[0], share=CALIBRATED)
        if rest.startswith("last:"):
            try:
                share = float(rest[len("last:") :])
            except ValueError:
                share = -1.0
            if 0 <= share <= 1:
                return Objective(words[0], share=share)
    raise ValueError(f"must be {OBJECTIVE_TEXT}, got {text!r}")


def user_scores(recommended, hidden, k=K):
    """recall@k and ndcg@k of every user of hidden: a frame indexed by user (sorted).

    recommended: frame (user, item, rank), rank 0 = best; users without a
        list score 0. hidden: frame (user, item); every user in it counts.
    """
    hidden = hidden[["user", "item"]].drop_duplicates()
    n_hidden = hidden.groupby("user").size()
    top = recommended.loc[recommended["rank"] < k, ["user", "item", "rank"]]
    hits = top.merge(hidden, on=["user", "item"])
    hit_count = hits.groupby("user").size().reindex(n_hidden.index, fill_value=0)
    recall = hit_count / np.minimum(k, n_hidden)

    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = pd.Series(discount[hits["rank"].to_numpy()], index=hits["user"].to_numpy())
    dcg = dcg.groupby(level=0).sum().reindex(n_hidden.index, fill_value=0.0)
    ideal = np.cumsum(discount)[np.minimum(k, n_hidden.to_numpy()) - 1]
    return pd.DataFrame({f"recall@{k}": recall.astype(float), f"ndcg@{k}": dcg / ideal})


def mean_scores(scores):
    """{metric: mean over users} of per-user scores."""
    return {metric: float(scores[metric].mean()) for metric in METRICS}


def part_means(scores):
    """{part: {"users": n, metric: mean}} of part_scores' columns, over the users with items in the part."""
    parts = [part for part in PARTS if f"{RECALL} {part}" in scores]  # not an objective's mix column
    means = {}
    for part in parts:
        scored = scores[scores[f"{RECALL} {part}"].notna()]
        means[part] = {"users": len(scored), **{m: float(scored[f"{m} {part}"].mean()) for m in METRICS}}
    return means


def evaluation_scores(scores):
    """What an evaluation during training reports: the means over all users (recall@10, ndcg@10),
    over each part's users (`recall@10 last`...) and of any objective's column (`recall@10 last:0.4`),
    any of which early stopping can follow."""
    by_part = {f"{m} {part}": means[m] for part, means in part_means(scores).items() for m in METRICS}
    mixes = {column: float(scores[column].mean()) for column in scores.columns if " last:" in column}
    return {**mean_scores(scores), **by_part, **mixes}


def objective_means(recommended, holdout, objective):
    """holdout_metrics of the lists, and the objective's value under its name (the same number when it is
    recall@10 or ndcg@10 of all users)."""
    users = part_scores(recommended, holdout) if objective.parts else user_scores(recommended, holdout)
    return {**mean_scores(users), objective.name: objective.value(users)}


def holdout_metrics(recommended, hidden):
    """recall@10 and ndcg@10 of recommendation lists against hidden items: means over the users of hidden."""
    return mean_scores(user_scores(recommended, hidden))


def part_scores(recommended, holdout):
    """user_scores against the whole holdout, plus `<metric> <part>` columns against each part of
    its `part` column (NaN for a user without items in that part)."""
    scores = user_scores(recommended, holdout)
    if "part" in holdout:
        for part, rows in holdout.groupby("part", sort=True, observed=True):
            scores = scores.join(user_scores(recommended, rows).add_suffix(f" {part}"))
    return scores


def activity_groups(train_interactions):
    """Each user's activity group (ACTIVITY) from the user's count of training interactions.

    The cut points are the 1/3 and 2/3 quantiles of the counts given: give every
    holdout user of a data version, so that every run on it gets the same groups.
    A user at a cut point goes to the lower group.
    """
    counts = pd.Series(train_interactions)
    cuts = np.quantile(counts.to_numpy(), [1 / 3, 2 / 3])
    codes = np.searchsorted(cuts, counts.to_numpy(), side="left")
    return pd.Series(np.asarray(ACTIVITY)[codes], index=counts.index, name="activity")


def bootstrap_interval(values, level=LEVEL, samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED):
    """The percentile bootstrap interval of the mean of per-user values: (low, high).

    values: one value per user, or a users x columns table (an interval per
    column, all from the same resampled users)."""
    table = np.asarray(values, dtype=float)
    means = _bootstrap_means(table.reshape(len(table), -1), samples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail], axis=0)
    return (float(low[0]), float(high[0])) if table.ndim == 1 else (low, high)


def _bootstrap_means(table, samples, seed, chunk=100):
    """Means of the rows of table over `samples` resamples of its rows with replacement."""
    rng = np.random.default_rng(seed)
    n = len(table)
    means = np.empty((samples, table.shape[1]))
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        # how often each user is drawn in each resample (one bincount for the chunk, each resample
        # in its own range of n); the means are then one matrix product
        drawn = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        means[start : start + size] = counts @ table / n
    return means


def paired_differences(scores, reference, level=LEVEL, seed=BOOTSTRAP_SEED):
    """Each column of scores (users x runs, one value per user) minus the reference column:
    {run: (mean difference, low, high)}, the interval from users resampled alike for both runs."""
    others = [column for column in scores.columns if column != reference]
    if not others:
        return {}
    differences = scores[others].sub(scores[reference], axis=0)
    low, high = bootstrap_interval(differences.to_numpy(), level, seed=seed)
    return {run: (float(differences[run].mean()), float(lo), float(hi)) for run, lo, hi in zip(others, low, high)}


def split_users(users, seed):
    """Two halves of the users, the same for the same seed."""
    users = np.sort(np.unique(users))
    shuffled = np.random.default_rng(seed).permutation(users)
    return np.sort(shuffled[: len(users) // 2]), np.sort(shuffled[len(users) // 2 :])


def cross_fitted_choice(scores, seed, mode="max"):
    """The best of several candidates (columns of scores: users x candidates, one value per
    user), chosen on the users it is scored on (fitted) and chosen on one half of the users,
    scored on the other, both ways (honest: the mean over all users, each user scored by the
    candidate chosen on the other half). Ties go to the earlier column."""
    half_a, half_b = split_users(scores.index, seed)
    means = {"all": scores.mean(), "A": scores.loc[half_a].mean(), "B": scores.loc[half_b].mean()}
    chosen = {half: (mean.idxmax() if mode == "max" else mean.idxmin()) for half, mean in means.items()}
    honest = pd.concat([scores.loc[half_a, chosen["B"]], scores.loc[half_b, chosen["A"]]])
    return {
        "fitted": float(means["all"][chosen["all"]]),
        "honest": float(honest.mean()),
        "chosen": chosen,
        "means": means,
        "users": (len(half_a), len(half_b)),
    }


def describe_difference(difference, low, high):
    """A paired difference in words: whether its interval leaves out zero."""
    verdict = "beyond" if low > 0 or high < 0 else "within"
    return f"{difference:+.4f} ({LEVEL:.0%} interval {low:+.4f} to {high:+.4f}: {verdict} the noise of this holdout)"


def holdout_detail(scores, seed=BOOTSTRAP_SEED):
    """What a run's summary.json says about its per-user scores (part_scores, with the users'
    `train_interactions` and `activity` when known): the users, the recall interval, each part
    and each activity group."""
    low, high = bootstrap_interval(scores[RECALL], seed=seed)
    detail = {
        "users": len(scores),
        "interval": {RECALL: [low, high], "level": LEVEL, "bootstrap_samples": BOOTSTRAP_SAMPLES, "seed": seed},
        "parts": {},
        "activity": {},
    }
    detail["parts"] = part_means(scores)
    if "activity" in scores:
        for group in ACTIVITY:
            members = scores[scores["activity"] == group]
            if len(members):
                counts = members["train_interactions"]
                detail["activity"][group] = {
                    "train_interactions": [int(counts.min()), int(counts.max())],
                    "users": len(members),
                    **mean_scores(members),
                }
    return detail


def describe_holdout(holdout, detail):
    """The lines a run logs about its holdout scores."""
    low, high = detail["interval"][RECALL]
    lines = [
        f"holdout {RECALL} {holdout[RECALL]:.4f} ({LEVEL:.0%} interval {low:.4f} to {high:.4f})  "
        f"{NDCG} {holdout[NDCG]:.4f}  over {detail['users']} users"
    ]
    parts = [f"{part} {s[RECALL]:.4f} / {s[NDCG]:.4f}" for part, s in detail["parts"].items()]
    groups = [
        f"{group} ({s['train_interactions'][0]}-{s['train_interactions'][1]}) {s[RECALL]:.4f} / {s[NDCG]:.4f}"
        for group, s in detail["activity"].items()
    ]
    if parts:
        lines.append(f"holdout {RECALL} / {NDCG} by part: " + ", ".join(parts))
    if groups:
        lines.append(f"holdout {RECALL} / {NDCG} by training interactions: " + ", ".join(groups))
    return lines


def install():
    """Register LeaderboardRecall, recall with the competition's denominator min(K, |I_u|), in RecBole's
    metric tables (defined here: this module imports no RecBole, the report reads it)."""
    import recbole.evaluator.metrics as metrics
    import recbole.evaluator.register as register
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.utils import EvaluatorType

    class LeaderboardRecall(TopkMetric):
        metric_type = EvaluatorType.RANKING
        smaller = False

        def calculate_metric(self, dataobject):
            pos_index, pos_len = self.used_info(dataobject)
            hits = np.cumsum(pos_index, axis=1)
            cutoffs = np.arange(1, pos_index.shape[1] + 1)
            result = hits / np.minimum(pos_len[:, None], cutoffs[None, :])
            return self.topk_result("leaderboardrecall", result)

    LeaderboardRecall.__module__ = metrics.__name__
    metrics.LeaderboardRecall = LeaderboardRecall
    name = "leaderboardrecall"
    register.metrics_dict[name] = LeaderboardRecall
    register.metric_information[name] = LeaderboardRecall.metric_need
    register.metric_types[name] = LeaderboardRecall.metric_type
