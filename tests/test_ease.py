"""movierec's EASE: the closed form against a float64 reference, side information, checkpoints, registration."""

import numpy as np
import pandas as pd
import pytest
import recbole.utils
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.ease import EASE as RecBoleEASE
from recbole.utils import ModelType

from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import load_dataset
from recbole_ext.models import ease
from recbole_ext.patches import registry
from recbole_ext.quick_start.pipeline import predict_only, run
from recbole_ext.trainer.predict import peak_memory
from recbole_ext.trainer.recbole_config import recbole_config
from run import main as run_cli

# genre and directors are token_seq fields, year a token field
LOAD_SIDE = "load_col={inter: [user_id, item_id, timestamp], item: [item_id, genre, directors, year]}"
REG = 20.0  # small enough that G is far from the identity


def ease_model(prepared, tmp_path, *overrides):
    settings = load_settings("EASE", overrides=["state=WARNING", f"reg_weight={REG}", *overrides])
    config = recbole_config(settings, prepared.data_path, prepared.name, tmp_path / "checkpoints")
    dataset = load_dataset(config)
    return ease.EASE(config, dataset), dataset


def fitted(prepared, tmp_path, *overrides):
    model, dataset = ease_model(prepared, tmp_path, *overrides)
    model.fit()
    return model, dataset


def reference_B(rows, reg):
    """Steck's closed form in numpy float64, written out: P = G^-1, B = -P / diag(P), diag(B) = 0."""
    G = rows.T @ rows + reg * np.eye(rows.shape[1])
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B


def user_item_matrix(dataset):
    X = np.zeros((dataset.user_num, dataset.item_num))
    X[dataset.inter_feat[dataset.uid_field].numpy(), dataset.inter_feat[dataset.iid_field].numpy()] = 1
    return X


def pseudo_users(prepared, dataset, field):
    """One row per value of field, read from the atomic .item file: 1 on every item with that value."""
    items = pd.read_csv(
        prepared.data_path / prepared.name / f"{prepared.name}.item", sep="\t", dtype=str, keep_default_na=False
    )
    column = next(c for c in items.columns if c.split(":")[0] == field)
    values = items[column].str.split(" ")
    rows = {}
    for item, item_values in zip(items["item_id:token"], values):
        for value in filter(None, item_values):
            rows.setdefault(value, np.zeros(dataset.item_num))[dataset.token2id(dataset.iid_field, item)] = 1
    return np.array(list(rows.values()))


# largest |B| entry here is about 0.22; the float32 error is about 3e-7, the float64 one about 6e-16
@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-6), ("float64", 1e-13)])
def test_B_equals_the_float64_reference_with_a_zero_diagonal(tiny_prepared, tmp_path, dtype, tolerance):
    model, dataset = fitted(tiny_prepared, tmp_path, f"dtype={dtype}")
    expected = reference_B(user_item_matrix(dataset), REG)
    assert model.B.dtype == getattr(torch, dtype)
    assert np.abs(model.B.numpy() - expected).max() < tolerance
    assert (model.B.diagonal() == 0).all()


def test_the_closed_form_holds_no_second_matrix(tiny_prepared, tmp_path):
    model, _ = ease_model(tiny_prepared, tmp_path)
    out = torch.empty_like(model.B)
    _, peak = peak_memory(lambda: ease.closed_form(model.interactions, REG, out))
    assert peak < out.numel() * out.element_size() / 10  # torch's factorization of G itself copies it whole


def test_construction_leaves_the_closed_form_to_the_trainer(tiny_prepared, tmp_path):
    model, _ = ease_model(tiny_prepared, tmp_path)
    assert not model.B.any()


def test_side_weights_zero_reproduce_plain_ease_exactly(tiny_prepared, tmp_path):
    plain, _ = fitted(tiny_prepared, tmp_path)
    zero, _ = fitted(tiny_prepared, tmp_path, LOAD_SIDE, "side_weights={genre: 0, directors: 0.0, year: 0}")
    assert torch.equal(plain.B, zero.B)


def test_side_information_equals_ease_on_pseudo_users_stacked_under_X(tiny_prepared, tmp_path):
    weights = {"genre": 3.0, "directors": 0.5, "year": 2.0}
    side = "side_weights={" + ", ".join(f"{f}: {w}" for f, w in weights.items()) + "}"
    model, dataset = fitted(tiny_prepared, tmp_path, LOAD_SIDE, side, "dtype=float64")
    stacked = np.vstack(
        [user_item_matrix(dataset)] + [w * pseudo_users(tiny_prepared, dataset, f) for f, w in weights.items()]
    )
    assert np.abs(model.B.numpy() - reference_B(stacked, REG)).max() < 1e-12
    assert np.abs(model.B.numpy() - reference_B(user_item_matrix(dataset), REG)).max() > 1e-3  # it did change B


def test_a_side_field_that_is_not_loaded_stops_the_run_before_anything_is_written(tiny_raw, tmp_path, capsys):
    output = tmp_path / "run"
    args = [
        "--model=EASE",
        "--data",
        str(tiny_raw),
        "--output",
        str(output),
        f"data_dir={tmp_path / 'data'}",
        LOAD_SIDE,
        "side_weights={genre: 1.0, writer: 2.0}",
    ]
    assert run_cli(args) == 2
    assert (
        "command line: side_weights: item field 'writer' is not loaded; add it to load_col" in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []  # no data prepared, no output or .failed folder
    with pytest.raises(ConfigError, match=r"command line: dtype: expected one of float32, float64, got 'float16'"):
        load_settings("EASE", overrides=["dtype=float16"])
    with pytest.raises(ConfigError, match=r"side_weights: the weight of 'genre' must be a number >= 0, got -1"):
        load_settings("EASE", overrides=[LOAD_SIDE, "side_weights={genre: -1}"])


def test_the_gpu_and_cpu_gram_products_agree(tiny_prepared, tmp_path, monkeypatch):
    model, _ = ease_model(tiny_prepared, tmp_path)
    rows = sp.vstack([model.interactions] * 3, format="csr")
    expected = (rows.T @ rows).toarray()
    cpu, gpu_way = (torch.full(expected.shape, np.nan) for _ in range(2))  # every entry must be written
    ease.sparse_gram(rows, cpu.numpy())
    monkeypatch.setattr(ease, "GPU_GRAM_BLOCK", 100)  # several blocks
    ease.dense_gram(rows, gpu_way)
    assert np.array_equal(cpu.numpy(), expected) and np.array_equal(gpu_way.numpy(), expected)  # exact counts


def test_scores_are_X_times_B_for_all_items_and_for_pairs(tiny_prepared, tmp_path):
    model, dataset = fitted(tiny_prepared, tmp_path)
    users = torch.tensor([1, 5, 17])
    scores = model.full_sort_predict(Interaction({dataset.uid_field: users})).view(len(users), -1)
    expected = user_item_matrix(dataset)[users.numpy()] @ model.B.numpy().astype(np.float64)
    assert np.abs(scores.numpy() - expected).max() < 1e-5
    items = torch.tensor([3, 40, 99])
    pairs = model.predict(Interaction({dataset.uid_field: users, dataset.iid_field: items}))
    assert torch.allclose(pairs, scores[torch.arange(3), items], atol=1e-6)


def test_the_checkpoint_holds_B_and_not_the_user_item_matrix(tiny_prepared, tmp_path):
    model, dataset = fitted(tiny_prepared, tmp_path)
    assert list(model.state_dict()) == ["B"] and model.state_dict()["B"].shape == (dataset.item_num,) * 2
    assert model.other_parameter() == {}
    fresh, _ = ease_model(tiny_prepared, tmp_path)
    fresh.load_state_dict(model.state_dict())
    users = Interaction({dataset.uid_field: torch.arange(1, 20)})
    assert torch.equal(fresh.full_sort_predict(users), model.full_sort_predict(users))


def test_pipeline_and_predict_only_give_the_same_submission(tiny_raw, tmp_path):
    common = [
        f"data={tiny_raw}",
        f"data_dir={tmp_path / 'data'}",
        "show_progress=false",
        "state=WARNING",
        "holdout.min_train=8",
        "holdout.random=3",
        LOAD_SIDE,
        "side_weights={genre: 2.0}",
    ]
    summary = run(load_settings("EASE", overrides=common + [f"output_dir={tmp_path / 'run'}"]))
    assert summary["holdout"]["recall@10"] > 0 and summary["epochs_run"] == 1 and summary["best_epoch"] == 0
    checkpoint = torch.load(tmp_path / "run" / "model.pth", weights_only=False)
    assert list(checkpoint["state_dict"]) == ["B"] and checkpoint["other_parameter"] == {}
    again = predict_only(tmp_path / "run" / "model.pth", tmp_path / "again", "cpu")
    assert pd.read_csv(again / "submission.csv").equals(pd.read_csv(tmp_path / "run" / "submission.csv"))
    first, second = (pd.read_csv(folder / "full_top50.csv") for folder in (tmp_path / "run", again))
    assert second[["user", "item"]].equals(first[["user", "item"]])
    assert np.allclose(second["score"], first["score"], rtol=1e-6)


def test_EASE_is_movierec_s_and_RecBole_s_stays_reachable(tiny_prepared, tmp_path):
    assert registry.get_model("EASE") is ease.EASE
    assert recbole.utils.get_model("EASE") is ease.EASE
    assert recbole.utils.get_trainer(ModelType.TRADITIONAL, "EASE") is ease.EASETrainer
    assert registry.get_model("RecBoleEASE") is RecBoleEASE
    ours, dataset = fitted(tiny_prepared, tmp_path)
    settings = load_settings("RecBoleEASE", overrides=["state=WARNING", f"reg_weight={REG}"])
    original = RecBoleEASE(recbole_config(settings, tiny_prepared.data_path, tiny_prepared.name, tmp_path), dataset)
    assert np.abs(original.item_similarity - ours.B.numpy()).max() < 2e-6
