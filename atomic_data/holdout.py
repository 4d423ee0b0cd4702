"""The local holdout that imitates the competition's hidden set.

The hidden answers of a user are the interactions after some point in time
(the last ones) plus a random sample of earlier ones removed from the middle
of the history. Per user, with n interactions in time order:

    budget   = min(last + random, floor(max_fraction * n), n - min_train)
    n_last   = min(last, budget)           the user's last n_last items
    n_random = budget - n_last             a seeded sample of the earlier ones

A user with budget <= 0 keeps everything for training and is not scored.
The defaults live in yaml/base.yaml (key ``holdout``).
"""

from dataclasses import asdict, dataclass, fields

import numpy as np

NOT_HELD_OUT, LAST, RANDOM = 0, 1, 2
PART_NAMES = {LAST: "last", RANDOM: "random"}


@dataclass(frozen=True)
class HoldoutRule:
    last: int
    random: int
    max_fraction: float
    min_train: int
    seed: int

    @classmethod
    def from_dict(cls, values, where="holdout"):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        missing = sorted(known - set(values))
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; expected {sorted(known)}")
        rule = cls(**values)
        rule.check(where)
        return rule

    def check(self, where="holdout"):
        for name in ("last", "random", "min_train", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{name} must be a non-negative integer, got {value!r}")
        if self.min_train < 1:
            raise ValueError(f"{where}.min_train must be at least 1, got {self.min_train}")
        if not (isinstance(self.max_fraction, (int, float)) and 0 < self.max_fraction <= 1):
            raise ValueError(f"{where}.max_fraction must be in (0, 1], got {self.max_fraction!r}")

    def as_dict(self):
        return asdict(self)


def holdout_parts(users, rule):
    """Which interactions are held out, as LAST / RANDOM / NOT_HELD_OUT codes.

    users: user ids of all interactions, grouped by user and in time order
    within each user (ties keep file order). Deterministic for rule.seed.
    """
    n_rows = len(users)
    boundaries = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate(([0], boundaries))
    counts = np.diff(np.concatenate((starts, [n_rows])))

    budget = np.minimum(rule.last + rule.random, np.floor(rule.max_fraction * counts).astype(np.int64))
    budget = np.clip(np.minimum(budget, counts - rule.min_train), 0, None)
    n_last = np.minimum(rule.last, budget)
    n_random = budget - n_last

    user_index = np.repeat(np.arange(len(starts)), counts)
    position = np.arange(n_rows) - starts[user_index]
    from_end = counts[user_index] - 1 - position
    is_last = from_end < n_last[user_index]

    # the earlier items in a random order per user (the last ones after them): the first n_random are held out
    draw = np.random.default_rng(rule.seed).random(n_rows)
    draw[is_last] = np.inf
    order = np.lexsort((draw, user_index))  # by user, then by draw: each user's block stays in place
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = position  # the row's rank within its user
    is_random = ~is_last & (rank < n_random[user_index])

    parts = np.full(n_rows, NOT_HELD_OUT, dtype=np.int8)
    parts[is_last] = LAST
    parts[is_random] = RANDOM
    return parts
