"""Hyper-parameter search with Ray Tune: ``python tune.py --config yaml/<model>.yaml``.

A search is a model's usual settings plus a ``tune:`` section (syntax and
output folder in docs/tuning.md). Each trial calls ``pipeline.run`` with its
sampled values and validate_only, and reports the holdout scores to Ray after
every evaluation, so that ASHA can stop poor trials early. Import the names
from the module that owns them (docs/layout.md).

May import: evaluator, patches, utils, data, config, models, trainer, quick_start.
"""
