"""The prepared .item file of a dataset, read as atomic_data wrote it, whatever the run's ``load_col`` loads.

The future-film filter (recbole_ext/data/future.py) reads its years, the sequential models' item attributes
(recbole_ext/models/attributes.py) its fields. ``data_item_fields`` says which fields the file will
hold from the raw folder's side files alone, so that settings naming a field can be checked before
any data is prepared.
"""

from pathlib import Path

import pandas as pd

from atomic_data.items import item_fields, read_item_text
from atomic_data.movielens import SIDE_FILES as EMBEDDED_SIDE_FILES
from atomic_data.raw import SIDE_FILES
from recbole_ext import ConfigError
from recbole_ext.data.dataset import token_ids


def data_item_fields(raw_dir):
    """(the fields of the .item file prepared from raw_dir, a name of the data for messages); raw_dir None is
    the embedded MovieLens-100K."""
    if raw_dir is None:
        return item_fields(EMBEDDED_SIDE_FILES), "the embedded MovieLens-100K"
    present = [name for name in SIDE_FILES if (Path(raw_dir).expanduser() / name).is_file()]
    return item_fields(present), str(raw_dir)


def read_item_file(dataset):
    """The dataset's .item file as text: a frame indexed by internal item id (items the dataset does not know
    are left out), one column per field, named without its type; a token_seq value is space-separated."""
    path = Path(dataset.config["data_path"]) / f"{dataset.config['dataset']}.item"
    if not path.is_file():
        raise ConfigError(f"{path}: no .item file (the raw folder has no side files)")
    table = read_item_text(path)
    items = token_ids(dataset, dataset.iid_field, table.index.to_numpy())
    return table.set_index(pd.Index(items, name="item"))[items > 0]
