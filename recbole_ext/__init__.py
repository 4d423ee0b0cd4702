"""What RecBole lacks for the Movie Recommendation competition.

Importing this package first makes RecBole 1.2.1 work on the current stack
(compat) and registers movierec's models and metric into RecBole's lookups.
"""

from recbole_ext import compat

compat.apply()

from recbole_ext import metrics, registry  # noqa: E402  (needs the shims)

registry.install()
metrics.install()
