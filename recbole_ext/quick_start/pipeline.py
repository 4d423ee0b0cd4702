"""The one training pipeline: run.py and every Ray Tune trial call ``run``.

    prepare data (cached) -> validation fit on <name>-val with early stopping
    on the holdout -> holdout recall@10 / ndcg@10 from the top-N lists ->
    refit on all interactions (best epoch count) -> submission

The outputs (docs/configuration.md) go into the run folder (run_folder.py: staging, what a run that stops early keeps).
"""

import datetime
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from recbole.utils import init_seed

import atomic_data
from atomic_data import RawDataError
from atomic_data.movielens import embedded_default
from atomic_data.raw import RATINGS_FILE
from atomic_data.tables import read_inter
from recbole_ext import ConfigError
from recbole_ext.config.settings import Settings
from recbole_ext.data.dataset import History, RepeatedPasses, load_dataset, train_loader
from recbole_ext.data.future import future_filter
from recbole_ext.evaluator.metrics import K, describe_holdout, holdout_detail, mean_scores, part_scores
from recbole_ext.patches import registry
from recbole_ext.trainer.early_stopping import HoldoutScorer, holdout_trainer
from recbole_ext.trainer.predict import top_k
from recbole_ext.trainer.pretrain import downstream_models, downstream_settings, load_pretrained, pretrain
from recbole_ext.trainer.recbole_config import resolve
from recbole_ext.utils import tracking
from recbole_ext.utils.files import json_text
from recbole_ext.utils.run_folder import (
    MODEL_FILE,
    SUMMARY,
    VALID_TOP,
    Timer,
    holdout_activity,
    output_folder,
    run_folder,
    write_full_lists,
    write_holdout_users,
)

logger = logging.getLogger("movierec")


@dataclass
class Fit:
    config: object
    dataset: object
    history: History
    model: object
    epochs_run: int
    pretrained: dict | None = None  # what load_pretrained reported
    best_epoch: int | None = None
    valid_results: list = field(default_factory=list)  # [{"epoch": e, "recall@10": ...}]
    best_users: pd.DataFrame | None = None  # the best epoch's per-user holdout scores
    future: object = None  # the future-film filter on this fit's items (FutureItems), or None

    def top_lists(self, settings):
        """Every user's top_n unseen items by this fit's model (the validation lists, or the submission's)."""
        return top_k(
            self.model,
            self.dataset,
            self.history,
            settings["top_n"],
            settings["predict_batch_users"],
            show_progress=settings["show_progress"],
            future=self.future,
        )


def prepare_data(settings):
    """The prepared data (atomic_data.prepare), refused when the holdout scores nobody or a user has fewer unseen
    items than a submission lists; a warning names the users whose top_n lists will be shorter."""
    raw = settings["data"] or embedded_default(settings["data_dir"])
    out = Path(settings["data_dir"]) / "prepared"
    prepared = atomic_data.prepare(raw, out, settings["dataset"], settings.holdout)
    if not prepared.counts["holdout_users"]:
        rule = ", ".join(f"{key} {value}" for key, value in settings.holdout.as_dict().items() if key != "seed")
        raise ConfigError(
            f"{settings.sources.get('holdout', 'settings')}: holdout: no user can be scored: with {rule} "
            f"every user keeps all interactions for training; lower holdout.min_train"
        )
    # every interaction counts as seen in the final lists: they have the fewest unseen items to choose from
    unseen = prepared.counts["items"] - pd.Series(read_inter(prepared.inter_path(prepared.name))[0]).value_counts()
    too_few, short = (unseen[unseen < n].sort_values() for n in (K, settings["top_n"]))
    if len(too_few):
        raise RawDataError(
            f"{Path(raw) / RATINGS_FILE}: {_few_unseen(too_few, prepared.counts['items'], K)}; a submission "
            f"lists {K} unseen items for every user: leave such users out of the file"
        )
    if len(short):
        logger.warning(
            "top_n %d: %s; their lists hold all their unseen items",
            settings["top_n"],
            _few_unseen(short, prepared.counts["items"], settings["top_n"]),
        )
    return prepared


def _few_unseen(unseen, items, needed):
    """The users of a Series of unseen-item counts, in words."""
    if len(unseen) == 1:
        return f"user {unseen.index[0]} has {unseen.iloc[0]} unseen items of {items}"
    shown = ", ".join(f"user {user} ({count})" for user, count in unseen.head(3).items())
    return f"{len(unseen)} users have fewer than {needed} unseen items of {items}: {shown}{', ...' * (len(unseen) > 3)}"


def run(settings: Settings, on_result=None, validate_only=False):
    """Train, score on the holdout, refit, write the outputs; returns the summary.

    validate_only: stop after the holdout score (tuning trials): the best
    epoch's scores, no valid_top50.csv, no refit, no submission, no model file.
    """
    resolved = resolve(settings)  # a missing GPU is refused before anything is written
    final = output_folder(settings.model, settings["output_dir"])
    tracking.connect(settings)
    with tracking.tracked(settings, final, "trial" if validate_only else "run") as tracker:
        with run_folder(final, settings["state"]) as staging:
            summary = _run(resolved, staging, on_result, validate_only, tracker)
    summary["output_dir"] = str(final)
    return summary


def check_prepared(settings, prepared, device):
    """The model's checks of the prepared data (UserEASE's memory), before its dataset is built."""
    check_data = registry.data_check(settings.model)
    if check_data:
        check_data(settings.values, prepared.counts, device)


def _run(resolved, out, on_result, validate_only, tracker):
    settings, timer = resolved.settings, Timer()
    logger.info("movierec run of %s on %s, output %s", settings.model, resolved.device, out)
    with timer.step("prepare"):
        prepared = prepare_data(settings)
    check_prepared(settings, prepared, resolved.device)
    tracker.start(tracking.run_params(settings, device=resolved.device, data_fingerprint=prepared.fingerprint))
    holdout = pd.read_csv(prepared.holdout_path)
    fitted, pretraining = resolved, None  # the model fitted: S3Rec pretrains, its downstream model is fitted
    if downstream_models(settings.model):
        with timer.step("pretrain"):
            pretrained = pretrain(settings, prepared, out)
        fitted = resolve(downstream_settings(settings, pretrained.path))
        pretraining = {**pretrained.summary(), "downstream_model": fitted.name}

    valid = fit(
        fitted,
        prepared,
        prepared.valid_name,
        out,
        timer,
        "valid",
        holdout=holdout,
        on_result=on_result,
        tracker=tracker,
    )
    if validate_only and valid.best_users is not None:  # a trial: the scorer ranked the holdout users already
        users = valid.best_users
    else:
        with timer.step("valid_predict"):
            valid_top = valid.top_lists(settings)
            valid_top[["user", "item", "score"]].to_csv(out / VALID_TOP, index=False)
        users = part_scores(valid_top, holdout)
    users = holdout_activity(prepared, holdout).join(users)
    scores, detail = mean_scores(users), holdout_detail(users)
    for line in describe_holdout(scores, detail):
        logger.info(line)
    write_holdout_users(out, users)
    tracker.log({**tracking.holdout_metrics(scores, detail), "best_epoch": valid.best_epoch})
    summary = {
        "model": settings.model,
        "holdout": scores,
        "holdout_detail": detail,
        "best_epoch": valid.best_epoch,
        "epochs_run": valid.epochs_run,
        "refit_epochs": None,
        "valid_history": valid.valid_results,
        "pretraining": pretraining,
        "pretrained_tensors": valid.pretrained,
        "device": resolved.device,
        "data": {
            "fingerprint": prepared.fingerprint,
            "data_path": str(prepared.data_path),
            "holdout_path": str(prepared.holdout_path),
            "counts": prepared.counts,
        },
        "config": {
            **settings.values,  # and RecBole's values, JSON-safe
            "recbole": json.loads(json.dumps(valid.config.final_config_dict, default=str)),
        },
        "created": datetime.datetime.now().isoformat(timespec="milliseconds"),
    }
    if not validate_only:
        summary["timings"] = dict(timer)
        (out / SUMMARY).write_text(json_text(summary))  # the validation, kept should the final fit fail
        summary["refit_epochs"] = _final_fit(fitted, prepared, valid, out, timer)
    summary["timings"] = dict(timer)
    tracker.log({f"seconds/{step}": seconds for step, seconds in timer.items()})
    (out / SUMMARY).write_text(json_text(summary))
    return summary


def fit(
    resolved, prepared, dataset_name, workdir, timer, stage, holdout=None, epochs=None, on_result=None, tracker=None
):
    """Train one model on one dataset; with a holdout, early-stop on it and keep the best epoch (each evaluation
    logged to tracker by epoch)."""
    settings = resolved.settings
    changes = {"epochs": epochs} if epochs else {}
    config = resolved.config(prepared.data_path, dataset_name, Path(workdir) / "checkpoints", **changes)
    with timer.step(f"{stage}_dataset"):
        init_seed(config["seed"], config["reproducibility"])
        dataset = load_dataset(config)
        history = History.from_file(dataset, prepared.inter_path(dataset_name))
        train_data = RepeatedPasses(train_loader(config, dataset, history), settings["min_epoch_steps"])
        future = future_filter(settings, dataset)
    with timer.step(f"{stage}_train"):
        init_seed(config["seed"], config["reproducibility"])
        model = resolved.model_class(config, dataset).to(config["device"])
        pretrained = (
            load_pretrained(model, dataset, settings["pretrained_path"]) if settings["pretrained_path"] else None
        )
        trainer = holdout_trainer(registry.get_trainer(resolved.model_class.type, resolved.name))(config, model)
        scorer = None
        if holdout is not None:
            tune_metric = (settings.values.get("tune") or {}).get("metric")  # a search's trials report it too
            scorer = HoldoutScorer(
                dataset,
                history,
                holdout,
                settings["predict_batch_users"],
                on_result,
                config["valid_metric"],
                future,
                also=[tune_metric] if tune_metric else [],
            )
        eval_epochs = []

        def evaluated(epoch, score):  # RecBole calls it after each evaluation
            eval_epochs.append(epoch)
            if tracker:
                tracker.log({f"valid/{metric}": value for metric, value in scorer.results[-1].items()}, step=epoch)

        trainer.fit(
            train_data,
            scorer,
            verbose=True,
            saved=scorer is not None,
            show_progress=config["show_progress"],
            callback_fn=evaluated,
        )
    epochs_run = len(trainer.train_loss_dict) or 1
    result = Fit(config, dataset, history, model, epochs_run, pretrained=pretrained, future=future)
    if scorer is not None and scorer.results:
        result.valid_results = [{"epoch": epoch, **scores} for epoch, scores in zip(eval_epochs, scorer.results)]
        result.best_epoch, result.best_users = eval_epochs[scorer.best], scorer.best_users
        trainer.load_best()
    return result


def _final_fit(resolved, prepared, valid, out, timer):
    """Refit on every interaction (or keep the validation fit), write the submission; returns refit epochs."""
    settings = resolved.settings
    full_inter = prepared.inter_path(prepared.name)
    refit_epochs = None
    if settings["refit"]:
        best = valid.best_epoch if valid.best_epoch is not None else valid.epochs_run - 1
        refit_epochs = best + 1 if settings["refit_epochs"] == "best" else settings["refit_epochs"]
        del valid.model
        gc.collect()
        torch.cuda.empty_cache()
        final_fit = fit(resolved, prepared, prepared.name, out, timer, "full", epochs=refit_epochs)
    else:
        logger.warning(
            "refit: false: the submission comes from the validation fit, which never saw the %d "
            "holdout interactions (%.1f%% of the data, each user's latest among them)",
            prepared.counts["holdout_interactions"],
            100 * prepared.counts["holdout_interactions"] / prepared.counts["interactions"],
        )
        final_fit = valid
        final_fit.history = History.from_file(valid.dataset, full_inter)
    with timer.step("full_predict"):
        full_top = final_fit.top_lists(settings)
    with timer.step("write"):
        write_full_lists(out, full_top, full_inter)
        # RecBole's checkpoint layout (load_data_and_model reads it) plus what predict-only needs
        model_checkpoint = {
            "config": final_fit.config,
            "state_dict": final_fit.model.state_dict(),
            "other_parameter": final_fit.model.other_parameter(),
            "epoch": final_fit.epochs_run - 1,
            "movierec": {"settings": settings.values, "fingerprint": prepared.fingerprint},
        }
        torch.save(model_checkpoint, out / MODEL_FILE)
    return refit_epochs


def predict_only(checkpoint_path, output_dir=None, device=None):
    """submission.csv and full_top50.csv from a saved model.pth, without training."""
    checkpoint_path = Path(checkpoint_path)
    if checkpoint_path.is_dir():
        raise ConfigError(f"{checkpoint_path}: is a folder, expected a model.pth written by run.py")
    if not checkpoint_path.is_file():
        raise ConfigError(f"{checkpoint_path}: checkpoint not found")
    try:  # a file a movierec run wrote: it holds RecBole's Config, not only tensors
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and torch errors alike: the file is not a checkpoint
        raise ConfigError(
            f"{checkpoint_path}: not a model.pth written by run.py (cannot be read: {type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "movierec" not in checkpoint:
        raise ConfigError(f"{checkpoint_path}: not a model.pth written by run.py (no run settings inside)")
    meta, config = checkpoint["movierec"], checkpoint["config"]
    values = {**meta["settings"], "output_dir": output_dir, "device": device or meta["settings"]["device"]}
    settings = Settings(config["model"], values)
    final = output_folder(settings.model, settings["output_dir"])
    with run_folder(final, settings["state"]) as staging:
        prepared = prepare_data(settings)
        if prepared.fingerprint != meta["fingerprint"]:
            raise ConfigError(f"{checkpoint_path}: its data (fingerprint {meta['fingerprint']}) is gone or changed")
        resolved = resolve(settings)
        config["device"] = torch.device(resolved.device)
        dataset = load_dataset(config)
        model = resolved.model_class(config, dataset).to(config["device"])
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
        full_inter = prepared.inter_path(prepared.name)
        history = History.from_file(dataset, full_inter)
        future = future_filter(settings, dataset)
        full_top = top_k(model, dataset, history, settings["top_n"], settings["predict_batch_users"], future=future)
        write_full_lists(staging, full_top, full_inter)
    return final
