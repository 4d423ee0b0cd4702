"""Item attributes at the input of movierec's SASRec and BERT4Rec (``item_attributes: [genre, year, ...]``).

Each attribute a, a field of the prepared .item file (token or token_seq),
has its own embedding table E_a; an item s enters the encoder as

    e(s) + sum_a mean of E_a[v] over the values v of s in field a

(the mean pools a multi-valued field such as genre; an item without a value,
the padding and BERT4Rec's mask token add nothing). Only the input changes:
the output side still scores against the item embeddings. The values are read
from the .item file itself (recbole_ext/data/item_file.py), whatever ``load_col``
loads; the item-to-value tables are rebuilt from it with the model and not
saved, only the embeddings are. RecBole's SASRecF and FDSA add attributes to
the input too, but train on every prefix (docs/models.md).
"""

import torch
from torch import nn

from recbole_ext import ConfigError
from recbole_ext.config.keys import did_you_mean
from recbole_ext.data.item_file import data_item_fields, read_item_file


class ItemAttributes(nn.Module):
    """The sum of the pooled attribute embeddings of items: (...) item ids -> (..., hidden)."""

    def __init__(self, dataset, fields, rows, hidden_size, initializer_range):
        """rows: the item ids the model embeds (BERT4Rec's mask token is one past the items)."""
        super().__init__()
        table = read_item_file(dataset)
        self.fields = list(fields)
        self.values = nn.ModuleDict()
        for field in self.fields:
            value_lists = table[field].str.split()
            names = sorted({value for values in value_lists for value in values})
            number = {name: position + 1 for position, name in enumerate(names)}  # 0: no value
            width = max(map(len, value_lists), default=0) or 1
            item_values = torch.zeros(rows, width, dtype=torch.long, device="cpu")
            for item, values in zip(table.index, value_lists):
                item_values[item, : len(values)] = torch.tensor([number[v] for v in values], dtype=torch.long)
            # derived from the .item file with the model, not saved
            self.register_buffer(f"{field}_values", item_values, persistent=False)
            embedding = nn.EmbeddingBag(len(names) + 1, hidden_size, mode="mean", padding_idx=0)
            embedding.weight.data.normal_(0.0, initializer_range)  # as RecBole initialises its embeddings
            embedding.weight.data[0] = 0.0
            self.values[field] = embedding

    def forward(self, items):
        flat = items.reshape(-1)
        total = sum(self.values[field](getattr(self, f"{field}_values")[flat]) for field in self.fields)
        return total.view(*items.shape, -1)


def check_item_attributes(values, where):
    """item_attributes: a list of distinct fields of the data's .item file, checked before any data is prepared."""
    fields = values.get("item_attributes") or []
    if not isinstance(fields, list) or not all(isinstance(field, str) for field in fields):
        raise ConfigError(
            f"{where('item_attributes')}: item_attributes must be a list of item fields, e.g. [genre, year], "
            f"got {fields!r}"
        )
    if len(set(fields)) < len(fields):
        raise ConfigError(f"{where('item_attributes')}: item_attributes names a field twice: {fields!r}")
    existing, data = data_item_fields(values.get("data"))
    for field in fields:
        if field not in existing:
            raise ConfigError(
                f"{where('item_attributes')}: item_attributes: {field!r} is not an item field of {data}"
                f"{did_you_mean(field, existing)}; its fields: {', '.join(existing) or 'none (no side files)'}"
            )
