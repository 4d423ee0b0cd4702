"""Early stopping on the competition metric of the holdout, inside RecBole's trainers.

RecBole's trainer evaluates a dataloader split from the training data with
its own metrics. ``HoldoutScorer`` stands where that dataloader would be:
``trainer.fit(train_data, scorer)`` makes every evaluation call
``scorer(model)``, which ranks with the same top-k function as the
submission and scores with the competition's definition. Any trainer class
(RecBole's or a custom model's) gets this through ``holdout_trainer``.
The scorer also keeps the per-user scores of the best evaluation, which a
tuning trial needs for its honest estimate (it may be stopped at any epoch).
"""

import functools

import torch
from recbole.trainer import Trainer

from recbole_ext.data.dataset import token_ids
from recbole_ext.evaluator.metrics import K, evaluation_scores, parse_objective, part_scores
from recbole_ext.trainer.predict import top_k


class HoldoutScorer:
    """Scores a model on the holdout; remembers every result, and the best evaluation's per-user scores.

    on_result(result, best_users) is called after every evaluation: its mean
    scores, and the per-user scores (part_scores) of the best evaluation so far.
    future: the run's future-film filter (a FutureItems), or None.
    metric: what the best evaluation maximises; also: other objectives every result reports (a search's
    tune.metric), each a column of the per-user scores too.
    """

    def __init__(
        self, dataset, history, holdout, batch_users, on_result=None, metric="recall@10", future=None, also=()
    ):
        self.dataset, self.history, self.holdout = dataset, history, holdout
        self.batch_users, self.future = batch_users, future
        self.users = torch.from_numpy(token_ids(dataset, dataset.uid_field, holdout["user"].unique()))
        if (self.users == 0).any():
            raise ValueError("holdout users missing from the training data: prepared data is inconsistent")
        self.on_result, self.metric = on_result, metric
        self.objectives = [parse_objective(name) for name in dict.fromkeys((metric, *also))]
        self.results = []  # one dict per evaluation, in order
        self.best = None  # the index of the best evaluation in results
        self.best_users = None  # its per-user scores

    def __call__(self, model):
        recommended = top_k(
            model, self.dataset, self.history, K, self.batch_users, users=self.users, future=self.future
        )
        users = part_scores(recommended, self.holdout)
        for objective in self.objectives:
            if objective.share is not None:  # a mix of the parts: its own per-user column
                users[objective.name] = objective.user_values(users)
        result = evaluation_scores(users)
        # RecBole's rule (the checkpoint it keeps): ties move the best to the later evaluation
        if self.best is None or result[self.metric] >= self.results[self.best][self.metric]:
            self.best, self.best_users = len(self.results), users
        self.results.append(result)
        if self.on_result:
            self.on_result(result, self.best_users)
        return result


class HoldoutEvaluation:
    """Trainer mixin: evaluate() on a HoldoutScorer scores on the holdout."""

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not isinstance(eval_data, HoldoutScorer):
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if load_best_model:
            self.load_best(model_file)
        return eval_data(self.model)

    def load_best(self, model_file=None):
        # a checkpoint this trainer wrote: it holds RecBole's Config, not only tensors
        checkpoint = torch.load(model_file or self.saved_model_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))


@functools.cache  # one class per trainer class
def holdout_trainer(trainer_class):
    """trainer_class with HoldoutEvaluation mixed in."""
    if not issubclass(trainer_class, Trainer):
        raise TypeError(f"{trainer_class.__name__} is not a RecBole Trainer: its models are not supported")
    return type(f"Holdout{trainer_class.__name__}", (HoldoutEvaluation, trainer_class), {})
