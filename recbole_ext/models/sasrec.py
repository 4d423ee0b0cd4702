"""SASRec (Kang & McAuley, ICDM 2018) trained on whole sequences.

RecBole's SASRec (its encoder, tensor names, settings and checkpoints are
kept) trains on every prefix of every user as its own sample: one encoder
pass per interaction. Here a sample is a window of a user's sequence
(``recbole_ext.data.dataset.SequenceWindows``, L = MAX_ITEM_LIST_LENGTH inputs): the
causal encoder runs once, and its output h_t at every real position t is
scored against the next item s_{t+1} (``recbole_ext.models.losses``):

    loss_type: CE     softmax over all items at every position
    loss_type: gBCE   neg_samples uniform negatives, calibrated by gbce_t (gSASRec)
    loss_type: BPR    one uniform negative per position

Every interaction but a user's first is a target once per epoch, as with
RecBole's prefixes, for about (interactions / users) times fewer encoder
passes. Prediction is RecBole's: the output at the user's latest position.
RecBole's original stays reachable as ``RecBoleSASRec``.
"""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec
from recbole.utils import InputType

from recbole_ext import ConfigError
from recbole_ext.config.keys import is_number
from recbole_ext.models.attributes import ItemAttributes, check_item_attributes
from recbole_ext.models.losses import LOSS_TYPES, sequence_loss
from recbole_ext.models.window_trainer import WindowTrainer, amp_problem
from recbole_ext.patches.registry import recbole_properties

WINDOW_SETTINGS = {
    "loss_type": "CE",  # CE | gBCE | BPR, over every position of a window
    # gBCE (Petrov & Macdonald 2023): the paper's and the competition's best blend's values
    "neg_samples": 256,  # gBCE negatives per target (drawn per window, shared by its positions)
    "gbce_t": 0.75,  # calibration: 0 = plain BCE, 1 = fully calibrated
    "train_windows": "random",  # random: one window per user and epoch (measured better) | all: every window
    # normal: RecBole's N(0, initializer_range) | xavier: xavier_normal_ item and position tables (RecTools')
    "embedding_init": "normal",
    "train_neg_sample_args": None,  # negatives are drawn in the loss, not by RecBole's dataloader
    "amp": "off",  # off | fp16 (CUDA) | bf16: mixed precision of training (recbole_ext/models/window_trainer.py)
    "item_attributes": [],  # .item fields embedded and added to each input item: [genre, year, ...] (attributes.py)
}
PROPERTIES = {**recbole_properties("SASRec"), **WINDOW_SETTINGS}
EMBEDDING_INITS = ("normal", "xavier")


def check_settings(values, where):
    """The choices of whole-sequence training (config/keys.py checks kinds and ranges), shared with BERT4Rec."""
    choices = {"loss_type": LOSS_TYPES, "train_windows": ("all", "random"), "embedding_init": EMBEDDING_INITS}
    for key, valid in choices.items():
        if key in values and values[key] not in valid:
            raise ConfigError(f"{where(key)}: {key} must be one of {', '.join(valid)}, got {values[key]!r}")
    if "gbce_t" in values and not (is_number(values["gbce_t"]) and 0 <= values["gbce_t"] <= 1):
        raise ConfigError(f"{where('gbce_t')}: gbce_t must be a number in [0, 1], got {values['gbce_t']!r}")
    # the device of auto is known once resolved (recbole_config.resolve_device checks again there)
    problem = amp_problem(values.get("amp", "off"), "cpu" if values.get("device") == "cpu" else None)
    if problem:
        raise ConfigError(f"{where('amp')}: {problem}")
    for key in ("enable_amp", "enable_scaler"):
        if values.get(key):
            raise ConfigError(f"{where(key)}: {key}: movierec's window-trained models take amp: fp16 | bf16 instead")
    check_item_attributes(values, where)


class WindowTrained:
    """Before RecBole's SASRec or BERT4Rec in a class's bases: their constructor, with the window loss's settings."""

    input_type = InputType.POINTWISE  # negatives are drawn in the loss: RecBole's dataloader samples none

    def __init__(self, config, dataset):
        loss_type = config["loss_type"]
        config["loss_type"] = "CE"  # RecBole's constructor knows only BPR and CE; the loss is computed here
        try:
            super().__init__(config, dataset)
        finally:
            config["loss_type"] = loss_type
        self.loss_type = loss_type
        self.neg_samples, self.gbce_t = config["neg_samples"], config["gbce_t"]
        if config["embedding_init"] == "xavier":  # None: a model saved before the setting, RecBole's normal
            for table in (self.item_embedding, self.position_embedding):
                torch.nn.init.xavier_normal_(table.weight)
        fields = config["item_attributes"]  # None in the config of a model saved before the setting existed
        self.attribute_embedding = (
            ItemAttributes(dataset, fields, len(self.item_embedding.weight), self.hidden_size, self.initializer_range)
            if fields
            else None
        )

    def embed_items(self, item_seq):
        """The input embedding of items: the item's own, plus its attributes' (item_attributes)."""
        embedded = self.item_embedding(item_seq)
        return embedded if self.attribute_embedding is None else embedded + self.attribute_embedding(item_seq)


SASRecTrainer = WindowTrainer


class SASRec(WindowTrained, RecBoleSASRec):
    TRAINING_WINDOW = "next_item"  # windows of L + 1 items: L inputs, each with the next item as target

    def encode(self, item_seq):
        """The encoder output at every position (B, L, H); position t sees the items up to t only."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        embedded = self.dropout(self.LayerNorm(self.embed_items(item_seq) + self.position_embedding(positions)))
        mask = self.get_attention_mask(item_seq)  # causal, and blind to padding
        return self.trm_encoder(embedded, mask, output_all_encoded_layers=True)[-1]

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.encode(item_seq), item_seq_len - 1)

    def calculate_loss(self, interaction):
        window = interaction[self.ITEM_SEQ]  # (B, L + 1): position t's target is the item at t + 1
        return sequence_loss(
            self.loss_type,
            self.encode(window[:, :-1]),
            window[:, 1:],
            self.item_embedding.weight,
            neg_samples=self.neg_samples,
            gbce_t=self.gbce_t,
        )
