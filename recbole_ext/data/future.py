"""The future-film filter (``filter.future_items: N``): films released after a user's last active year + N
go to the end of the user's list.

A user's hidden items lie inside the user's own history, so a film released
years after the user's last interaction cannot be among them (a 3rd-placed
team of the competition used N = 2). The last active year is the calendar
year (UTC) of the user's latest interaction in the history the lists are made
from: the validation file for validation lists, every interaction for the
submission. Release years come from the prepared .item file; an item without
one is kept. The filtered films are not dropped but ranked after every other
unseen item, so a user keeps a full list of top_n whenever top_n unseen items
remain.
"""

import numpy as np
import torch

from recbole_ext.data.item_file import read_item_file


class FutureItems:
    def __init__(self, dataset, years_after):
        years = read_item_file(dataset)["year"]
        known = years != ""
        # NaN (no year; also [PAD]) compares False with every year: never filtered
        self.item_years = torch.full((dataset.item_num,), torch.nan, dtype=torch.float64, device="cpu")
        self.item_years[torch.from_numpy(years.index[known].to_numpy())] = torch.from_numpy(
            years[known].astype(np.float64).to_numpy()
        )
        self.years_after = years_after

    def mask(self, history, users):
        """(len(users), items) bool on the users' device: the items released after each user's last active
        year + N (nothing for a user without history)."""
        end, length = history.indptr[users + 1], history.lengths(users)
        latest = history.times[(end - 1).clamp(min=0)].cpu().numpy().astype(np.int64)
        year = latest.astype("datetime64[s]").astype("datetime64[Y]").astype(np.float64) + 1970
        limit = torch.from_numpy(year + self.years_after).to(users.device)
        limit[length.to(users.device) == 0] = torch.inf
        return self.item_years.to(users.device).unsqueeze(0) > limit.unsqueeze(1)

    def top_k(self, scores, history, users, k):
        """The k best of scores (users x items; seen items at -inf) with every item the filter names ranked
        after the others: (values, items) as torch.topk's, values non-increasing along each row."""
        future = self.mask(history, users).to(scores.device)
        allowed = torch.topk(scores.masked_fill(future, -torch.inf), k, dim=1)
        later = torch.topk(scores.masked_fill(~future, -torch.inf), k, dim=1)
        # the later films' scores move below the allowed ones' (order kept): a score blend of the lists
        # (min-max scaled per user) then keeps them last too, as rank fusion does
        lowest = allowed.values.masked_fill(torch.isneginf(allowed.values), torch.inf).min(1, keepdim=True).values
        gap = (later.values[:, :1] - lowest + 1).nan_to_num(0.0, posinf=0.0, neginf=0.0).clamp(min=0)
        values = torch.cat([allowed.values, later.values - gap], 1)
        items = torch.cat([allowed.indices, later.indices], 1)
        # allowed items, then future ones (where fewer than k allowed remain), then nothing (-inf)
        group = torch.cat([torch.isneginf(allowed.values).long() * 2, torch.ones_like(later.indices)], 1)
        order = torch.argsort(group, dim=1, stable=True)[:, :k]
        return values.gather(1, order), items.gather(1, order)


def future_filter(settings, dataset):
    """The run's filter on this dataset's items (a FutureItems), or None when filter.future_items is off."""
    years_after = (settings.values.get("filter") or {}).get("future_items")  # a model.pth of older runs has none
    return None if years_after is None else FutureItems(dataset, years_after)
