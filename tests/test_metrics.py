import math

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct

from recbole_ext.metrics import holdout_metrics


def frame(lists):
    """{user: [items in rank order]} -> frame (user, item, rank)."""
    rows = [(u, i, r) for u, items in lists.items() for r, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


def hidden(sets):
    return pd.DataFrame([(u, i) for u, items in sets.items() for i in items], columns=["user", "item"])


def test_recall_divides_by_min_of_k_and_hidden_count():
    recommended = frame({
        1: list(range(100, 110)),  # 2 of its 3 hidden items: 2/3
        2: list(range(200, 210)),  # 6 of 15 hidden: 6/min(10, 15) = 0.6
        3: [300, 301, 302, 303, 399, 304, 305, 306, 307, 308],  # its 1 hidden item at rank 4: 1
        4: list(range(400, 410)),  # nothing: 0
    })
    truth = hidden({
        1: [100, 105, 999],
        2: [200, 201, 202, 203, 204, 205] + list(range(250, 259)),
        3: [399],
        4: [499, 498],
    })
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
