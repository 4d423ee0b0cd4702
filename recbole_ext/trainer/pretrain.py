"""Pretraining before a run: a model with DOWNSTREAM_MODELS (S3Rec) pretrains, its downstream model finetunes.

Pretraining reads the validation files, never the holdout; its checkpoint is cached keyed by the values of
every setting it read (recbole_ext.data.cache). The downstream model runs like any model with ``pretrained_path``
set, its item rows matched by original item id, so one checkpoint serves the validation and the full fit.
docs/models.md, *S3Rec with several attributes*, has the rest.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from recbole.utils import init_seed

from recbole_ext.config.checks import check_settings
from recbole_ext.config.keys import MOVIEREC_KEYS, known_keys
from recbole_ext.config.settings import Settings
from recbole_ext.data.cache import ReadKeyedCache, ReadRecorder
from recbole_ext.data.dataset import History, load_dataset, original_ids, train_loader
from recbole_ext.models.s3rec import attribute_weights
from recbole_ext.patches import registry
from recbole_ext.trainer.recbole_config import recbole_config
from recbole_ext.utils.files import write_atomic

logger = logging.getLogger("movierec")
ITEM_EMBEDDING = "item_embedding.weight"


def downstream_models(model_name):
    """The models a pretraining model (S3Rec) hands its weights to; () for the others."""
    return getattr(registry.get_model(model_name), "DOWNSTREAM_MODELS", ())


@dataclass
class Pretrained:
    path: Path
    cached: bool
    seconds: float  # what pretraining took when it ran

    def summary(self):
        return {"checkpoint": str(self.path), "cached": self.cached, "seconds": round(self.seconds, 3)}


PRETRAINED_FORMAT = 1  # bump when what a pretrained checkpoint holds changes


def pretrain(settings, prepared, workdir):
    """The pretrained checkpoint for these settings and data, trained now or found in the cache."""
    config = _pretraining_config(settings, prepared, Path(workdir) / "checkpoints")
    cache = _pretraining_cache(settings, prepared)
    checkpoint, path = cache.load(config, lambda path: torch.load(path, weights_only=True))
    if checkpoint is not None:
        logger.info("pretrained %s reused from %s", settings.model, path)
        return Pretrained(path, cached=True, seconds=checkpoint["seconds"])

    started = time.perf_counter()
    recorder = ReadRecorder(config)  # what pretraining reads keys the checkpoint in the cache
    init_seed(recorder["seed"], recorder["reproducibility"])
    dataset = load_dataset(recorder)
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    loader = train_loader(recorder, dataset, history)
    model = registry.get_model(settings.model)(recorder, dataset).to(recorder["device"])
    trainer = registry.get_trainer(recorder["MODEL_TYPE"], settings.model)(recorder, model)
    logger.info(
        "pretraining %s on %d batches of windows, attributes %s",
        settings.model,
        len(loader),
        list(attribute_weights(recorder["item_attribute"])),
    )
    trainer.fit(loader, show_progress=recorder["show_progress"])

    state = {name: tensor.cpu() for name, tensor in model.downstream_state().items()}
    item_tokens = torch.from_numpy(original_ids(dataset, dataset.iid_field))
    seconds = time.perf_counter() - started
    path = cache.path_for(config, recorder.reads)
    write_atomic(
        path, lambda tmp: torch.save({"state_dict": state, "item_tokens": item_tokens, "seconds": seconds}, tmp)
    )
    return Pretrained(path, cached=False, seconds=seconds)


def find_pretrained(settings, prepared):
    """The cached checkpoint that pretraining with these settings would reuse, or None."""
    return _pretraining_cache(settings, prepared).find(_pretraining_config(settings, prepared, "checkpoints"))


def _pretraining_config(settings, prepared, checkpoint_dir):
    attributes = list(attribute_weights(settings["item_attribute"]))
    return recbole_config(
        settings,
        prepared.data_path,
        prepared.valid_name,
        checkpoint_dir,
        epochs=settings["pretrain_epochs"],
        learning_rate=settings["pretrain_learning_rate"],
        train_batch_size=settings["pretrain_batch_size"],
        train_windows="all",  # every window of every user each epoch (train_windows is the finetuning's)
        load_col={**settings["load_col"], "item": ["item_id", *attributes]},
    )


def _pretraining_cache(settings, prepared):
    return ReadKeyedCache(prepared.data_path / "cache", f"pretrained-{settings.model}", PRETRAINED_FORMAT)


def downstream_settings(settings, pretrained_path):
    """The downstream model's settings: the pretraining-only keys dropped, pretrained_path set."""
    model_class = registry.get_model(settings.model)
    downstream = settings["downstream_model"]  # one of model_class.DOWNSTREAM_MODELS (checked with the settings)
    pretraining_only = set(registry.model_properties(settings.model)) - set(model_class.SHARED_WITH_DOWNSTREAM)
    allowed = (known_keys(downstream) | MOVIEREC_KEYS) - pretraining_only
    # quick: and tune: were applied to these settings already and may name pretraining keys
    values = {k: v for k, v in settings.values.items() if k in allowed - {"quick", "tune"}}
    values.update(model=downstream, pretrained_path=str(pretrained_path))
    result = Settings(downstream, values, {k: settings.sources.get(k, "settings") for k in values})
    check_settings(result)
    return result


def load_pretrained(model, dataset, path):
    """Copy every matching tensor of a pretrained checkpoint into model; report what was and was not loaded."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # tensors only
    target = model.state_dict()
    loaded, not_loaded = [], {}
    for name, tensor in checkpoint["state_dict"].items():
        if name not in target:
            not_loaded[name] = f"{type(model).__name__} has no such tensor"
        elif name == ITEM_EMBEDDING:
            loaded.append(f"{name} ({_copy_item_rows(target[name], tensor, checkpoint['item_tokens'], dataset)})")
        elif target[name].shape != tensor.shape:
            not_loaded[name] = f"shape {tuple(tensor.shape)} in the checkpoint, {tuple(target[name].shape)} here"
        else:
            target[name].copy_(tensor)  # state_dict tensors share the parameters' storage
            loaded.append(name)
    for name in target:
        if name not in checkpoint["state_dict"]:
            not_loaded[name] = "not in the checkpoint (kept its initialisation)"
    logger.info("pretrained %s: loaded %s", path, ", ".join(loaded))
    for name, reason in not_loaded.items():
        logger.info("pretrained: not loaded %s: %s", name, reason)
    return {"checkpoint": str(path), "loaded": loaded, "not_loaded": not_loaded}


def _copy_item_rows(target, source, source_tokens, dataset):
    """Item rows by original item id; padding row 0; the mask row (last) where both have one."""
    tokens = torch.from_numpy(original_ids(dataset, dataset.iid_field))
    source_row = {int(t): row for row, t in enumerate(source_tokens.tolist()) if row > 0}
    pairs = [(row, source_row[int(t)]) for row, t in enumerate(tokens.tolist()) if row > 0 and int(t) in source_row]
    rows, from_rows = torch.tensor(pairs, dtype=torch.long, device=target.device).reshape(-1, 2).T
    source = source.to(target.device)
    target[rows] = source[from_rows]
    target[0] = source[0]
    extra = ""
    if len(target) == len(tokens) + 1 and len(source) == len(source_tokens) + 1:  # both have a mask row
        target[-1] = source[-1]
        extra = " + mask row"
    return f"{len(pairs)} of {len(tokens) - 1} items{extra}"
