"""Each compat shim, exercised through the RecBole code path it repairs.

Removing a shim from recbole_ext/patches/compat.py makes its test fail.
"""

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import write_raw
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import get_model, get_trainer

from atomic_data import HoldoutRule, prepare


def recbole_config(prepared, tmp_path, model="BPR", **extra):
    settings = {
        "data_path": str(prepared.data_path),
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": False,
        "epochs": 1,
        "state": "ERROR",
        **extra,
    }
    return Config(model=model, dataset=prepared.valid_name, config_dict=settings)


def test_numpy2_aliases_let_config_and_metrics_work(tiny_prepared, tmp_path):
    # RecBole's Config reads np.float_ (gone in numpy 2); its metrics use np.float
    config = recbole_config(tiny_prepared, tmp_path)
    assert config["model"] == "BPR"
    from recbole.evaluator.metrics import MRR

    pos_index = np.array([[False, True, False], [True, False, False]])
    result = MRR(config).metric_info(pos_index)
    assert np.allclose(result[:, -1], [0.5, 1.0])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the refused global load
def test_checkpoints_written_by_the_trainer_load_back(tiny_prepared, tmp_path):
    config = recbole_config(tiny_prepared, tmp_path)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model("BPR")(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, model)
    trainer.fit(train, valid, saved=True, verbose=False)
    result = trainer.evaluate(test, load_best_model=True)  # torch.load of our own checkpoint
    assert set(result) >= {"recall@10", "ndcg@10"}
    # the trust is scoped to RecBole's checkpoint loading, not flipped globally
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trainer.saved_model_file)


def test_load_data_and_model_reads_a_saved_checkpoint(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole's init_logger writes ./log
    config = recbole_config(tiny_prepared, tmp_path)
    dataset = create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, get_model("BPR")(config, train._dataset))
    trainer.fit(train, valid, saved=True, verbose=False)
    from recbole.quick_start import load_data_and_model

    safe_load = torch.load
    _, model, *_ = load_data_and_model(trainer.saved_model_file)
    assert torch.equal(model.user_embedding.weight, trainer.model.user_embedding.weight)
    assert torch.load is safe_load  # trusted for that call only


def test_lightgcn_adjacency_builds_on_current_scipy(tiny_prepared, tmp_path):
    config = recbole_config(tiny_prepared, tmp_path, model="LightGCN")
    dataset = create_dataset(config)
    model = get_model("LightGCN")(config, dataset)  # builds its graph with dok_matrix._update
    # reference: D^-1/2 A D^-1/2 of the bipartite graph, built with coo
    x = dataset.inter_matrix(form="csr").astype(np.float32)
    x.data[:] = 1.0
    adjacency = sp.bmat([[None, x], [x.T, None]]).tocsr()
    degree = np.asarray((adjacency > 0).sum(axis=1)).ravel() + 1e-7
    d = sp.diags(degree**-0.5)
    expected = (d @ adjacency @ d).toarray()
    assert np.allclose(model.norm_adj_matrix.to_dense().numpy(), expected, atol=1e-6)


def test_config_ignores_foreign_command_line_flags(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--learning_rate=0.5", "--numprocesses=4"])
    config = recbole_config(tiny_prepared, tmp_path)
    assert config["learning_rate"] == 0.001
    assert "numprocesses" not in config


def test_trainer_writes_no_tensorboard_into_the_working_directory(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = recbole_config(tiny_prepared, tmp_path)
    dataset = create_dataset(config)
    get_trainer(config["MODEL_TYPE"], "BPR")(config, get_model("BPR")(config, dataset))
    assert not (tmp_path / "log_tensorboard").exists()


def test_interaction_sort_is_stable_without_numpy_deprecations():
    import warnings

    from recbole.data.interaction import Interaction

    inter = Interaction(
        {"u": torch.tensor([2, 1, 2, 1]), "t": torch.tensor([5.0, 7.0, 5.0, 3.0]), "i": torch.arange(4)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        inter.sort(by=["u", "t"])
    assert inter["i"].tolist() == [3, 1, 0, 2]  # ties (u=2, t=5) keep their order
    inter.sort(by="i", ascending=False)
    assert inter["i"].tolist() == [3, 2, 1, 0]


def test_importing_recbole_models_leaves_anomaly_detection_off():
    # SINE's module switches it on for the process when RecBole's models are imported
    import recbole.model.sequential_recommender.sine  # noqa: F401

    get_model("SASRec")
    assert not torch.is_anomaly_enabled()


@pytest.mark.parametrize("model_name", ["GRU4RecCPR", "SASRecCPR"])
def test_cpr_models_score_a_sequence_without_a_target_item(tiny_prepared, tmp_path, model_name):
    from recbole.data.interaction import Interaction

    from recbole_ext.data.dataset import LazySequentialDataset

    config = recbole_config(
        tiny_prepared,
        tmp_path,
        model=model_name,
        MAX_ITEM_LIST_LENGTH=10,
        train_neg_sample_args=None,
        embedding_size=16,
        hidden_size=16,
        inner_size=32,
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
    )
    dataset = LazySequentialDataset(config)
    dataset._change_feat_format()
    model = get_model(model_name)(config, dataset).eval()
    batch = dataset[torch.arange(8)]  # sequences with their target items, as RecBole evaluates them
    request = Interaction({key: batch[key] for key in (model.ITEM_SEQ, model.ITEM_SEQ_LEN)})  # no target
    with torch.no_grad():
        scores = model.full_sort_predict(request)
        _, expected = model.calculate_loss_prob(batch)  # RecBole's own call, which needs the targets
    assert scores.shape == (8, dataset.item_num)
    assert torch.allclose(scores, expected)


def test_fearec_maps_each_target_item_to_its_rows(tiny_prepared, tmp_path):
    from recbole_ext.data.dataset import LazySequentialDataset

    config = recbole_config(
        tiny_prepared,
        tmp_path,
        model="FEARec",
        MAX_ITEM_LIST_LENGTH=10,
        hidden_size=16,
        inner_size=32,
        train_neg_sample_args=None,
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
    )
    dataset = LazySequentialDataset(config)
    dataset._change_feat_format()
    index = get_model("FEARec")(config, dataset).same_item_index
    # RecBole's definition, one np.where per row
    target_item = dataset.inter_feat["item_id"].numpy()
    expected = {item: np.where(target_item == item)[0] for item in target_item}
    assert index.keys() == expected.keys()
    for item, rows in expected.items():
        assert np.array_equal(index[item], rows)


def test_pop_ranks_items_by_their_training_counts(tmp_path):
    # item i is seen by 2 * i users, all in one batch: RecBole's Pop counted each item once per batch
    # (and its sampled negatives too), so its scores did not follow these counts
    ratings = [(user, item, 1000 * user + item) for item in range(1, 13) for user in range(2 * item)]
    ratings += [(user, 100 + user, 999_999) for user in range(24)]  # every user has a first item of their own
    no_holdout = HoldoutRule(last=0, random=0, max_fraction=1.0, min_train=1, seed=0)
    prepared = prepare(write_raw(tmp_path / "raw", ratings), tmp_path / "prepared", "pop", no_holdout)
    config = Config(
        model="Pop",
        dataset="pop",
        config_dict={
            "data_path": str(prepared.data_path),
            "checkpoint_dir": str(tmp_path / "saved"),
            "show_progress": False,
            "state": "ERROR",
            "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "RO", "mode": "full"},
        },
    )
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model("Pop")(config, train_data.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "Pop")(config, model)
    trainer._train_epoch(train_data, 0)

    scores = model.full_sort_predict(Interaction({"user_id": torch.tensor([1])})).view(-1)
    counts = pd.Series([item for _, item, _ in ratings]).value_counts()
    ids = dataset.field2id_token["item_id"]
    expected = [counts[int(ids[i])] for i in range(1, len(ids))]
    assert scores[1:].tolist() == pytest.approx([c / max(expected) for c in expected])


# pandas 3 always copies on write; pandas 2 does where asked, so these tests see the same RecBole under both
@pytest.fixture
def copy_on_write():
    if int(pd.__version__.split(".")[0]) >= 3:
        yield
    else:
        with pd.option_context("mode.copy_on_write", True):
            yield


def atomic_dataset(folder, inter, item=None, user=None, **settings):
    """A RecBole dataset of atomic files given as rows of text (tab-separated, header first), every column loaded."""
    folder.mkdir()
    for suffix, rows in {"inter": inter, "item": item, "user": user}.items():
        if rows:
            (folder / f"{folder.name}.{suffix}").write_text("\n".join(rows) + "\n")
    settings = {"data_path": str(folder.parent), "state": "ERROR", "show_progress": False, "load_col": None, **settings}
    return create_dataset(Config(model="BPR", dataset=folder.name, config_dict=settings))


INTER = ["user_id:token\titem_id:token"] + [f"u{u}\ti{i}" for u in range(1, 4) for i in range(1, 5)]


def test_token_seq_fields_are_remapped_row_by_row(tmp_path, copy_on_write):
    # Dataset._remap splits the new ids at np.cumsum(feat[field].agg(len)): pandas 3's agg(len) is the column's length
    item = ["item_id:token\tgenre:token_seq", "i1\tDrama Comedy", "i2\tComedy", "i3\tWar Drama Comedy", "i4\tWar"]
    dataset = atomic_dataset(tmp_path / "seq", INTER, item=item)
    items = dataset.item_feat  # RecBole's DataFrame until data_preparation
    genres = {
        dataset.id2token("item_id", i): dataset.id2token("genre", ids).tolist()
        for i, ids in zip(items["item_id"], items["genre"])
    }
    assert genres == {
        "[PAD]": [],
        "i1": ["Drama", "Comedy"],
        "i2": ["Comedy"],
        "i3": ["War", "Drama", "Comedy"],
        "i4": ["War"],
    }


def test_a_missing_sequence_loads_as_an_empty_one(tmp_path, copy_on_write):
    # Dataset._load_feat fills it with fillna(inplace=True) on a column copy: it stayed NaN, and split() failed on it
    item = ["item_id:token\tgenre:token_seq", "i1\tDrama", "i2\t", "i3\tWar", "i4\t"]
    dataset = atomic_dataset(tmp_path / "empty", INTER, item=item)
    lengths = {
        dataset.id2token("item_id", row): int((ids > 0).sum()) for row, ids in enumerate(dataset.item_feat["genre"])
    }
    assert lengths == {"[PAD]": 0, "i1": 1, "i2": 0, "i3": 1, "i4": 0}


def test_every_recbole_column_fill_fills_under_copy_on_write(tmp_path, copy_on_write):
    # Every fill RecBole makes: a missing token is [PAD] (0), a missing float the column's mean, a missing
    # sequence empty; in each file, and for the users and items that have no row of their own (i5, u4)
    inter = ["user_id:token\titem_id:token\trating:float\tsource:token"]
    inter += ["u1\ti1\t4\tweb", "u1\ti2\t\tapp", "u2\ti3\t2\t", "u2\ti5\t3\tweb", "u3\ti4\t5\tapp", "u4\ti1\t1\tweb"]
    item = ["item_id:token\tgenre:token_seq\tdirector:token\tyear:float\tvector:float_seq"]
    item += ["i1\tDrama\td1\t1990\t0.5 1.5", "i2\t\t\t\t", "i3\tWar Drama\td2\t2000\t1", "i4\tWar\td1\t\t"]
    user = ["user_id:token\tage:float\tgender:token", "u1\t20\tF", "u2\t\tM", "u3\t35\t"]
    load_col = {
        "inter": ["user_id", "item_id", "rating", "source"],
        "item": ["item_id", "genre", "director", "year", "vector"],
        "user": ["user_id", "age", "gender"],
    }
    # RecBole drops the interactions of users and items without a row unless told not to
    dataset = atomic_dataset(
        tmp_path / "fills", inter, item, user, load_col=load_col, filter_inter_by_user_or_item=False
    )

    def by_id(feat, field, *keys):
        rows = zip(*(feat[key].tolist() for key in keys), feat[field].tolist())
        return {tuple(dataset.id2token(key, int(k)) for key, k in zip(keys, row)): row[-1] for row in rows}

    def tokens(values, field):
        return {
            key: dataset.id2token(field, [int(t) for t in np.atleast_1d(v) if t]).tolist() for key, v in values.items()
        }

    ratings = by_id(dataset.inter_feat, "rating", "user_id", "item_id")
    assert ratings[("u1", "i2")] == pytest.approx((4 + 2 + 3 + 5 + 1) / 5)
    sources = tokens(by_id(dataset.inter_feat, "source", "user_id", "item_id"), "source")
    assert sources[("u2", "i3")] == [] and sources[("u1", "i1")] == ["web"]

    items = dataset.item_feat
    assert tokens(by_id(items, "genre", "item_id"), "genre") == {
        ("[PAD]",): [],
        ("i1",): ["Drama"],
        ("i2",): [],
        ("i3",): ["War", "Drama"],
        ("i4",): ["War"],
        ("i5",): [],
    }
    assert tokens(by_id(items, "director", "item_id"), "director") == {
        ("[PAD]",): [],
        ("i1",): ["d1"],
        ("i2",): [],
        ("i3",): ["d2"],
        ("i4",): ["d1"],
        ("i5",): [],
    }
    assert by_id(items, "year", "item_id") == {
        ("[PAD]",): 1995,
        ("i1",): 1990,
        ("i2",): 1995,
        ("i3",): 2000,
        ("i4",): 1995,
        ("i5",): 1995,
    }
    assert {key: list(v) for key, v in by_id(items, "vector", "item_id").items()} == {
        ("[PAD]",): [],
        ("i1",): [0.5, 1.5],
        ("i2",): [],
        ("i3",): [1],
        ("i4",): [],
        ("i5",): [],
    }

    users = dataset.user_feat
    assert by_id(users, "age", "user_id") == {("[PAD]",): 27.5, ("u1",): 20, ("u2",): 27.5, ("u3",): 35, ("u4",): 27.5}
    assert tokens(by_id(users, "gender", "user_id"), "gender") == {
        ("[PAD]",): [],
        ("u1",): ["F"],
        ("u2",): ["M"],
        ("u3",): [],
        ("u4",): [],
    }
