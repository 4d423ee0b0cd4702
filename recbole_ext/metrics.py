"""The competition's metric.

Recall@K = mean over users u of |topK(u) & I_u| / min(K, |I_u|), I_u the
hidden items of u. RecBole's Recall divides by |I_u|: a different number.
NDCG@K is the usual one (binary gains, ideal DCG over min(K, |I_u|) hits).

``holdout_metrics`` scores recommendation lists the way the leaderboard
scores a submission; ``LeaderboardRecall`` is the same recall as a RecBole
metric, so RecBole's own evaluation can report it (``leaderboardrecall@10``).
"""

import numpy as np
import pandas as pd
from recbole.evaluator.base_metric import TopkMetric
from recbole.utils import EvaluatorType

K = 10


def holdout_metrics(recommended, hidden, k=K):
    """recall@k and ndcg@k of recommendation lists against hidden items.

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
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float((dcg / ideal).mean())}


class LeaderboardRecall(TopkMetric):
    """Recall with the competition's denominator min(K, |I_u|)."""

    metric_type = EvaluatorType.RANKING
    smaller = False

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)
        hits = np.cumsum(pos_index, axis=1)
        cutoffs = np.arange(1, pos_index.shape[1] + 1)
        result = hits / np.minimum(pos_len[:, None], cutoffs[None, :])
        return self.topk_result("leaderboardrecall", result)


def install():
    """Register LeaderboardRecall in RecBole's metric tables."""
    import recbole.evaluator.metrics as metrics
    import recbole.evaluator.register as register

    LeaderboardRecall.__module__ = metrics.__name__
    metrics.LeaderboardRecall = LeaderboardRecall
    name = "leaderboardrecall"
    register.metrics_dict[name] = LeaderboardRecall
    register.metric_information[name] = LeaderboardRecall.metric_need
    register.metric_types[name] = LeaderboardRecall.metric_type
