"""The one place that makes RecBole 1.2.1 work on a current stack.

RecBole 1.2.1 was written for numpy 1, pandas < 3, torch < 2.6, scipy < 1.13
and scripts that own ``sys.argv``. ``apply()`` patches the running process (never the
installed package) and is called when ``recbole_ext.patches.registry`` is imported,
which every module that uses RecBole does. Each shim is a small function with
a test in tests/test_compat.py that fails when the shim is removed.
"""

import functools
import logging
import os
import types
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

_applied = False


def apply():
    global _applied
    if _applied:
        return
    _numpy2_aliases()
    _trusted_checkpoint_loads()
    _dok_matrix_update()
    _interaction_sort_on_arrays()
    _config_ignores_argv()
    _tensorboard_beside_log()
    _anomaly_detection_off()
    _cpr_scores_without_a_target()
    _fearec_same_target_index_by_sorting()
    _pop_counts_every_positive()
    _missing_sequences_read_as_empty()
    _sequence_lengths_per_row()
    _fill_nan_by_assignment()
    quiet_known_warnings()
    _applied = True


# numpy 2 removed np.float_, np.complex_, np.unicode_, which
# Config.compatibility_settings() reads to re-create np.float, np.bool, ...;
# RecBole's metrics, Interaction and Dataset._fill_nan use those names.
NUMPY1_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def _numpy2_aliases():
    from recbole.config.configurator import Config

    def compatibility_settings(self):
        for name, value in NUMPY1_ALIASES.items():
            setattr(np, name, value)

    Config.compatibility_settings = compatibility_settings


class _TrustedCheckpointTorch(types.ModuleType):
    """``torch`` as seen by one RecBole module, with ``load`` defaulting to
    ``weights_only=False``.

    torch >= 2.6 loads with ``weights_only=True``, but RecBole's checkpoints
    pickle its whole ``Config``. Only the modules below get this view; they
    load checkpoints that RecBole's trainer wrote for this project. Every
    other ``torch.load`` in the process keeps torch's safe default.
    """

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(f, *args, **kwargs)


CHECKPOINT_LOADING_MODULES = (
    "recbole.trainer.trainer",  # evaluate(load_best_model=True), resume_checkpoint
    "recbole.model.sequential_recommender.s3rec",  # pre_model_path
    "recbole.model.general_recommender.neumf",  # mf/mlp pretrain paths
    "recbole.model.general_recommender.convncf",
    "recbole.model.general_recommender.nais",
    "recbole.model.general_recommender.ract",
)


def _trusted_checkpoint_loads():
    import importlib

    trusted = _TrustedCheckpointTorch()
    for name in CHECKPOINT_LOADING_MODULES:
        importlib.import_module(name).torch = trusted

    # load_data_and_model imports torch inside the function, out of reach of the module view above:
    # torch.load trusts the checkpoint for the duration of that call only.
    import recbole.quick_start
    import recbole.quick_start.quick_start as quick_start

    recbole_load_data_and_model = quick_start.load_data_and_model

    def load_data_and_model(model_file):
        safe_load = torch.load
        torch.load = functools.partial(safe_load, weights_only=False)
        try:
            return recbole_load_data_and_model(model_file)
        finally:
            torch.load = safe_load

    quick_start.load_data_and_model = load_data_and_model
    recbole.quick_start.load_data_and_model = load_data_and_model


def _dok_matrix_update():
    # scipy >= 1.13 dropped dok_matrix._update, which LightGCN, NGCF, NCL,
    # GCMC, SpectralCF, KGIN and MCCLK call to fill their adjacency matrices.
    # Same semantics as the old method: a bulk dict update without checks.
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)


def _interaction_sort_on_arrays():
    # Interaction.sort calls np.argsort on torch tensors, which numpy 2 only
    # serves through Tensor.__array_wrap__, deprecated and due to break.
    # Same stable multi-key sort, on numpy arrays.
    from recbole.data.interaction import Interaction

    def sort(self, by, ascending=True):
        by = [by] if isinstance(by, str) else list(by)
        ascending = [ascending] * len(by) if isinstance(ascending, bool) else list(ascending)
        if len(by) != len(ascending):
            raise ValueError(f"by [{by}] and ascending [{ascending}] should have same length.")
        for field, ascend in zip(by[::-1], ascending[::-1]):
            if field not in self.interaction:
                raise ValueError(f"[{field}] is not exist in interaction [{self}].")
            key = self.interaction[field]
            key = (key if key.dim() == 1 else key[..., 0]).numpy()
            index = np.argsort(key, kind="stable")
            self._reindex(torch.from_numpy(index if ascend else index[::-1].copy()))

    Interaction.sort = sort


def _config_ignores_argv():
    # Config._load_cmd_line turns every "--key=value" of sys.argv into a
    # config key: foreign flags of run.py, pytest or a Ray worker leak into
    # RecBole. movierec passes all settings through config_dict instead.
    from recbole.config.configurator import Config

    Config._load_cmd_line = lambda self: {}


class _NullSummaryWriter:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _tensorboard_beside_log():
    # RecBole's trainer opens a SummaryWriter under ./log_tensorboard of the
    # current directory. Write it next to the run's log file instead, or
    # nowhere when the run has no log file (tests, Ray trials).
    import recbole.trainer.trainer as trainer_module

    def get_tensorboard(logger):
        for handler in logging.getLogger().handlers + list(logger.handlers):
            if isinstance(handler, logging.FileHandler):
                from torch.utils.tensorboard import SummaryWriter

                log_dir = os.path.dirname(handler.baseFilename)
                return SummaryWriter(os.path.join(log_dir, "tensorboard"))
        return _NullSummaryWriter()

    trainer_module.get_tensorboard = get_tensorboard


def _anomaly_detection_off():
    # Importing RecBole's model package imports SINE, whose module calls
    # torch.autograd.set_detect_anomaly(True) for the whole process: every
    # backward of every model then records stack traces and checks each
    # gradient for NaN (SASRec's epochs ran 2-4x slower). Training checks its
    # loss for NaN itself (Trainer._check_nan).
    import recbole.model.sequential_recommender.sine  # noqa: F401  (its import switches detection on)

    torch.autograd.set_detect_anomaly(False)


def _cpr_scores_without_a_target():
    # GRU4RecCPR's and SASRecCPR's full_sort_predict also computes the
    # training loss, which reads the target item: RecBole's evaluation batches
    # carry one, a request for recommendations does not (KeyError: 'item_id').
    # The same scores, without the loss (as their own predict() does).
    from recbole.model.sequential_recommender.gru4reccpr import GRU4RecCPR
    from recbole.model.sequential_recommender.sasreccpr import SASRecCPR

    def full_sort_predict(self, interaction):
        _, prediction_prob = self.calculate_loss_prob(interaction, only_compute_prob=True)
        if self.post_remove_context:
            prediction_prob.scatter_(1, interaction[self.ITEM_SEQ], 0)
        return prediction_prob

    GRU4RecCPR.full_sort_predict = full_sort_predict
    SASRecCPR.full_sort_predict = full_sort_predict


def _fearec_same_target_index_by_sorting():
    # FEARec.__init__ maps each target item to the rows that have it with one
    # np.where over all rows per row: quadratic, about 10^10 comparisons on
    # MovieLens-100K, hours at the competition's 5M. The same map from one sort.
    from recbole.model.sequential_recommender.fearec import FEARec

    def get_same_item_index(self, dataset):
        target_item = dataset.inter_feat[self.ITEM_ID].numpy()
        order = np.argsort(target_item, kind="stable")  # rows of each item stay in ascending order
        items, starts = np.unique(target_item[order], return_index=True)
        return dict(zip(items.tolist(), np.split(order, starts[1:])))

    FEARec.get_same_item_index = get_same_item_index


def _pop_counts_every_positive():
    # Pop adds 1 with `item_cnt[item] = item_cnt[item] + 1`: an item that occurs twice in a batch is
    # counted once (indexed assignment does not accumulate), so every item of a 2,048 batch counts at
    # most once per batch and the most popular ones tie; the negatives that RecBole's pointwise loader
    # samples (label 0) are counted too. Its ranking did not follow the training counts (MovieLens
    # samples: 0.0651 against 0.0717 by true counts). Each positive interaction counts once.
    from recbole.model.general_recommender.pop import Pop

    init = Pop.__init__

    def __init__(self, config, dataset):
        init(self, config, dataset)
        self.label_field = config["LABEL_FIELD"]

    def calculate_loss(self, interaction):
        item = interaction[self.ITEM_ID]
        if self.label_field in interaction:
            item = item[interaction[self.label_field] > 0]
        self.item_cnt.index_add_(0, item, torch.ones_like(item).unsqueeze(1))
        self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
        return torch.nn.Parameter(torch.zeros(1, device=self.device))

    Pop.__init__, Pop.calculate_loss = __init__, calculate_loss


class _EmptySequencesPandas(types.ModuleType):
    """``pandas`` as seen by RecBole's dataset module, whose ``read_csv`` gives a missing
    token_seq or float_seq value as "" (the columns are named ``field:token_seq`` there)."""

    def __init__(self):
        super().__init__("pandas")

    def __getattr__(self, name):
        return getattr(pd, name)

    @staticmethod
    def read_csv(*args, **kwargs):
        frame = pd.read_csv(*args, **kwargs)
        for column in frame.columns:
            if column.endswith("seq"):
                frame[column] = frame[column].fillna("")
        return frame


def _missing_sequences_read_as_empty():
    # Dataset._load_feat fills a missing sequence with `df[field].fillna(value="", inplace=True)`: under
    # copy-on-write (always on from pandas 3) that fills a copy, the value stays NaN, and splitting it
    # fails ('float' object has no attribute 'split'). Its read_csv fills them instead.
    import recbole.data.dataset.dataset as dataset_module

    dataset_module.pd = _EmptySequencesPandas()


def _sequence_lengths_per_row():
    # pandas 3's Series.agg(func) passes the whole Series to func; pandas 2 passed each row where it could.
    # Dataset._remap, _normalize and _discretization split a token_seq or float_seq column's new values
    # back into rows at np.cumsum(feat[field].agg(len)): under pandas 3 that is the number of rows ("Length
    # of values (1) does not match length of index"). While RecBole processes its data, Series.agg(len)
    # is each row's length again (their agg(np.concatenate) means the same under both).
    from recbole.data.dataset.dataset import Dataset

    data_processing = Dataset._data_processing
    series_agg = pd.Series.agg

    def agg(self, func=None, *args, **kwargs):
        return self.map(len) if func is len else series_agg(self, func, *args, **kwargs)

    def _data_processing(self):
        pd.Series.agg = agg
        try:
            data_processing(self)
        finally:
            pd.Series.agg = series_agg

    Dataset._data_processing = _data_processing


def _fill_nan_by_assignment():
    # Dataset._fill_nan fills a token field with 0 ([PAD]) and a float field with its mean through
    # `feat[field].fillna(..., inplace=True)`: under copy-on-write it fills a copy, and the rows of
    # users and items without a side-file row keep NaN (a token's NaN becomes a garbage id in the
    # LongTensor). The same fills, assigned back to the column.
    from recbole.data.dataset.dataset import Dataset
    from recbole.utils import FeatureType

    def _fill_nan(self):
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(value=0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(value=feat[field].mean())
                else:  # a sequence of a row that the merge added
                    empty = np.array([], dtype=np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64)
                    feat[field] = feat[field].apply(lambda x, empty=empty: empty if isinstance(x, float) else x)

    Dataset._fill_nan = _fill_nan


def quiet_known_warnings():
    # pandas 2.2/2.3 warn about RecBole's chained assignments (Dataset._fill_nan, _load_feat); under
    # copy-on-write _load_feat's still runs, on values its read_csv filled already (the shims above)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    warnings.filterwarnings("ignore", category=pd.errors.ChainedAssignmentError, module=r"recbole\.data\.dataset\.")
    # pandas 3.1 deprecates `inplace=` (drop, reset_index, sort_values...), which RecBole uses: gone in pandas 4
    warnings.filterwarnings("ignore", message="The inplace keyword", category=DeprecationWarning, module=r"recbole\.")
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.GradScaler.*")
    # torch deprecations inside RecBole's models (LightGCN, NGCF, MultiVAE.predict)
    warnings.filterwarnings("ignore", message=r"torch\.sparse\.SparseTensor", category=UserWarning)
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
