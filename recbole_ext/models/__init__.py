"""movierec's own models, one file each; recbole_ext/patches/registry.py lists them.

May import: evaluator, patches, utils, data, config.
"""
