"""Hyper-parameter search with Ray Tune: ``python tune.py --config yaml/<model>.yaml``.

A search is a model's usual settings plus a ``tune:`` section. Its syntax is
defined once, in space.py, and documented in the README:

    tune:
      metric: recall@10                 # recall@10 | ndcg@10 of the holdout
      mode: max
      num_samples: 20                   # trials; with grid entries: num_samples x the grid
      search_space:                     # setting: {distribution: arguments}
        learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
        reg_weight: {grid: [100, 250, 500, 1000]}
      scheduler: {asha: {grace_period: 2}}   # fifo | asha; max_t follows epochs
      search: random                    # random | optuna | hyperopt
      resources_per_trial: {cpu: 2, gpu: 0.25}
      max_concurrent_trials: 4

Each trial calls ``pipeline.run``, the function run.py calls, with its sampled
values merged into the settings (checked like any run's) and validate_only,
and reports the holdout scores to Ray after every evaluation, so ASHA can stop
poor trials early. The driver prepares the data and the dataset cache once;
trials reuse both and depend neither on the working directory (Ray changes
it) nor on sys.argv.

The output folder:
    search.yaml     the settings of the search; ``--resume`` reads them
    ray/            Ray Tune's experiment (results, the state ``--resume`` restores)
    trials/<id>/    a trial's pipeline output (run.log, summary.json);
                    <id>.failed/ when it failed, <id>.stopped/ when Ray Tune stopped it
                    (the scheduler, or an interrupted search), <id>.interrupted/ when
                    its worker was interrupted
    trials.csv      one row per trial; trials.png: the metric per trial and per searched value
    best.yaml       the best trial's settings: ``python run.py --config best.yaml``
    best/           with --retrain-best: the best settings fitted on all data, submission.csv

The best trial's score is fitted; the honest estimate is not (results.py).
trials.csv, the printed table and best.yaml carry both.

By concern: space.py (the ``tune:`` section -> Ray's search space), trial.py
(the trainable and its resources), driver.py (the search, with resume),
results.py (trials.csv, best.yaml, the plot).
"""

from recbole_ext.tune.driver import SearchResult, resume_settings, search, start_ray
from recbole_ext.tune.results import TRIALS_CSV, TRIALS_PLOT, describe_honest, format_table
from recbole_ext.tune.space import TuneSpec, parse_tune
from recbole_ext.tune.trial import trial_resources

__all__ = ["TRIALS_CSV", "TRIALS_PLOT", "SearchResult", "TuneSpec", "describe_honest", "format_table",
           "parse_tune", "resume_settings", "search", "start_ray", "trial_resources"]
