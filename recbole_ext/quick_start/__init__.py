"""One run, as RecBole's quick_start/ does it: prepare, fit on -val with the holdout, score, refit,
write (pipeline.py). run.py and every tune trial and blend member call pipeline.run.

May import: evaluator, patches, utils, data, config, models, trainer.
"""
