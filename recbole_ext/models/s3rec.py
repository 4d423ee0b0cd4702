"""S3Rec (Zhou et al., CIKM 2020) with any number of item attributes.

Self-supervised pretraining of a bidirectional Transformer encoder whose
shape and tensor names are SASRec's and BERT4Rec's, so the encoder carries
over to them (recbole_ext/trainer/pretrain.py). For an item sequence with some
positions masked (mask_ratio), and h_t the encoder output at position t:

    AAP_a  unmasked t: predict the values of attribute a of item s_t
           BCE(sigmoid(W_aap,a h_t . E_a), attributes_a(s_t))
    MIP    masked t: score s_t above an item not in the sequence
           -log sigmoid(W_mip h_t . e(s_t) - W_mip h_t . e(neg_t))
    MAP_a  masked t: predict the values of attribute a of item s_t
           BCE(sigmoid(W_map,a h_t . E_a), attributes_a(s_t))
    SP     a sequence with a segment masked scores its own segment above
           a segment of another sequence (encoded alone, last position)
           -log sigmoid(W_sp c . p_pos - W_sp c . p_neg)

    L = aap_weight * sum_a w_a AAP_a + mip_weight * MIP + map_weight * sum_a w_a MAP_a + sp_weight * SP

Each attribute (``item_attribute: {genre: 1.0, year: 0.5}``, any token or
token_seq field of the .item file) is one ``AttributePrediction`` module with
its value embeddings E_a and projections: RecBole's S3Rec takes one
attribute only. Losses are means over positions (sums over an attribute's
values), so the weights do not depend on batch size. The pretraining batch
is built with tensor operations on the model's device (``pretraining_batch``);
RecBole's builds it position by position in Python.
"""

import time

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.trainer import Trainer
from recbole.utils import InputType
from torch import nn

from recbole_ext import ConfigError

PROPERTIES = {
    # the encoder: the same settings as the downstream SASRec / BERT4Rec
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    # pretraining
    "item_attribute": {"genre": 1.0},  # .item field -> weight of its AAP and MAP losses
    "pretrain_mask_ratio": 0.2,
    "aap_weight": 0.2,
    "mip_weight": 1.0,
    "map_weight": 1.0,
    "sp_weight": 0.5,
    "pretrain_epochs": 10,
    "pretrain_learning_rate": 0.001,
    "pretrain_batch_size": 256,
    # finetuning
    "downstream_model": "SASRec",  # SASRec or BERT4Rec, started from the pretrained encoder
}
ENCODER_KEYS = (
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
)


def check_settings(values, where):
    """downstream_model, checked before pretraining runs (from config.check_settings)."""
    downstream = values.get("downstream_model", PROPERTIES["downstream_model"])
    if downstream not in S3Rec.DOWNSTREAM_MODELS:
        raise ConfigError(
            f"{where('downstream_model')}: downstream_model must be one of "
            f"{', '.join(S3Rec.DOWNSTREAM_MODELS)}, got {downstream!r}"
        )


def attribute_weights(setting):
    """item_attribute as {field: weight}: a dict, a list of fields (weight 1) or one field."""
    if isinstance(setting, str):
        return {setting: 1.0}
    if isinstance(setting, dict):
        return {field: float(weight) for field, weight in setting.items()}
    return {field: 1.0 for field in setting}


class AttributePrediction(nn.Module):
    """AAP and MAP for one attribute: which of its values an item has."""

    def __init__(self, item_values, hidden_size):
        super().__init__()
        # item id -> multi-hot over the attribute's values; derived from the dataset, not saved
        self.register_buffer("item_values", item_values, persistent=False)
        self.value_embedding = nn.Embedding(item_values.shape[1], hidden_size)
        self.aap = nn.Linear(hidden_size, hidden_size)
        self.map = nn.Linear(hidden_size, hidden_size)

    def loss(self, projection, hidden, items):
        """Mean over positions of the summed BCE over the attribute's values."""
        if len(items) == 0:
            return hidden.new_zeros(())
        logits = projection(hidden) @ self.value_embedding.weight.T
        targets = self.item_values[items].float()
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()


def item_value_table(dataset, field):
    """(n_items, n_values) bool: the values of a token or token_seq field per item id (padding dropped)."""
    item_feat = dataset.get_item_feature()
    if field not in item_feat.columns:
        loaded = sorted(set(item_feat.columns) - {dataset.iid_field})
        raise ValueError(f"S3Rec: item attribute {field!r} is not in the dataset's .item fields {loaded}")
    values = item_feat[field]
    values = values.unsqueeze(1) if values.dim() == 1 else values
    table = torch.zeros(len(values), dataset.num(field), dtype=torch.bool)
    table[torch.arange(len(values)).unsqueeze(1).expand_as(values), values] = True
    return table[:, 1:]


class S3Rec(SequentialRecommender):
    input_type = InputType.POINTWISE
    DOWNSTREAM_MODELS = ("SASRec", "BERT4Rec")  # run.py pretrains, then finetunes one of these
    TRAINING_WINDOW = "masked"  # pretraining reads every user's whole sequence in windows of L items
    SHARED_WITH_DOWNSTREAM = ENCODER_KEYS

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        self.mask_token = self.n_items  # one row past the items, as BERT4Rec's
        self.mask_ratio = config["pretrain_mask_ratio"]
        self.loss_weights = {k: config[f"{k}_weight"] for k in ("aap", "mip", "map", "sp")}
        self.attribute_weights = attribute_weights(config["item_attribute"])
        self.initializer_range = config["initializer_range"]

        self.item_embedding = nn.Embedding(self.n_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        self.trm_encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=hidden,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.LayerNorm = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.mip = nn.Linear(hidden, hidden)
        self.sp = nn.Linear(hidden, hidden)
        self.attributes = nn.ModuleDict(
            {field: AttributePrediction(item_value_table(dataset, field), hidden) for field in self.attribute_weights}
        )
        self.apply(self._init_weights)

    def _init_weights(self, module):  # as SASRec's
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def forward(self, item_seq):
        """Bidirectional encoding of a (B, L) sequence: (B, L, H)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        embedded = self.dropout(self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions)))
        mask = self.get_attention_mask(item_seq, bidirectional=True)
        return self.trm_encoder(embedded, mask, output_all_encoded_layers=True)[-1]

    def downstream_state(self):
        """The tensors a SASRec / BERT4Rec starts from: embeddings, LayerNorm, encoder."""
        keep = ("item_embedding.", "position_embedding.", "LayerNorm.", "trm_encoder.")
        return {name: tensor for name, tensor in self.state_dict().items() if name.startswith(keep)}

    # --- the pretraining batch ---

    def pretraining_batch(self, item_seq, lengths):
        """Masks, negatives and segments for a batch of left-aligned, 0-padded sequences."""
        batch, width = item_seq.shape
        device = item_seq.device
        position = torch.arange(width, device=device).unsqueeze(0)
        valid = position < lengths.unsqueeze(1)

        masked = valid & (torch.rand(batch, width, device=device) < self.mask_ratio)
        negatives = item_seq.clone()
        negatives[masked] = self._items_not_in(item_seq, masked)

        # a segment of 1 .. length // 2 items per sequence of length >= 2
        has_segment = lengths >= 2
        half = torch.clamp(lengths // 2, min=1)
        seg_length = (torch.rand(batch, device=device) * half).long() + 1
        seg_start = (torch.rand(batch, device=device) * (lengths - seg_length + 1).clamp(min=1)).long()
        in_segment = (position >= seg_start.unsqueeze(1)) & (position < (seg_start + seg_length).unsqueeze(1))
        in_segment &= has_segment.unsqueeze(1)
        # the negative segment: as long, anywhere in the batch's items laid end to end (as the paper)
        all_items = item_seq[valid]
        other_start = (torch.rand(batch, device=device) * (len(all_items) - seg_length + 1).clamp(min=1)).long()
        other_index = (other_start.unsqueeze(1) + position - seg_start.unsqueeze(1)).clamp(0, len(all_items) - 1)
        outside = valid & ~in_segment

        def segment_view(items):  # the segment's items, the mask token around it, padding kept
            return torch.where(in_segment, items, torch.where(outside, self.mask_token, 0))

        return {
            "valid": valid,
            "masked": masked,
            "masked_items": item_seq.masked_fill(masked, self.mask_token),
            "negative_items": negatives,
            "has_segment": has_segment,
            "segment_masked": item_seq.masked_fill(in_segment, self.mask_token),
            "segment_positive": segment_view(item_seq),
            "segment_negative": segment_view(all_items[other_index]),
        }

    def _items_not_in(self, item_seq, where, rounds=100):
        """For each position in ``where``, an item drawn uniformly among those not in its sequence."""
        device = item_seq.device
        in_sequence = torch.zeros(len(item_seq), self.n_items, dtype=torch.bool, device=device)
        in_sequence.scatter_(1, item_seq, True)
        rows = torch.nonzero(where)[:, 0]
        sample = torch.randint(1, self.n_items, (len(rows),), device=device)
        pending = torch.arange(len(rows), device=device)
        for _ in range(rounds):  # redraw only what fell in its own sequence
            pending = pending[in_sequence[rows[pending], sample[pending]]]
            if len(pending) == 0:
                break
            sample[pending] = torch.randint(1, self.n_items, (len(pending),), device=device)
        return sample

    # --- the four objectives ---

    def calculate_loss(self, interaction):
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        b = self.pretraining_batch(item_seq, lengths)
        hidden = self.forward(b["masked_items"])
        unmasked, masked = b["valid"] & ~b["masked"], b["masked"]

        aap = sum(
            w * self.attributes[a].loss(self.attributes[a].aap, hidden[unmasked], item_seq[unmasked])
            for a, w in self.attribute_weights.items()
        )
        map_ = sum(
            w * self.attributes[a].loss(self.attributes[a].map, hidden[masked], item_seq[masked])
            for a, w in self.attribute_weights.items()
        )
        projected = self.mip(hidden[masked])
        positive = (projected * self.item_embedding(item_seq[masked])).sum(-1)
        negative = (projected * self.item_embedding(b["negative_items"][masked])).sum(-1)
        mip = _mean(F.softplus(negative - positive))

        last = lengths - 1
        context = self.sp(self.gather_indexes(self.forward(b["segment_masked"]), last))
        own = self.gather_indexes(self.forward(b["segment_positive"]), last)
        other = self.gather_indexes(self.forward(b["segment_negative"]), last)
        sp = _mean(F.softplus((context * other).sum(-1) - (context * own).sum(-1))[b["has_segment"]])

        w = self.loss_weights
        return w["aap"] * aap, w["mip"] * mip, w["map"] * map_, w["sp"] * sp


def _mean(values):
    return values.mean() if len(values) else values.new_zeros(())


class S3RecTrainer(Trainer):
    """Pretraining: epochs of the four objectives; there is nothing to evaluate."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        for epoch in range(self.start_epoch, self.epochs):
            started = time.time()
            losses = self._train_epoch(train_data, epoch, show_progress=show_progress)
            self.train_loss_dict[epoch] = sum(losses) if isinstance(losses, tuple) else losses
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch, started, time.time(), losses))
        return self.best_valid_score, self.best_valid_result
