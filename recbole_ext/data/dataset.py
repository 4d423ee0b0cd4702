"""RecBole datasets for a run: built once per data version and settings, cached on disk.

- ``load_dataset``: RecBole's dataset ready for training, from a pickle under
  ``<data_path>/cache/`` when the same data and the same values of the
  settings its construction read were built before (recbole_ext.data.cache): a
  second run does not re-read and re-index millions of rows.
- ``LazySequentialDataset``: RecBole materialises, for every interaction,
  the list of up to MAX_ITEM_LIST_LENGTH previous items of every field (a
  Python loop, and N x L memory: 5M x 200 item ids is 8 GB); here a batch
  gathers its lists from the flat, time-ordered interactions. The batches
  are identical (tests/test_data.py).
"""

import logging
import pickle
from pathlib import Path

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.data.utils import get_dataloader
from recbole.sampler import RepeatableSampler, Sampler
from recbole.utils import ModelType

from atomic_data.tables import read_inter
from recbole_ext.patches import registry
from recbole_ext.data.cache import ReadKeyedCache, ReadRecorder, unwrapped
from recbole_ext.utils.files import write_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = 4  # bump when what is pickled changes (4: the classes moved into recbole_ext.data)


def windows(values, end, length, max_length):
    """values[end - length : end] for every row, left-aligned in max_length columns, 0-padded (RecBole's layout)."""
    steps = torch.arange(max_length, device=end.device)
    index = (end - length).unsqueeze(1) + steps
    padding = steps.unsqueeze(0) >= length.unsqueeze(1)
    gathered = values[index.masked_fill(padding, 0)]
    gathered[padding] = 0
    return gathered


class LazySequentialDataset(SequentialDataset):
    """SequentialDataset whose item lists are gathered per batch."""

    FLAT_POSITION = "_flat_position"  # row of a target in the flat interactions

    def data_augmentation(self):
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        self.flat_inter = self.inter_feat  # every interaction, grouped by user, in time order
        uid = self.flat_inter[self.uid_field].numpy()
        rows = np.arange(len(uid))
        first_of_user = np.ones(len(uid), bool)
        first_of_user[1:] = uid[1:] != uid[:-1]
        user_start = np.maximum.accumulate(np.where(first_of_user, rows, 0))
        # as RecBole: every interaction but a user's first is a target, its
        # list the (up to L) interactions before it
        targets = torch.from_numpy(rows[~first_of_user])
        lengths = torch.from_numpy(np.minimum(rows - user_start, self.max_item_list_len)[~first_of_user])
        target_inter = {field: values[targets] for field, values in self.flat_inter.interaction.items()}
        target_inter[self.item_list_length_field] = lengths
        target_inter[self.FLAT_POSITION] = targets
        self.inter_feat = TargetInteractions(target_inter, self)

    def __getitem__(self, index, join=True):
        batch = self.inter_feat[index]
        end, length = batch[self.FLAT_POSITION], batch[self.item_list_length_field]
        del batch[self.FLAT_POSITION]
        batch.update(
            Interaction(
                {  # every field's <field>_list: each target's (up to L) interactions before it
                    getattr(self, f"{field}_list_field"): windows(values, end, length, self.max_item_list_len)
                    for field, values in self.flat_inter.interaction.items()
                    if field != self.uid_field
                }
            )
        )
        return self.join(batch) if join else batch

    def inter_matrix(self, form="coo", value_field=None):
        return self._create_sparse_matrix(self.flat_inter, self.uid_field, self.iid_field, form, value_field)


def training_window(model_name):
    """ "next_item" or "masked" for models trained on whole-sequence windows, else None."""
    return getattr(registry.get_model(model_name), "TRAINING_WINDOW", None)


class SequenceWindows:
    """Every user's time-ordered sequence cut into windows, in shuffled batches of ``train_batch_size``: the
    training data of whole-sequence models (movierec's SASRec and BERT4Rec, S3Rec pretraining).

    With L = MAX_ITEM_LIST_LENGTH, a user's windows step back L items at a
    time from the newest, and a window holds
    - ``next_item``: up to L + 1 items, the encoder's L inputs and, one step
      ahead, their targets; every interaction but a user's first is a target
      exactly once per epoch (RecBole's prefix samples give the same targets
      with one encoder pass each);
    - ``masked``: up to L items; every interaction is in exactly one window.
    ``train_windows: random`` takes one of each user's windows per epoch
    instead of all of them. A batch has RecBole's layout: ``item_id_list``
    (left-aligned, 0-padded), ``item_length`` and ``user_id``.
    """

    def __init__(self, history, config, window):
        stride = config["MAX_ITEM_LIST_LENGTH"]
        self.width = stride + (window == "next_item")
        self.batch_size = config["train_batch_size"]
        self.one_per_user = config["train_windows"] == "random"
        self.user_field, self.length_field = config["USER_ID_FIELD"], config["ITEM_LIST_LENGTH_FIELD"]
        self.item_list = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.items = history.items
        starts, ends = history.indptr[:-1].numpy(), history.indptr[1:].numpy()
        overlap = self.width - stride  # a next-item window starts with the last target of the one before it
        per_user = (np.maximum(ends - starts - overlap, 0) + stride - 1) // stride  # windows with a target
        user = np.repeat(np.arange(len(ends)), per_user)
        k = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
        end = ends[user] - k * stride
        self.user, self.end = torch.from_numpy(user), torch.from_numpy(end)
        self.length = torch.from_numpy(np.minimum(self.width, end - starts[user]))
        self.first_window = torch.from_numpy((np.cumsum(per_user) - per_user)[per_user > 0])
        self.user_windows = torch.from_numpy(per_user[per_user > 0])
        self.generator = torch.Generator().manual_seed(config["seed"])

    def __len__(self):
        count = len(self.user_windows) if self.one_per_user else len(self.end)
        return (count + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        if self.one_per_user:
            offset = (torch.rand(len(self.user_windows), generator=self.generator) * self.user_windows).long()
            order = (self.first_window + offset)[torch.randperm(len(offset), generator=self.generator)]
        else:
            order = torch.randperm(len(self.end), generator=self.generator)
        for batch in torch.split(order, self.batch_size):
            end, length = self.end[batch], self.length[batch]
            yield Interaction(
                {
                    self.user_field: self.user[batch],
                    self.item_list: windows(self.items, end, length, self.width),
                    self.length_field: length,
                }
            )


class TargetInteractions(Interaction):
    """A LazySequentialDataset's rows, one per target. A model that reads a list column of the
    dataset by name (FEARec: ``dataset.inter_feat["item_id_list"][row]``) gets a column whose
    rows are gathered when indexed, as RecBole's materialised one would give them."""

    def __init__(self, interaction, dataset):
        super().__init__(interaction)
        self.dataset = dataset

    def __getitem__(self, index):
        if isinstance(index, str) and index not in self.interaction:
            field = index.removesuffix(self.dataset.config["LIST_SUFFIX"])
            if field != index and field in self.dataset.flat_inter.interaction:
                return _GatheredColumn(self.dataset, field)
        return super().__getitem__(index)


class _GatheredColumn:
    def __init__(self, dataset, field):
        self.dataset, self.field = dataset, field

    def __getitem__(self, rows):
        rows = torch.as_tensor(rows)
        targets = self.dataset.inter_feat.interaction
        end, length = (
            targets[LazySequentialDataset.FLAT_POSITION][rows],
            targets[self.dataset.item_list_length_field][rows],
        )
        lists = windows(
            self.dataset.flat_inter[self.field], end.reshape(-1), length.reshape(-1), self.dataset.max_item_list_len
        )
        return lists.reshape(*rows.shape, -1)


def dataset_class(config):
    """RecBole's choice of dataset class (as create_dataset), with the lazy sequential dataset. Models trained
    on whole-sequence windows read no prefix samples: the plain Dataset holds what they need."""
    import recbole.data.dataset as datasets

    special = getattr(datasets, config["model"] + "Dataset", None)  # e.g. DIENDataset
    if special is not None:
        return special
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and not training_window(config["model"]):
        return LazySequentialDataset
    return datasets.Dataset  # general, traditional, context-aware (knowledge-aware ones are refused)


def load_dataset(config):
    """The dataset for config (a Config, or a ReadRecorder that notes what the dataset read), formatted for
    training; cached next to the atomic files."""
    cache = dataset_cache(config)
    dataset, path = cache.load(config, _unpickle)
    if dataset is not None:
        dataset.config = config
        logger.info("dataset %s from cache %s", config["dataset"], path)
        return dataset
    recorder = ReadRecorder(config)
    dataset = dataset_class(config)(recorder)
    dataset._change_feat_format()  # what RecBole's build() does before splitting
    dataset.config = unwrapped(config)  # pickled with the plain Config

    def dump(tmp):
        with open(tmp, "wb") as f:
            pickle.dump(dataset, f, protocol=pickle.HIGHEST_PROTOCOL)

    path = cache.path_for(config, recorder.reads)
    write_atomic(path, dump)
    dataset.config = config
    logger.info("dataset %s built and cached in %s", config["dataset"], path)
    return dataset


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def dataset_cache(config):
    """The cache of the datasets built for config's data and dataset class."""
    folder = Path(config["data_path"]).parent / "cache"  # RecBole's data_path is <prepared version>/<dataset>
    return ReadKeyedCache(folder, f"{config['dataset']}-{dataset_class(config).__name__}", CACHE_FORMAT)


def train_loader(config, dataset, history):
    """The training data of one fit: windows of the history's sequences for the models trained on them,
    else RecBole's training dataloader over the whole dataset (no split: the holdout is elsewhere).

    Only the training phase samples negatives, so only its sampler is built
    (RecBole's create_samplers also builds valid and test ones, each a Python
    pass over every interaction), and none when the model samples nothing.
    """
    window = training_window(config["model"])
    if window:
        return SequenceWindows(history, config, window)
    args = config["train_neg_sample_args"]
    sampler = None
    if args["distribution"] != "none":
        if config["repeatable"]:
            sampler = RepeatableSampler(["train"], dataset, args["distribution"], args["alpha"])
        else:
            sampler = Sampler(["train"], [dataset], args["distribution"], args["alpha"])
        sampler = sampler.set_phase("train")
    return get_dataloader(config, "train")(config, dataset, sampler, shuffle=config["shuffle"])


class RepeatedPasses:
    """A training loader passed over again within an epoch until the epoch has at least min_steps batches:
    a small data set then gets as many optimizer steps between two evaluations as a large one, so that
    epochs, eval_step, stopping_step and refit_epochs, all counted in epochs, mean the same on both."""

    def __init__(self, loader, min_steps):
        self.loader = loader
        self.passes = max(1, -(-min_steps // max(len(loader), 1)))

    def __len__(self):
        return self.passes * len(self.loader)

    def __iter__(self):
        for _ in range(self.passes):
            yield from self.loader

    def __getattr__(self, name):  # RecBole's trainers read the loader's dataset, sampler, shuffle...
        return getattr(self.loader, name)


def token_ids(dataset, field, tokens):
    """Internal ids of integer tokens (0 for tokens the dataset does not know)."""
    known = dataset.field2id_token[field][1:].astype(np.int64)  # id 0 is [PAD]
    order = np.argsort(known)
    position = np.clip(np.searchsorted(known[order], tokens), 0, len(known) - 1)
    found = known[order][position] == tokens
    return np.where(found, order[position] + 1, 0)


def original_ids(dataset, field):
    """id -> integer token, for all ids (-1 for [PAD])."""
    tokens = dataset.field2id_token[field]
    return np.concatenate(([-1], tokens[1:].astype(np.int64)))


class History:
    """Each user's interactions in time order, in a dataset's internal ids (CSR): the items to mask and the
    sequences to score from.

    Built from original ids, so a model can be given the history of another
    file than its training file (the full history for a submission); the
    times are the file's, exact (RecBole holds them as float32).
    """

    def __init__(self, dataset, users, items, times):
        uid = token_ids(dataset, dataset.uid_field, users)
        iid = token_ids(dataset, dataset.iid_field, items)
        known = (uid > 0) & (iid > 0)
        uid, iid, times = uid[known], iid[known], times[known]
        order = np.lexsort((times, uid))  # stable: ties keep file order, as in training
        self.items = torch.from_numpy(iid[order])
        self.times = torch.from_numpy(times[order].astype(np.float64))
        counts = np.bincount(uid, minlength=dataset.user_num)
        self.indptr = torch.from_numpy(np.concatenate(([0], np.cumsum(counts))))

    @classmethod
    def from_file(cls, dataset, inter_path):
        return cls(dataset, *read_inter(inter_path))

    def users(self):
        return torch.nonzero(self.indptr[1:] > self.indptr[:-1]).squeeze(1)

    def lengths(self, users):
        return self.indptr[users + 1] - self.indptr[users]

    def seen(self, users):
        """(row in users, item) of every item each user has seen."""
        start, length = self.indptr[users], self.lengths(users)
        row = torch.repeat_interleave(torch.arange(len(users), device=length.device), length)
        offset = torch.arange(int(length.sum()), device=length.device)
        offset -= torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
        return row, self.items[start[row] + offset]

    def last(self, users, max_length):
        """The last max_length items and times of each user, left-aligned, 0-padded, and lengths."""
        end = self.indptr[users + 1]
        length = self.lengths(users).clamp(max=max_length)
        return windows(self.items, end, length, max_length), windows(self.times, end, length, max_length), length
