"""Each compat shim, exercised through the RecBole code path it repairs.

Removing a shim from recbole_ext/compat.py makes its test fail.
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

    from recbole_ext.data import LazySequentialDataset

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
    from recbole_ext.data import LazySequentialDataset

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
