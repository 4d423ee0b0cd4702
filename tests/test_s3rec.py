"""Multi-attribute S3Rec: the pretraining batch, the pretraining, the transfer to SASRec / BERT4Rec."""

import json

import pandas as pd
import pytest
import torch
from recbole.utils import init_seed

from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, SequenceWindows, load_dataset
from recbole_ext.patches import registry
from recbole_ext.quick_start.pipeline import prepare_data, run
from recbole_ext.trainer.pretrain import downstream_settings, find_pretrained, load_pretrained, pretrain
from recbole_ext.trainer.recbole_config import recbole_config

TINY_ENCODER = ["MAX_ITEM_LIST_LENGTH=12", "hidden_size=16", "inner_size=32", "n_layers=1", "n_heads=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("s3rec_data")


def s3rec_settings(tiny_raw, data_dir, *extra):
    common = [
        f"data={tiny_raw}",
        f"data_dir={data_dir}",
        "state=WARNING",
        "show_progress=false",
        "holdout.min_train=8",
        "holdout.random=3",
        "item_attribute={genre: 1.0, year: 0.5}",
        "pretrain_epochs=1",
        "epochs=2",
        "train_batch_size=256",
    ]
    return load_settings("S3Rec", overrides=common + TINY_ENCODER + list(extra))


def built_model(settings, tmp_path, dataset_name=None, **changes):
    prepared = prepare_data(settings)
    name = dataset_name or prepared.valid_name
    config = recbole_config(
        settings,
        prepared.data_path,
        name,
        tmp_path,
        load_col={**settings["load_col"], "item": ["item_id", "genre", "year"]},
        **changes,
    )
    init_seed(config["seed"], True)
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.data_path / name / f"{name}.inter")
    return registry.get_model(settings.model)(config, dataset), dataset, history, config, prepared


def test_pretraining_batch_invariants(tiny_raw, data_dir, tmp_path):
    model, dataset, history, config, _ = built_model(
        s3rec_settings(tiny_raw, data_dir), tmp_path, train_batch_size=10_000
    )
    batch = next(iter(SequenceWindows(history, config, "masked")))
    seq, length = batch["item_id_list"], batch["item_length"]
    valid = torch.arange(seq.shape[1]).unsqueeze(0) < length.unsqueeze(1)
    mask = model.mask_token
    masked_count = valid_count = 0
    for draw in range(20):
        torch.manual_seed(draw)
        b = model.pretraining_batch(seq, length)
        for name in ("masked_items", "negative_items", "segment_masked", "segment_positive", "segment_negative"):
            assert (b[name][~valid] == 0).all(), f"{name} touched the padding"
        masked = b["masked"]
        assert not (masked & ~valid).any()
        assert torch.equal(b["masked_items"], torch.where(masked, mask, seq))
        negatives = b["negative_items"]
        assert torch.equal(negatives[~masked], seq[~masked])
        for row in range(len(seq)):  # a negative is an item, and not one of the sequence
            own = set(seq[row, : length[row]].tolist())
            picked = negatives[row][masked[row]].tolist()
            assert all(0 < item < mask and item not in own for item in picked)
        masked_count += int(masked.sum())
        valid_count += int(valid.sum())
        check_segments(b, seq, length, valid, mask)
    assert masked_count / valid_count == pytest.approx(config["pretrain_mask_ratio"], abs=0.02)


def check_segments(b, seq, length, valid, mask):
    all_items = seq[valid].tolist()
    for row in range(len(seq)):
        n = int(length[row])
        in_segment = b["segment_masked"][row, :n] == mask
        if n < 2:
            assert not b["has_segment"][row] and not in_segment.any()
            continue
        where = torch.nonzero(in_segment).squeeze(1).tolist()
        start, size = where[0], len(where)
        assert where == list(range(start, start + size)) and 1 <= size <= n // 2
        assert torch.equal(b["segment_masked"][row, :n][~in_segment], seq[row, :n][~in_segment])
        assert torch.equal(b["segment_positive"][row, :n], torch.where(in_segment, seq[row, :n], mask))
        negative = b["segment_negative"][row, start : start + size].tolist()
        assert (b["segment_negative"][row, :n][~in_segment] == mask).all()
        assert any(all_items[i : i + size] == negative for i in range(len(all_items) - size + 1))


def test_item_attribute_as_a_list_is_each_field_with_weight_one(tiny_raw, data_dir, tmp_path):
    settings = s3rec_settings(tiny_raw, data_dir, "item_attribute=[genre, year]")  # how a RecBole user writes it
    model, *_ = built_model(settings, tmp_path)
    assert model.attribute_weights == {"genre": 1.0, "year": 1.0} and set(model.attributes) == {"genre", "year"}


def test_attribute_targets_are_the_items_attributes(tiny_raw, data_dir, tmp_path):
    model, dataset, *_, prepared = built_model(s3rec_settings(tiny_raw, data_dir), tmp_path)
    items = pd.read_csv(
        prepared.data_path / prepared.valid_name / f"{prepared.valid_name}.item",
        sep="\t",
        dtype=str,
        keep_default_na=False,
    ).set_index("item_id:token")
    for field, column in (("genre", "genre:token_seq"), ("year", "year:token")):
        table = model.attributes[field].item_values
        for token in items.index[:40]:
            row = dataset.token2id("item_id", token)
            values = torch.nonzero(table[row]).squeeze(1) + 1  # column j is value id j + 1
            names = sorted(dataset.id2token(field, values.numpy()).tolist())
            assert names == sorted(items.loc[token, column].split()), (field, token)
    assert not model.attributes["genre"].item_values[0].any()  # the padding item has none


def test_pretraining_loss_falls_on_learnable_attributes(tiny_raw, data_dir, tmp_path):
    settings = s3rec_settings(tiny_raw, data_dir, "hidden_dropout_prob=0.0", "attn_dropout_prob=0.0")
    model, dataset, history, config, _ = built_model(settings, tmp_path, train_batch_size=64)
    loader = SequenceWindows(history, config, "masked")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(0)
    per_epoch = []
    for _ in range(6):
        total = torch.zeros(4)
        for batch in loader:
            losses = model.calculate_loss(batch)
            optimizer.zero_grad()
            sum(losses).backward()
            optimizer.step()
            total += torch.tensor([loss.item() for loss in losses])
        per_epoch.append(total / len(loader))
    first, last = per_epoch[0], per_epoch[-1]
    assert last.sum() < 0.8 * first.sum(), per_epoch
    assert last[0] < first[0] and last[2] < first[2], "the attribute losses (AAP, MAP) fall"


def test_downstream_tensors_equal_the_checkpoint(tiny_raw, data_dir, tmp_path):
    settings = s3rec_settings(tiny_raw, data_dir)
    prepared = prepare_data(settings)
    pretrained = pretrain(settings, prepared, tmp_path)
    checkpoint = torch.load(pretrained.path, weights_only=True)
    for downstream in ("SASRec", "BERT4Rec"):
        down = downstream_settings(settings.with_values(downstream_model=downstream), pretrained.path)
        # the full data: another id space than the validation data the checkpoint was trained on
        model, dataset, *_ = built_model(down, tmp_path, prepared.name)
        assert type(model) is registry.get_model(downstream) and type(model).__module__.startswith("recbole_ext.")
        report = load_pretrained(model, dataset, pretrained.path)
        state = model.state_dict()
        for name, tensor in checkpoint["state_dict"].items():
            if name != "item_embedding.weight":
                assert torch.equal(state[name], tensor), name
        source_row = {int(t): r for r, t in enumerate(checkpoint["item_tokens"].tolist()) if r > 0}
        tokens = dataset.field2id_token["item_id"]
        shared = [(r, source_row[int(t)]) for r, t in enumerate(tokens) if r > 0 and int(t) in source_row]
        assert len(shared) > 0.9 * (len(tokens) - 1)
        for row, source in shared:
            assert torch.equal(
                state["item_embedding.weight"][row], checkpoint["state_dict"]["item_embedding.weight"][source]
            )
        has_mask_row = downstream == "BERT4Rec"
        assert (
            torch.equal(state["item_embedding.weight"][-1], checkpoint["state_dict"]["item_embedding.weight"][-1])
            == has_mask_row
        )
        assert report["loaded"] and any(name.startswith("item_embedding.weight") for name in report["loaded"])
        if downstream == "BERT4Rec":
            assert "output_bias" in report["not_loaded"]


def test_a_shape_mismatch_is_reported_not_loaded(tiny_raw, data_dir, tmp_path):
    settings = s3rec_settings(tiny_raw, data_dir)
    pretrained = pretrain(settings, prepare_data(settings), tmp_path)
    longer = downstream_settings(settings, pretrained.path).with_values(MAX_ITEM_LIST_LENGTH=15)
    model, dataset, *_ = built_model(longer, tmp_path)
    report = load_pretrained(model, dataset, pretrained.path)
    assert report["not_loaded"]["position_embedding.weight"] == "shape (12, 16) in the checkpoint, (15, 16) here"


def test_run_pretrains_once_then_finetunes_sasrec(tiny_raw, data_dir, tmp_path):
    first = run(s3rec_settings(tiny_raw, data_dir, f"output_dir={tmp_path / 'a'}", "holdout.seed=5", "epochs=1"))
    assert first["pretraining"]["cached"] is False and first["pretraining"]["downstream_model"] == "SASRec"
    assert first["model"] == "S3Rec"
    assert "trm_encoder.layer.0.multi_head_attention.query.weight" in first["pretrained_tensors"]["loaded"]
    written = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert written["pretrained_tensors"] == first["pretrained_tensors"]
    submission = pd.read_csv(tmp_path / "a" / "submission.csv")
    assert submission.groupby("user").size().eq(10).all()
    # finetuning settings change, pretraining settings do not: the checkpoint is reused
    checkpoint = first["pretraining"]["checkpoint"]
    stamp = (tmp_path / checkpoint).stat().st_mtime_ns
    second = run(s3rec_settings(tiny_raw, data_dir, f"output_dir={tmp_path / 'b'}", "holdout.seed=5", "epochs=2"))
    assert second["pretraining"]["cached"] is True and second["pretraining"]["checkpoint"] == checkpoint
    assert (tmp_path / checkpoint).stat().st_mtime_ns == stamp
    # a pretraining setting changes: pretrained again
    changed = s3rec_settings(tiny_raw, data_dir, "holdout.seed=5", "pretrain_mask_ratio=0.3")
    again = pretrain(changed, prepare_data(changed), tmp_path)
    assert again.cached is False and str(again.path) != checkpoint


def test_the_pretraining_cache_key_follows_every_setting_pretraining_reads(tiny_raw, data_dir, tmp_path):
    settings = s3rec_settings(tiny_raw, data_dir)  # the checkpoint of the tests above, when they ran
    prepared = prepare_data(settings)
    checkpoint = pretrain(settings, prepared, tmp_path).path
    assert find_pretrained(settings, prepared) == checkpoint
    for change in [
        "weight_decay=0.001",
        "learner=sgd",
        "clip_grad_norm={max_norm: 5.0, norm_type: 2}",
        "load_col.inter=[user_id, item_id, timestamp, rating]",
        "pretrain_epochs=2",
        "pretrain_learning_rate=0.01",
        "pretrain_batch_size=64",
        "pretrain_mask_ratio=0.3",
        "item_attribute={genre: 1.0}",
        "hidden_dropout_prob=0.3",
        "MAX_ITEM_LIST_LENGTH=10",
        "seed=7",
    ]:
        assert find_pretrained(s3rec_settings(tiny_raw, data_dir, change), prepared) is None, change
    # finetuning settings: pretraining reads other values in their place, or none
    for change in [
        "learning_rate=0.01",
        "epochs=7",
        "train_batch_size=64",
        "downstream_model=BERT4Rec",
        "device=cpu",
        "show_progress=true",
    ]:
        assert find_pretrained(s3rec_settings(tiny_raw, data_dir, change), prepared) == checkpoint, change
