"""Top-k for every user: one function for validation and submission alike (docs/configuration.md).

Users go in batches, so memory stays at batch x items scores. Models without full_sort_predict score every
(user, item) pair with predict(); what a pair costs differs by orders of magnitude between models (FM a few
hundred bytes, ConvNCF tens of kilobytes of feature maps), so the pairs go in chunks sized from the
measured peak memory of a small first chunk, to stay within a memory budget.
"""

import os

import numpy as np
import pandas as pd
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType
from torch._C._profiler import _EventType
from tqdm import tqdm

from recbole_ext.data.dataset import original_ids

MEMORY_BUDGET = 1 << 30  # bytes one chunk of pair scoring may allocate, on top of the model and data
PROBE_PAIRS = 256  # the first chunk, measured to size the others
# the profiler behind peak_memory logs two lines to stderr at every start (once per batch of users)
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


class ModelScoresNaN(RuntimeError):
    """The model produced NaN scores (training diverged)."""


@torch.no_grad()
def top_k(
    model,
    dataset,
    history,
    k,
    batch_users=1024,
    users=None,
    show_progress=False,
    memory_budget=MEMORY_BUDGET,
    future=None,
):
    """Top-k unseen items per user as a frame (user, item, score, rank), original ids; fewer for a user with
    fewer unseen items.

    users: internal user ids (default: every user with a history).
    memory_budget: bytes a chunk of pair scoring may allocate (models without full_sort_predict).
    future: a FutureItems (filter.future_items), whose items go after the others in each list.
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
        scores = _full_scores(model, dataset, history, batch, memory_budget).view(len(batch), n_items).float()
        if torch.isnan(scores).any():
            raise ModelScoresNaN(f"{type(model).__name__} produced NaN scores")
        scores[:, 0] = -torch.inf  # [PAD]
        row, item = history.seen(batch)
        scores[row.to(device), item.to(device)] = -torch.inf
        width = min(k, n_items - 1)
        if future is None:
            values, items = torch.topk(scores, width, dim=1)
        else:
            values, items = future.top_k(scores, history, batch, width)
        item_lists.append(items.cpu())
        score_lists.append(values.cpu())
    items, scores = torch.cat(item_lists).numpy(), torch.cat(score_lists).numpy()
    width = items.shape[1]
    top = pd.DataFrame(
        {
            "user": np.repeat(original_ids(dataset, dataset.uid_field)[users.numpy()], width),
            "item": original_ids(dataset, dataset.iid_field)[items.ravel()],
            "score": scores.ravel(),
            "rank": np.tile(np.arange(width), len(users)),
        }
    )
    # a user with fewer than k unseen items gets them all: the masked ones (-inf) come last in a row
    return top[~np.isneginf(top["score"].to_numpy())].reset_index(drop=True)


def _full_scores(model, dataset, history, users, memory_budget):
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
        return _pairwise_scores(model, dataset, interaction, memory_budget)


def _pairwise_scores(model, dataset, interaction, memory_budget):
    """predict() on every (user, item) pair, in chunks whose peak memory stays near memory_budget."""
    users = dataset.join(interaction.cpu())  # with the user features
    items = dataset.get_item_feature()
    n_items, n_pairs = len(items), len(users) * len(items)

    def predict(start, stop):  # pairs start..stop-1, user by user
        pair = torch.arange(start, stop)
        pairs = users[pair // n_items]
        pairs.update(items[pair % n_items])
        return model.predict(pairs.to(model.device)).view(-1)

    probe = min(PROBE_PAIRS, n_pairs)
    first, peak = peak_memory(lambda: predict(0, probe))
    chunk = max(1, memory_budget * probe // max(peak, 1))
    scores = [first] + [predict(start, min(start + chunk, n_pairs)) for start in range(probe, n_pairs, chunk)]
    return torch.cat(scores).view(len(users), n_items)


def peak_memory(function):
    """function() and the most memory, in bytes, it held at once on any one device beyond what was allocated before.

    torch allocates tensors outside Python's heap (tracemalloc does not see
    them), and the process's resident size hides memory freed and reused: so
    this reads the allocations and frees torch's allocators report to its
    profiler (CPU and CUDA alike).
    """
    with torch.autograd.profiler.profile(profile_memory=True) as profile:
        result = function()
    allocations = []
    events = list(profile.kineto_results.experimental_event_tree())
    while events:
        event = events.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, str(event.extra_fields.device), event.extra_fields.alloc_size))
        events.extend(event.children)
    held, peak = {}, 0
    for _, device, size in sorted(allocations):
        held[device] = held.get(device, 0) + size  # frees are negative sizes
        peak = max(peak, held[device])
    return result, peak
