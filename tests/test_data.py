import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import SequentialDataset

from recbole_ext.config.settings import load_settings
from recbole_ext.data.cache import ReadRecorder
from recbole_ext.data.dataset import History, LazySequentialDataset, dataset_cache, load_dataset, token_ids
from recbole_ext.trainer.recbole_config import recbole_config


def sequential_config(prepared, tmp_path, **extra):
    settings = load_settings("RecBoleSASRec", overrides=["MAX_ITEM_LIST_LENGTH=7", "state=ERROR"])
    return recbole_config(settings, prepared.data_path, prepared.valid_name, tmp_path, **extra)


def cached_dataset(config):
    """The cache file load_dataset would read for config, or None."""
    return dataset_cache(config).find(config)


def test_lazy_sequential_batches_equal_recboles_augmentation(tiny_prepared, tmp_path):
    config = sequential_config(tiny_prepared, tmp_path)
    eager = SequentialDataset(config)
    eager._change_feat_format()  # RecBole's own data_augmentation
    lazy = LazySequentialDataset(config)
    lazy._change_feat_format()
    assert len(lazy) == len(eager)
    index = np.random.default_rng(0).permutation(len(eager))[:300]
    expected, got = eager[index], lazy[index]
    assert set(got.columns) == set(expected.columns)
    for field in expected.columns:
        assert torch.equal(got[field], expected[field]), field
    # some sequences were cut at MAX_ITEM_LIST_LENGTH, some are shorter
    assert (expected["item_length"] == 7).any() and (expected["item_length"] < 7).any()


def test_lazy_dataset_interaction_matrix_equals_recboles(tiny_prepared, tmp_path):
    config = sequential_config(tiny_prepared, tmp_path)
    eager, lazy = SequentialDataset(config), LazySequentialDataset(config)
    eager._change_feat_format()
    lazy._change_feat_format()
    assert (eager.inter_matrix(form="csr") != lazy.inter_matrix(form="csr")).nnz == 0


def test_second_load_comes_from_the_cache(tiny_prepared, tmp_path):
    config = sequential_config(tiny_prepared, tmp_path, MAX_ITEM_LIST_LENGTH=6)  # a length no other test builds
    cache = tiny_prepared.data_path / "cache"
    before = set(cache.glob("*.pth")) if cache.exists() else set()
    first = load_dataset(config)
    written = set(cache.glob("*.pth")) - before
    assert len(written) == 1 and cached_dataset(config) in written
    mtimes = {p: p.stat().st_mtime_ns for p in cache.glob("*.pth")}
    second = load_dataset(config)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.pth")} == mtimes
    assert second is not first and second.config is config
    assert torch.equal(second.inter_feat["item_id"], first.inter_feat["item_id"])
    # another sequence length is another dataset
    other = sequential_config(tiny_prepared, tmp_path, MAX_ITEM_LIST_LENGTH=5)
    assert cached_dataset(other) is None
    load_dataset(other)
    assert len(set(cache.glob("*.pth"))) == len(mtimes) + 1


# settings RecBole's dataset reads (checked: each is in what building the dataset read), with other values
DATASET_CHANGES = {
    "numerical_features": ["year"],
    "discretization": {"year": {"method": "bucket", "bucket": 5}},
    "encoding": {"item": "latin-1"},
    "normalize_field": ["year"],
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "genre"]},
    "MAX_ITEM_LIST_LENGTH": 9,
    "alias_of_item_id": ["item_id"],
    "threshold": {"timestamp": 1},
}


def test_the_dataset_cache_key_follows_every_setting_the_dataset_reads(tiny_prepared, tmp_path):
    config = ReadRecorder(sequential_config(tiny_prepared, tmp_path))
    load_dataset(config)
    found = cached_dataset(config)
    assert found is not None and set(DATASET_CHANGES) <= config.reads
    for key, value in DATASET_CHANGES.items():
        assert cached_dataset(sequential_config(tiny_prepared, tmp_path, **{key: value})) is None, key
    # settings it does not read share the dataset: trials of a search over them need one
    for key, value in {"learning_rate": 0.5, "epochs": 3, "train_batch_size": 7, "seed": 1, "device": "cpu"}.items():
        assert cached_dataset(sequential_config(tiny_prepared, tmp_path, **{key: value})) == found, key


def test_history_in_internal_ids_and_time_order(tiny_prepared, tmp_path):
    config = sequential_config(tiny_prepared, tmp_path)
    dataset = load_dataset(config)
    inter = pd.read_csv(tiny_prepared.data_path / "tiny-val" / "tiny-val.inter", sep="\t")
    inter.columns = ["user", "item", "time"]
    history = History(dataset, inter.user.to_numpy(), inter.item.to_numpy(), inter.time.to_numpy())
    user = inter.user.iloc[0]
    own = inter[inter.user == user].sort_values("time", kind="stable")
    uid = torch.tensor(token_ids(dataset, "user_id", np.array([user])))
    row, items = history.seen(uid)
    expected = token_ids(dataset, "item_id", own.item.to_numpy())
    assert items.tolist() == expected.tolist() and (row == 0).all()
    last_items, last_times, length = history.last(uid, 4)
    assert length.tolist() == [4]
    assert last_items[0].tolist() == expected[-4:].tolist()
    assert last_times[0].tolist() == own.time.to_numpy()[-4:].astype(float).tolist()
    # a user with fewer items than the window is left-aligned and zero-padded
    short_items, _, short_length = history.last(uid, len(own) + 3)
    assert short_length.item() == len(own) and short_items[0, len(own) :].eq(0).all()


def test_token_ids_of_unknown_tokens_are_zero(tiny_prepared, tmp_path):
    dataset = load_dataset(sequential_config(tiny_prepared, tmp_path))
    tokens = dataset.field2id_token["item_id"][1:4].astype(np.int64)
    ids = token_ids(dataset, "item_id", np.concatenate([tokens, [-5]]))
    assert ids.tolist() == [1, 2, 3, 0]


def test_lazy_dataset_gives_list_columns_row_by_row_as_recbole_materialises_them(tiny_prepared, tmp_path):
    # FEARec reads dataset.inter_feat["item_id_list"][row] for other sequences with the same target
    config = sequential_config(tiny_prepared, tmp_path)
    eager, lazy = SequentialDataset(config), LazySequentialDataset(config)
    eager._change_feat_format()
    lazy._change_feat_format()
    rows = np.random.default_rng(1).permutation(len(eager))[:50]
    for field in ("item_id_list", "timestamp_list"):
        assert torch.equal(lazy.inter_feat[field][rows], eager.inter_feat[field][rows]), field
        assert torch.equal(lazy.inter_feat[field][rows[0]], eager.inter_feat[field][rows[0]])  # one numpy row
    assert torch.equal(lazy.inter_feat["item_length"][rows], eager.inter_feat["item_length"][rows])


def test_fearec_trains_on_the_lazy_dataset(tiny_prepared, tmp_path):
    from recbole_ext.data.dataset import dataset_class, train_loader
    from recbole_ext.patches import registry

    settings = load_settings(
        "FEARec",
        overrides=["MAX_ITEM_LIST_LENGTH=7", "hidden_size=16", "inner_size=32", "train_batch_size=64", "state=ERROR"],
    )
    config = recbole_config(settings, tiny_prepared.data_path, tiny_prepared.valid_name, tmp_path)
    assert dataset_class(config) is LazySequentialDataset
    dataset = load_dataset(config)
    model = registry.get_model("FEARec")(config, dataset)
    history = History.from_file(dataset, tiny_prepared.inter_path(tiny_prepared.valid_name))
    batch = next(iter(train_loader(config, dataset, history)))
    loss = model.calculate_loss(batch)  # gathers the same-target sequences from the dataset
    loss.backward()
    assert torch.isfinite(loss)
