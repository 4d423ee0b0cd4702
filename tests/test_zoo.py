"""The model zoo: every model run.py accepts runs, or is refused before any work with the reason."""

import re
import sys
from pathlib import Path

import pytest

from bench.zoo import zoo_models
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.quick_start.pipeline import run

ROOT = Path(__file__).resolve().parent.parent

# models that were refused though they exist, or failed on their settings, with tiny settings
TINY_RUNS = {
    "Random": [],
    "GRU4RecF": ["MAX_ITEM_LIST_LENGTH=10", "embedding_size=16", "hidden_size=16"],  # item features from its yaml
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data_dir")


@pytest.mark.parametrize("model", list(TINY_RUNS))
def test_model_runs_end_to_end(model, tiny_raw, data_dir, tmp_path):
    overrides = [
        f"data={tiny_raw}",
        f"data_dir={data_dir}",
        f"output_dir={tmp_path / model}",
        "epochs=1",
        "refit=false",
        "show_progress=false",
        "state=WARNING",
        "holdout.min_train=8",
        "holdout.random=3",
        "train_batch_size=256",
        *TINY_RUNS[model],
    ]
    summary = run(load_settings(model, overrides=overrides))
    assert 0 <= summary["holdout"]["recall@10"] <= 1
    assert (tmp_path / model / "submission.csv").is_file()


def test_models_without_a_property_file_are_known():
    assert load_settings("Random").model == "Random"  # RecBole has no Random.yaml
    assert "Random" in zoo_models()


def test_a_missing_optional_package_is_refused_with_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as where faiss is not installed
    with pytest.raises(ConfigError) as error:
        load_settings("NCL")
    assert str(error.value) == "model 'NCL' needs the package 'faiss', which is not installed: pip install faiss-cpu"


def test_decision_tree_models_are_refused_by_name():
    # their module imports xgboost and lightgbm: refused without importing it
    with pytest.raises(ConfigError, match="^model 'xgboost' cannot run here: decision-tree models need"):
        load_settings("xgboost")
    assert "xgboost" not in zoo_models() and "lightgbm" not in zoo_models()


@pytest.mark.parametrize("model", ["FDSA", "GRU4RecF", "SASRecF"])
def test_feature_models_select_fields_the_data_has(model):
    assert load_settings(model)["selected_features"] == ["genre"]  # yaml/<model>.yaml, not RecBole's 'class'
    with pytest.raises(ConfigError, match=r"^command line: selected_features: item field 'class' is not in load_col"):
        load_settings(model, overrides=["selected_features=[class]"])
    with pytest.raises(
        ConfigError,
        match=rf"{model.lower()}.yaml: selected_features: item field 'genre' is not in load_col \(command line\)",
    ):
        load_settings(model, overrides=["load_col={inter: [user_id, item_id, timestamp]}"])


def test_recboles_s3rec_reads_an_attribute_the_data_has():
    assert load_settings("RecBoleS3Rec")["item_attribute"] == "genre"  # yaml/recboles3rec.yaml, not 'class'
    with pytest.raises(ConfigError, match=r"^command line: item_attribute: item field 'class' is not in load_col"):
        load_settings("RecBoleS3Rec", overrides=["item_attribute=class"])


@pytest.mark.parametrize("model", ["GRU4RecCPR", "SASRecCPR"])
def test_cpr_models_refuse_a_loss_they_would_exit_on(model):
    # RecBole's model prints a line and calls sys.exit(0) in __init__, after data preparation
    with pytest.raises(ConfigError, match=rf"^command line: loss_type: {model} supports only 'CE', got 'BPR'$"):
        load_settings(model, overrides=["loss_type=BPR"])
    assert load_settings(model)["model"] == model


@pytest.mark.parametrize("model", ["GRU4RecKG", "KSR", "KGAT"])
def test_models_on_a_knowledge_graph_are_refused_before_any_work(model):
    # GRU4RecKG and KSR are sequential models whose datasets read .kg / .ent files
    with pytest.raises(ConfigError, match=rf"^model '{model}' cannot run here: it needs a knowledge graph"):
        load_settings(model)


def test_the_docs_zoo_table_lists_every_model_of_the_zoo():
    page = (ROOT / "docs" / "results.md").read_text()
    table = page[page.index("<!-- zoo table -->") : page.index("<!-- end zoo table -->")]
    listed = {match.group(1): match.group(2) for match in re.finditer(r"^\| (\w+) \| ([\w-]+) \|", table, re.M)}
    listed.pop("model", None)  # the header
    assert listed == zoo_models()


def test_the_docs_example_of_an_own_recbole_script_trains_movierecs_ease(tiny_raw, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole's trainer saves its checkpoint in saved/ where it runs
    page = (ROOT / "docs" / "models.md").read_text()
    block = page[page.index("<!-- own script example -->") : page.index("<!-- end own script example -->")]
    code = block.split("```python\n")[1].split("```")[0]
    data = f'load_settings("EASE", overrides=["data={tiny_raw}", "data_dir={tmp_path}"])'
    assert 'load_settings("EASE")' in code
    exec(compile(code.replace('load_settings("EASE")', data), "docs/models.md", "exec"), {})
    module, scores = capsys.readouterr().out.splitlines()[-2:]
    assert module == "recbole_ext.models.ease"
    assert "'recall@10'" in scores and "'leaderboardrecall@10'" in scores
