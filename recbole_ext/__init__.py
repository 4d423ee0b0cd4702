"""What RecBole lacks for the Movie Recommendation competition, laid out as RecBole is.

Sub-packages are layers, lowest first; each may import only the ones its ``__init__`` names
(tests/test_layout.py holds them to it):

    evaluator    the competition's metric, the leaderboard calibration
    patches      RecBole patched for the current stack; movierec's models in its lookups
    utils        atomic files, run folders, experiment tracking
    data         datasets, loaders, caches, the item file, the future filter
    config       a run's settings: yaml layers and their checks
    models       movierec's models
    trainer      trainers, top-k, pretraining, RecBole's Config per fit
    quick_start  one run (run.py)
    tune         a Ray Tune search (tune.py)
    blend        blends of finished runs and of a recipe's members

Modules at the top level are commands that read outputs: ``python -m recbole_ext.ensemble``,
``.leaderboard``, ``.report`` (with ``python -m recbole_ext.blend``). Importing the package, or
those commands, loads neither torch nor RecBole; code that uses RecBole imports
``recbole_ext.patches.registry`` first, which patches RecBole and registers movierec's models.
"""


class ConfigError(ValueError):
    """A setting a user wrote is wrong; the message names where and why."""
