"""What RecBole lacks for the Movie Recommendation competition.

Importing the package loads nothing heavy: the commands that only read
outputs (report, leaderboard, ensemble) never import torch or RecBole. Modules
that use RecBole import ``recbole_ext.registry``, which patches RecBole for the
current stack (compat) and registers movierec's models and metric.
"""


class ConfigError(ValueError):
    """A setting a user wrote is wrong; the message names where and why."""
