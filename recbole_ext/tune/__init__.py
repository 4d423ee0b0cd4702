"""Hyper-parameter search with Ray Tune: ``python tune.py --config yaml/<model>.yaml``.

A search is a model's usual settings plus a ``tune:`` section (syntax and
output folder in the README). Each trial calls ``pipeline.run`` with its
sampled values and validate_only, and reports the holdout scores to Ray after
every evaluation, so that ASHA can stop poor trials early. By concern:
space.py (the ``tune:`` section -> Ray's search space), trial.py (the
trainable and its resources), driver.py (the search, with resume), results.py
(trials.csv, best.yaml, the plot, the honest estimate).
"""

from recbole_ext.tune.driver import SearchResult, resume_settings, search, start_ray
from recbole_ext.tune.results import TRIALS_CSV, TRIALS_PLOT, describe_honest, format_table
from recbole_ext.tune.space import TuneSpec, parse_tune
from recbole_ext.tune.trial import trial_resources

__all__ = ["TRIALS_CSV", "TRIALS_PLOT", "SearchResult", "TuneSpec", "describe_honest", "format_table",
           "parse_tune", "resume_settings", "search", "start_ray", "trial_resources"]
