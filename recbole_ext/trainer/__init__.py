"""Training and scoring one model (RecBole's trainer/): the settings resolved for a run and RecBole's
Config per fit (recbole_config.py), trainers that evaluate on the holdout after every epoch
(early_stopping.py), top-k lists (predict.py), S3Rec pretraining and its hand-over (pretrain.py).

May import: evaluator, patches, utils, data, config, models.
"""
