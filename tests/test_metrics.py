import math

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct

from recbole_ext.evaluator.metrics import (
    activity_groups,
    bootstrap_interval,
    cross_fitted_choice,
    holdout_detail,
    holdout_metrics,
    paired_differences,
    part_scores,
    split_users,
)


def frame(lists):
    """{user: [items in rank order]} -> frame (user, item, rank)."""
    rows = [(u, i, r) for u, items in lists.items() for r, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


def hidden(sets):
    return pd.DataFrame([(u, i) for u, items in sets.items() for i in items], columns=["user", "item"])


def test_recall_divides_by_min_of_k_and_hidden_count():
    recommended = frame(
        {
            1: list(range(100, 110)),  # 2 of its 3 hidden items: 2/3
            2: list(range(200, 210)),  # 6 of 15 hidden: 6/min(10, 15) = 0.6
            3: [300, 301, 302, 303, 399, 304, 305, 306, 307, 308],  # its 1 hidden item at rank 4: 1
            4: list(range(400, 410)),  # nothing: 0
        }
    )
    truth = hidden(
        {
            1: [100, 105, 999],
            2: [200, 201, 202, 203, 204, 205] + list(range(250, 259)),
            3: [399],
            4: [499, 498],
        }
    )
    result = holdout_metrics(recommended, truth)
    assert result["recall@10"] == pytest.approx((2 / 3 + 0.6 + 1 + 0) / 4)


def test_ranks_past_k_do_not_count_and_users_without_lists_score_zero():
    recommended = frame({1: list(range(10)) + [42]})  # 42 at rank 10: outside the top 10
    truth = hidden({1: [42], 2: [7]})
    assert holdout_metrics(recommended, truth)["recall@10"] == 0.0


def test_ndcg_by_hand():
    # user 1: hits at ranks 0 and 2 of 3 hidden; ideal = 3 hits at ranks 0, 1, 2
    recommended = frame({1: [10, 11, 12, 13], 2: [20, 21]})
    truth = hidden({1: [10, 12, 99], 2: [21]})
    dcg1 = 1 + 1 / math.log2(4)
    ideal1 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    dcg2 = 1 / math.log2(3)
    assert holdout_metrics(recommended, truth)["ndcg@10"] == pytest.approx((dcg1 / ideal1 + dcg2 / 1.0) / 2)


def test_recbole_reports_the_same_recall_as_a_registered_metric(tiny_prepared, tmp_path):
    from recbole.config import Config

    config = Config(
        model="BPR",
        dataset=tiny_prepared.valid_name,
        config_dict={
            "data_path": str(tiny_prepared.data_path),
            "checkpoint_dir": str(tmp_path),
            "metrics": ["LeaderboardRecall", "Recall"],
            "topk": [10],
        },
    )
    # two users: 2 hits of 3 hidden; 5 hits of 12 hidden
    hits = np.zeros((2, 10), dtype=np.int64)
    hits[0, [0, 4]] = 1
    hits[1, :5] = 1
    pos_len = torch.tensor([[3], [12]])
    struct = DataStruct()
    struct.set("rec.topk", torch.cat([torch.from_numpy(hits), pos_len], dim=1))
    result = Evaluator(config).evaluate(struct)
    assert result["leaderboardrecall@10"] == pytest.approx((2 / 3 + 5 / 10) / 2, abs=1e-4)
    assert result["recall@10"] == pytest.approx((2 / 3 + 5 / 12) / 2, abs=1e-4)  # RecBole's differs


# --- per part, per activity group, intervals, paired differences, cross-fitted choices ---


def holdout_frame(parts):
    """{user: {"last": [items], "random": [items]}} -> the holdout frame (user, item, part)."""
    rows = [(u, i, part) for u, by_part in parts.items() for part, items in by_part.items() for i in items]
    return pd.DataFrame(rows, columns=["user", "item", "part"])


def test_part_scores_cut_the_hidden_items_to_each_part():
    recommended = frame(
        {
            1: [11, 31, 99, 32] + list(range(500, 506)),  # hits: last 11 (rank 0), random 31 (rank 1), 32 (rank 3)
            2: [21] + list(range(600, 609)),  # its only (last) item at rank 0
        }
    )
    holdout = holdout_frame({1: {"last": [11, 12], "random": [31, 32, 33]}, 2: {"last": [21]}})
    scores = part_scores(recommended, holdout)
    d = [1 / math.log2(r + 2) for r in range(10)]  # the discount of rank r
    assert scores.loc[1, "recall@10"] == pytest.approx(3 / 5)
    assert scores.loc[1, "recall@10 last"] == pytest.approx(1 / 2)
    assert scores.loc[1, "recall@10 random"] == pytest.approx(2 / 3)
    assert scores.loc[1, "ndcg@10 last"] == pytest.approx(d[0] / (d[0] + d[1]))
    assert scores.loc[1, "ndcg@10 random"] == pytest.approx((d[1] + d[3]) / (d[0] + d[1] + d[2]))
    assert scores.loc[2, "recall@10"] == scores.loc[2, "recall@10 last"] == 1.0
    assert np.isnan(scores.loc[2, "recall@10 random"])  # no random items: not scored on that part

    detail = holdout_detail(scores)
    assert detail["users"] == 2
    assert detail["parts"]["last"] == pytest.approx(
        {"users": 2, "recall@10": (1 / 2 + 1) / 2, "ndcg@10": (d[0] / (d[0] + d[1]) + 1) / 2}
    )
    assert detail["parts"]["random"]["users"] == 1
    assert detail["parts"]["random"]["recall@10"] == pytest.approx(2 / 3)


def test_activity_terciles_put_a_user_at_a_cut_point_in_the_lower_group():
    counts = pd.Series([10, 20, 30, 40, 50, 60], index=[1, 2, 3, 4, 5, 6])
    # cut points: the 1/3 and 2/3 quantiles, 26.7 and 43.3
    assert activity_groups(counts).tolist() == ["light", "light", "medium", "medium", "heavy", "heavy"]
    ties = pd.Series([5, 5, 5, 9, 9, 9])  # cut points 5 and 9: nobody above 9
    assert activity_groups(ties).tolist() == ["light"] * 3 + ["medium"] * 3


def test_activity_groups_average_their_users():
    scores = pd.DataFrame(
        {
            "recall@10": [0.1, 0.3, 0.5, 0.7, 0.2, 0.4],
            "ndcg@10": [0.2, 0.2, 0.6, 0.6, 0.9, 0.3],
            "train_interactions": [12, 15, 40, 41, 90, 300],
            "activity": ["light", "light", "medium", "medium", "heavy", "heavy"],
        },
        index=[1, 2, 3, 4, 5, 6],
    )
    groups = holdout_detail(scores)["activity"]
    assert list(groups) == ["light", "medium", "heavy"]
    assert [groups[g]["train_interactions"] for g in groups] == [[12, 15], [40, 41], [90, 300]]
    assert [groups[g]["users"] for g in groups] == [2, 2, 2]
    assert [groups[g]["recall@10"] for g in groups] == pytest.approx([0.2, 0.6, 0.3])
    assert [groups[g]["ndcg@10"] for g in groups] == pytest.approx([0.2, 0.6, 0.6])


def test_paired_difference_by_hand():
    scores = pd.DataFrame({"best": [1.0, 0.5, 0.0, 0.5], "other": [0.5, 0.5, 0.0, 0.0]})
    difference, low, high = paired_differences(scores, "best")["other"]
    assert difference == pytest.approx((-0.5 + 0 + 0 - 0.5) / 4)
    assert -0.5 <= low < difference < high <= 0.0  # a mean of resampled differences, each -0.5 or 0


def test_pairing_removes_what_the_users_share():
    # run b is run a minus 0.01 for every user: a certain difference, while the users vary a lot
    a = np.random.default_rng(5).random(300)
    scores = pd.DataFrame({"a": a, "b": a - 0.01})
    difference, low, high = paired_differences(scores, "a")["b"]
    assert difference == low == pytest.approx(-0.01) and high == pytest.approx(-0.01)
    low_a, high_a = bootstrap_interval(scores["a"])
    assert high_a - low_a > 0.05  # each run's own interval is wide, and the two overlap


def test_the_95_interval_covers_the_true_recall_in_at_least_90_percent_of_draws():
    # each user hits each of min(10, h) hidden items with the user's own probability p ~ Beta(2, 6):
    # the true mean recall over users is E[p] = 2 / 8
    rng = np.random.default_rng(11)
    true_recall, covered, draws = 2 / 8, 0, 200
    for _ in range(draws):
        p = rng.beta(2, 6, size=300)
        slots = np.minimum(10, rng.integers(2, 16, size=300))
        recall = rng.binomial(slots, p) / slots
        low, high = bootstrap_interval(recall)
        covered += low <= true_recall <= high
    assert covered / draws >= 0.90


def test_cross_fitted_choice_scores_each_half_with_the_other_halfs_choice():
    users = np.arange(1, 21)
    half_a, half_b = split_users(users, seed=0)
    # x serves half a only, y half b only: either is the best of all users (0.5); chosen on
    # one half, a trial serves the other half nothing
    x = pd.Series(np.isin(users, half_a).astype(float), index=users)
    y = pd.Series(np.isin(users, half_b).astype(float), index=users)
    z = pd.Series(0.25, index=users)
    choice = cross_fitted_choice(pd.DataFrame({"x": x, "y": y, "z": z}), seed=0)
    assert choice["chosen"] == {"all": "x", "A": "x", "B": "y"}  # ties: the earlier column
    assert choice["fitted"] == 0.5 and choice["honest"] == 0.0
    assert choice["users"] == (10, 10)
    # mode min: the lowest, here of the negated values: the same choices
    lowest = cross_fitted_choice(-pd.DataFrame({"x": x, "y": y, "z": z}), seed=0, mode="min")
    assert lowest["chosen"] == choice["chosen"] and (lowest["fitted"], lowest["honest"]) == (-0.5, 0.0)


def test_on_pure_noise_trials_the_fitted_best_is_optimistic_and_the_honest_number_is_not():
    # 20 trials with the same true recall 0.2: every difference between them is noise
    rng = np.random.default_rng(2024)
    true_recall, searches = 0.2, 100
    fitted, honest, trial_means = [], [], []
    for search in range(searches):
        values = rng.binomial(10, true_recall, size=(500, 20)) / 10
        choice = cross_fitted_choice(pd.DataFrame(values, index=np.arange(500)), seed=search)
        fitted.append(choice["fitted"])
        honest.append(choice["honest"])
        trial_means.append(values.mean())
    fitted_excess = np.array(fitted) - true_recall
    honest_excess = np.array(honest) - true_recall
    assert all(f >= m for f, m in zip(fitted, trial_means))  # the best is above the trials' mean, always
    # one trial's mean has a standard error of 0.0057: the best of 20 is about 1.9 of them too high
    assert fitted_excess.mean() > 0.007
    # the honest number is off by noise only: its average over the searches is near 0
    standard_error = honest_excess.std(ddof=1) / np.sqrt(searches)
    assert abs(honest_excess.mean()) < 3 * standard_error
    assert honest_excess.mean() < fitted_excess.mean() / 4
