"""Item attributes at the input of movierec's SASRec and BERT4Rec (item_attributes)."""

import re
import shutil

import pandas as pd
import pytest
import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec as RecBoleBERT4Rec
from recbole.utils import init_seed

from atomic_data import Prepared
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import load_dataset
from recbole_ext.patches import registry
from recbole_ext.trainer.recbole_config import recbole_config
from run import main as run_cli

SMALL = ["MAX_ITEM_LIST_LENGTH=8", "hidden_size=16", "inner_size=32", "n_layers=1", "state=ERROR"]


def model_on(prepared, tmp_path, name, *overrides, settings=None):
    """The model built on the full dataset of prepared, seeded, in evaluation mode."""
    settings = settings or load_settings(name, overrides=[*SMALL, *overrides])
    config = recbole_config(settings, prepared.data_path, prepared.name, tmp_path / "checkpoints")
    dataset = load_dataset(config)
    init_seed(config["seed"], True)
    return registry.get_model(name)(config, dataset).eval(), dataset


def copy_of(prepared, folder):
    """A copy of a prepared version whose files a test may change."""
    shutil.copytree(prepared.data_path, folder, ignore=shutil.ignore_patterns("cache"))
    return Prepared.load(folder)


def item_table(prepared):
    path = prepared.data_path / prepared.name / f"{prepared.name}.item"
    return path, pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def sequences(dataset, items):
    """Rows of internal ids (0-padded to 8) from lists of original ids."""
    rows = torch.zeros(len(items), 8, dtype=torch.long)
    for row, tokens in enumerate(items):
        rows[row, : len(tokens)] = torch.as_tensor(dataset.token2id("item_id", [str(t) for t in tokens]))
    return rows


def outputs(model, item_seq):
    """The encoder output at every position: SASRec's encode, BERT4Rec's forward."""
    with torch.no_grad():
        return model.encode(item_seq) if hasattr(model, "encode") else model.forward(item_seq)


@pytest.mark.parametrize("name", ["SASRec", "BERT4Rec"])
def test_changing_an_items_attribute_in_the_item_file_changes_the_output(tiny_prepared, tmp_path, name):
    prepared = copy_of(tiny_prepared, tmp_path / "prepared")
    path, table = item_table(prepared)
    first, second = (int(item) for item in table["item_id:token"][:2])

    def item_seq_of(dataset):
        return sequences(dataset, [[first, second], [second, first], [second]])

    model, dataset = model_on(prepared, tmp_path, name, "item_attributes=[genre, year]")
    before = outputs(model, item_seq_of(dataset))

    genres = sorted(set(" ".join(table["genre:token_seq"]).split()))
    table.loc[0, "genre:token_seq"] = next(g for g in genres if g not in table.loc[0, "genre:token_seq"].split())
    table.to_csv(path, sep="\t", index=False)
    changed, dataset = model_on(prepared, tmp_path, name, "item_attributes=[genre, year]")
    after = outputs(changed, item_seq_of(dataset))

    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])  # hold the item
    assert torch.equal(before[2], after[2])  # a sequence without it: unchanged
    if name == "SASRec":  # causal: the output before the item's position is unchanged
        assert torch.equal(before[1, 0], after[1, 0]) and not torch.allclose(before[1, 1], after[1, 1])


def test_attributes_read_nothing_but_the_prepared_item_file(tiny_raw, tiny_prepared, tmp_path):
    prepared = copy_of(tiny_prepared, tmp_path / "prepared")
    raw = shutil.copytree(tiny_raw, tmp_path / "raw")  # the settings are checked against its side files
    settings = load_settings("SASRec", overrides=[*SMALL, f"data={raw}", "item_attributes=[genre, director]"])
    shutil.rmtree(raw)  # then gone: the model reads the .item file, and load_col loads no item field
    model, dataset = model_on(prepared, tmp_path, "SASRec", settings=settings)
    assert dataset.item_feat is None
    _, table = item_table(prepared)
    attributes = model.attribute_embedding
    for field, column in (("genre", "genre:token_seq"), ("director", "director:token")):
        names = sorted({value for values in table[column] for value in values.split()})
        values = getattr(attributes, f"{field}_values")
        for token, text in zip(table["item_id:token"], table[column]):
            row = values[dataset.token2id("item_id", token)]
            assert sorted(names[v - 1] for v in row[row > 0].tolist()) == sorted(text.split()), (field, token)
        assert not values[0].any()  # [PAD]
    assert [name for name, _ in attributes.state_dict().items()] == ["values.genre.weight", "values.director.weight"]


def test_multi_valued_attributes_are_averaged_and_added_to_the_item_embedding(tiny_prepared, tmp_path):
    model, dataset = model_on(tiny_prepared, tmp_path, "BERT4Rec", "item_attributes=[genre, year]")
    _, table = item_table(tiny_prepared)
    row = next(row for _, row in table.iterrows() if len(row["genre:token_seq"].split()) > 1)  # several genres
    tables = model.attribute_embedding.values

    def value_row(field, column, value):  # values are numbered from 1 in sorted order, 0 is none
        names = sorted({name for values in table[column] for name in values.split()})
        return tables[field].weight[names.index(value) + 1]

    item = dataset.token2id("item_id", row["item_id:token"])
    genres = torch.stack([value_row("genre", "genre:token_seq", g) for g in row["genre:token_seq"].split()])
    expected = model.item_embedding.weight[item] + genres.mean(0) + value_row("year", "year:token", row["year:token"])
    with torch.no_grad():
        embedded = model.embed_items(torch.tensor([item, model.mask_token, 0]))
    assert torch.allclose(embedded[0], expected, atol=1e-6)
    assert torch.equal(embedded[1:], model.item_embedding.weight[[model.mask_token, 0]])  # nothing added to them


@pytest.mark.parametrize("name", ["SASRec", "BERT4Rec"])
def test_without_attributes_the_model_is_as_before(tiny_prepared, tmp_path, name):
    model, dataset = model_on(tiny_prepared, tmp_path, name)
    assert model.attribute_embedding is None and not any("attribute" in key for key in model.state_dict())
    if name == "BERT4Rec":  # its forward is RecBole's, input and all
        item_seq = sequences(dataset, [[int(t) for t in dataset.field2id_token["item_id"][1:6]]])
        with torch.no_grad():
            assert torch.equal(model.forward(item_seq), RecBoleBERT4Rec.forward(model, item_seq))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "item_attributes=[genres]",
            "item_attributes: 'genres' is not an item field of the embedded MovieLens-100K; did you mean 'genre'?; "
            "its fields: title, year, genre",
        ),
        (
            "item_attributes=[director]",
            "item_attributes: 'director' is not an item field of the embedded MovieLens-100K; its fields: title, year, genre",
        ),
        ("item_attributes=genre", "item_attributes must be a list of item fields, e.g. [genre, year], got 'genre'"),
        ("item_attributes=[genre, genre]", "item_attributes names a field twice: ['genre', 'genre']"),
    ],
)
@pytest.mark.parametrize("name", ["SASRec", "BERT4Rec"])
def test_bad_item_attributes_are_refused_with_the_fields_that_exist(name, override, message):
    with pytest.raises(ConfigError, match=f"^command line: {re.escape(message)}$"):
        load_settings(name, overrides=[override])


def test_an_unknown_attribute_stops_the_run_before_anything_is_written(tiny_raw, tmp_path, capsys):
    args = ["--model=SASRec", "--data", str(tiny_raw), f"data_dir={tmp_path / 'data'}", f"--output={tmp_path / 'out'}"]
    assert run_cli([*args, "item_attributes=[genre, studio]"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: command line: item_attributes: 'studio' is not an item field of {tiny_raw}; its fields: "
        "title, year, genre, director, directors, writer, writers"
    )
    assert list(tmp_path.iterdir()) == []
