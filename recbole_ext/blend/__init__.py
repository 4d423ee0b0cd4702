"""Blending finished runs into one submission.

fusion.py: the simple blends' maths (priority, rank, score; weights fitted and cross-fitted);
stack.py, stack_features.py: the learned second stage; members.py: finished runs read and checked;
ensemble.py: a blend of runs, its folder and table (python -m recbole_ext.ensemble);
recipe.py, runs.py, blend.py, __main__.py: a recipe's members trained on Ray and blended
(python -m recbole_ext.blend RECIPE.yaml).

May import: evaluator, patches, utils, data, config, models, trainer, quick_start, tune.
"""
