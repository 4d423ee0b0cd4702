"""Top-k for every user: one function for validation and submission alike.

General models score a user from the user id (their history is inside the
model); sequential models from the user's whole training sequence, its last
MAX_ITEM_LIST_LENGTH items. Users go in batches, so memory stays at
batch x items scores; the padding item and every item the user has seen
are masked; lists come out in original ids.
"""

import numpy as np
import pandas as pd
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType
from tqdm import tqdm

from recbole_ext.data import original_ids


class ModelScoresNaN(RuntimeError):
    """The model produced NaN scores (training diverged)."""


@torch.no_grad()
def top_k(model, dataset, history, k, batch_users=1024, users=None, show_progress=False):
    """Top-k unseen items per user as a frame (user, item, score, rank), original ids.

    users: internal user ids (default: every user with a history).
    """
    model.eval()
    device = model.device
    users = history.users() if users is None else torch.as_tensor(users)
    n_items = dataset.item_num
    batches = torch.split(users, batch_users)
    if show_progress:
        batches = tqdm(batches, desc="top-k", ncols=100)
    item_lists, score_lists = [], []
    for batch in batches:
        scores = _full_scores(model, dataset, history, batch).view(len(batch), n_items).float()
        if torch.isnan(scores).any():
            raise ModelScoresNaN(f"{type(model).__name__} produced NaN scores")
        scores[:, 0] = -torch.inf  # [PAD]
        row, item = history.seen(batch)
        scores[row.to(device), item.to(device)] = -torch.inf
        values, items = torch.topk(scores, min(k, n_items - 1), dim=1)
        item_lists.append(items.cpu())
        score_lists.append(values.cpu())
    items, scores = torch.cat(item_lists).numpy(), torch.cat(score_lists).numpy()
    if np.isneginf(scores).any():
        raise ValueError(f"fewer than {k} unseen items for some users: lower top_n")
    width = items.shape[1]
    return pd.DataFrame(
        {
            "user": np.repeat(original_ids(dataset, dataset.uid_field)[users.numpy()], width),
            "item": original_ids(dataset, dataset.iid_field)[items.ravel()],
            "score": scores.ravel(),
            "rank": np.tile(np.arange(width), len(users)),
        }
    )


def _full_scores(model, dataset, history, users):
    interaction = Interaction({dataset.uid_field: users})
    if model.type == ModelType.SEQUENTIAL:
        items, times, length = history.last(users, model.max_seq_length)
        interaction.update(Interaction({model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: length}))
        time_list = dataset.time_field + dataset.config["LIST_SUFFIX"]
        if time_list in dataset.field2type:
            interaction.update(Interaction({time_list: times.to(dataset.inter_feat[dataset.time_field].dtype)}))
    interaction = interaction.to(model.device)
    try:
        return model.full_sort_predict(interaction)
    except NotImplementedError:
        return _pairwise_scores(model, dataset, interaction)


def _pairwise_scores(model, dataset, interaction, max_pairs=1 << 20):
    """For models without full_sort_predict (context-aware): predict() on every (user, item)."""
    users = dataset.join(interaction.cpu())
    item_features = dataset.get_item_feature()
    n_items = len(item_features)
    scores = []
    for start in range(0, len(users), max(1, max_pairs // n_items)):
        chunk = users[np.arange(start, min(start + max(1, max_pairs // n_items), len(users)))]
        pairs = chunk.repeat_interleave(n_items)
        pairs.update(item_features.repeat(len(chunk)))
        scores.append(model.predict(pairs.to(model.device)).view(len(chunk), n_items))
    return torch.cat(scores)
