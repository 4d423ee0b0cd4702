"""A run's settings (RecBole's config/): the yaml layers merged by one rule (settings.py), what a key may
be (keys.py), and every value checked with the layer it came from named (checks.py).

May import: evaluator, patches, utils, data.
"""
