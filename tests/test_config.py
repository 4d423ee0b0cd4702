import pytest

from recbole_ext.config import YAML_DIR, ConfigError, load_settings, read_yaml


def write(path, text):
    path.write_text(text)
    return str(path)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown model 'SASrec'; did you mean 'SASRec'\?"):
        load_settings("SASrec")


def test_misspelt_key_names_its_file_and_the_closest_key(tmp_path):
    config = write(tmp_path / "my.yaml", "model: BPR\nlearnig_rate: 0.01\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config_file=config)
    assert str(error.value) == f"{config}: unknown setting 'learnig_rate' for BPR; did you mean 'learning_rate'?"


def test_misspelt_key_on_the_command_line():
    with pytest.raises(ConfigError, match=r"command line: unknown setting 'embeding_size' for BPR; did you mean 'embedding_size'"):
        load_settings("BPR", overrides=["embeding_size=32"])


def test_a_setting_of_another_model_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'n_heads' for BPR"):
        load_settings("BPR", overrides=["n_heads=2"])


def test_layers_apply_in_order(tmp_path):
    # base.yaml: epochs 100 < yaml/sasrec.yaml < --config < sasrec.yaml's quick: block < key=value
    model_yaml = read_yaml(YAML_DIR / "sasrec.yaml")
    assert model_yaml["epochs"] != 100 and load_settings("SASRec")["epochs"] == model_yaml["epochs"]
    config = write(tmp_path / "c.yaml", "model: SASRec\nepochs: 7\nhidden_size: 48\n")
    assert load_settings(config_file=config)["epochs"] == 7
    quick = load_settings(config_file=config, quick=True)
    assert quick["epochs"] == model_yaml["quick"]["epochs"] != 7  # quick: sits above --config
    assert quick["hidden_size"] == model_yaml["quick"]["hidden_size"] != 48
    assert load_settings(config_file=config, quick=True, overrides=["epochs=3"])["epochs"] == 3


def test_a_quick_block_may_shrink_the_search(tmp_path):
    config = write(tmp_path / "c.yaml", "model: BPR\ntune:\n  num_samples: 16\n  metric: recall@10\n"
                                        "quick:\n  epochs: 2\n  tune: {num_samples: 2}\n")
    assert load_settings(config_file=config)["tune"] == {"num_samples": 16, "metric": "recall@10"}
    quick = load_settings(config_file=config, quick=True)
    assert quick["tune"] == {"num_samples": 2, "metric": "recall@10"} and quick["epochs"] == 2


def test_nested_override_changes_one_holdout_key():
    settings = load_settings("BPR", overrides=["holdout.seed=3"])
    assert settings["holdout"]["seed"] == 3
    assert settings["holdout"]["last"] == load_settings("BPR")["holdout"]["last"]


def test_a_dotted_override_sets_one_entry_at_any_depth():
    settings = load_settings("EASE", overrides=["tune.resources_per_trial.cpu=1", "load_col.item=[item_id, genre]"])
    assert settings["tune"]["resources_per_trial"] == {"cpu": 1, "gpu": 0.25}  # gpu from yaml/ease.yaml kept
    assert settings["load_col"] == {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "genre"]}
    # a value given whole replaces what it names: a search entry is one distribution, not two
    replaced = load_settings("EASE", overrides=["tune.search_space.reg_weight={choice: [1, 2]}"])
    assert replaced["tune"]["search_space"] == {"reg_weight": {"choice": [1, 2]}}


def test_bad_holdout_key_and_value_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"command line: holdout: unknown keys \['lats'\]"):
        load_settings("BPR", overrides=["holdout.lats=3"])
    with pytest.raises(ConfigError, match=r"holdout.max_fraction must be in \(0, 1\], got 2"):
        load_settings("BPR", overrides=["holdout.max_fraction=2"])


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="command line: device must be auto, cpu or cuda, got 'gpu'"):
        load_settings("BPR", overrides=["device=gpu"])
    with pytest.raises(ConfigError, match="valid_metric must be recall@10 or ndcg@10"):
        load_settings("BPR", overrides=["valid_metric=mrr@10"])


def test_settings_movierec_manages_are_refused():
    with pytest.raises(ConfigError, match="'data_path' is managed by movierec"):
        load_settings("BPR", overrides=["data_path=/tmp"])


def test_models_that_cannot_run_say_why():
    with pytest.raises(ConfigError, match="KGAT.*knowledge graph"):
        load_settings("KGAT")


def test_conflicting_models_are_refused(tmp_path):
    config = write(tmp_path / "e.yaml", "model: EASE\n")
    with pytest.raises(ConfigError, match="conflicting models"):
        load_settings("SASRec", config_file=config)


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data folder .*nowhere.* does not exist"):
        load_settings("BPR", overrides=[f"data={tmp_path / 'nowhere'}"])


def test_float_notation_is_a_float():
    assert load_settings("BPR", overrides=["learning_rate=1e-4"])["learning_rate"] == 1e-4
