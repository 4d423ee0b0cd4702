"""The holdout's parts scored as the board scores the hidden set: the slot effect.

A submission's board score and its holdout lists are drawn from different
candidate sets. The validation fit never saw the hidden set's items, so its
lists hold them beside the holdout's items; the refit, whose submission the
board scores, has the holdout's items in its training data and never
recommends them. So a holdout item competes for the top 10 with the hidden
items and with the user's other holdout items, a hidden item on the board with
the other hidden items only. Scored as is, the holdout loses slots to both, and
by how much depends on the holdout's make-up (2 last + 8 random), not the
board's. Ranked without the user's other holdout items, a holdout item faces
what a hidden item faces (fillers and the hidden items in the board's own
make-up), plus one hidden item more than a hidden item has beside it: above an
item at the cut with about the chance b (the board score) that a hidden item is
in the top 10, so the cut is 10 + b (docs/numbers.md, "the slot effect").

The other difference, not modelled: a board with more latest items per user than
the holdout's last part holds them further ahead of the training data, where a
sequential model finds fewer (the horizon effect), and the holdout's two latest items
do not tell how many fewer (docs/numbers.md). measurable says so where an objective's
share implies it, and uses an estimated share only as far as the holdout measures it.
"""

import numpy as np
import pandas as pd

from recbole_ext.evaluator.metrics import PARTS, RECALL, K, Objective


def part_recalls_at(recommended, holdout, cutoff, holdout_out=False):
    """Each holdout user's `recall@10 <part>` of lists cut after `cutoff` slots (a fraction of a slot counts that
    fraction of a hit there: linear between whole cutoffs), over min(10, the part's items) as the board's
    recall@10; NaN for a user without items in a part, 0 without a list. holdout_out: each holdout item ranked
    with the user's other holdout items taken out of the list. recommended: (user, item, rank), rank 0 = best;
    holdout: (user, item, part)."""
    hits = recommended[["user", "item", "rank"]].merge(holdout[["user", "item", "part"]], on=["user", "item"])
    if holdout_out:
        hits = hits.sort_values(["user", "rank"], kind="stable")
        hits["rank"] -= hits.groupby("user").cumcount().to_numpy()
    hits["found"] = np.clip(cutoff - hits["rank"].to_numpy(), 0, 1)
    found = hits.groupby(["user", "part"], observed=True)["found"].sum()
    sizes = holdout.groupby(["user", "part"], observed=True).size()
    recall = (found.reindex(sizes.index, fill_value=0.0) / np.minimum(K, sizes)).unstack("part")
    users = pd.Index(np.sort(holdout["user"].unique()), name="user")
    return recall.reindex(index=users, columns=list(PARTS)).add_prefix(f"{RECALL} ")


def board_like_parts(recommended, holdout, board_score):
    """part_recalls_at as a hidden item is scored on the board: each holdout item ranked without the user's other
    holdout items, cut at 10 + board_score (the submission's board Recall@10)."""
    return part_recalls_at(recommended, holdout, K + board_score, holdout_out=True)


def measurable(objective, holdout):
    """(the objective to use, a line to print or None) where the objective's last-part share means more latest
    items per user than holdout.last (holdout: base.yaml's keys). A share read from the leaderboard's estimate is
    used only as far as the holdout measures it: at holdout.last of its items; a share given is used as given,
    with a caution. On the simulated boards of bench/calibration.py with 40-epoch members (docs/numbers.md) the
    blend chosen for a share of 0.5 on a 2 + 8 holdout scored below the default one, and so did one whose further
    latest items were extrapolated; the blend chosen on the matching holdout did not."""
    if not isinstance(objective.share, (int, float)) or not holdout:
        return objective, None
    total = holdout["last"] + holdout["random"]
    matching = matching_holdout(objective.share, total)
    if matching["last"] <= holdout["last"]:
        return objective, None
    further = (
        f"{objective.name} means about {matching['last']} of {total} hidden items per user are latest ones, more "
        f"than the holdout's {holdout['last']}: weighing its last part up rates a sequential model's next "
        f"{holdout['last']} items as the board's {matching['last']}, which lie further ahead, where it finds fewer"
    )
    remedy = f"holdout.last: {matching['last']}, holdout.random: {matching['random']} (docs/numbers.md)"
    if objective.estimated:
        used = Objective(objective.metric, share=round(holdout["last"] / total, 2), estimated=True)
        return used, (
            f"{further}; using {used.name}, the share the holdout measures; the matching holdout measures "
            f"{objective.share:g}: {remedy}"
        )
    return objective, (
        f"caution: {further} (on simulated boards the blend so chosen scored below the default one); the "
        f"matching holdout measures them: {remedy}"
    )


def matching_holdout(share, total):
    """holdout.last / holdout.random of this total whose last part is the share of its items (rounded)."""
    last = round(share * total)
    return {"last": last, "random": total - last}
