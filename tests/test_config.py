import pytest

from recbole_ext import ConfigError
from recbole_ext.config.keys import YAML_DIR, check_model, check_values, read_yaml, setting_defaults
from recbole_ext.config.settings import load_settings
from recbole_ext.patches import registry


def write(path, text):
    path.write_text(text)
    return str(path)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown model 'SASRek'; did you mean 'SASRec'\?"):
        load_settings("SASRek")


def test_misspelt_key_names_its_file_and_the_closest_key(tmp_path):
    config = write(tmp_path / "my.yaml", "model: BPR\nlearnig_rate: 0.01\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config_file=config)
    assert str(error.value) == f"{config}: unknown setting 'learnig_rate' for BPR; did you mean 'learning_rate'?"


def test_misspelt_key_on_the_command_line():
    with pytest.raises(
        ConfigError, match=r"command line: unknown setting 'embeding_size' for BPR; did you mean 'embedding_size'"
    ):
        load_settings("BPR", overrides=["embeding_size=32"])


def test_a_setting_of_another_model_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'n_heads' for BPR"):
        load_settings("BPR", overrides=["n_heads=2"])


def test_layers_apply_in_order(tmp_path):
    # base.yaml: epochs 100 < yaml/sasrec.yaml < --config < sasrec.yaml's quick: block < key=value
    model_yaml = read_yaml(YAML_DIR / "sasrec.yaml")
    assert model_yaml["epochs"] != 100 and load_settings("SASRec")["epochs"] == model_yaml["epochs"]
    config = write(tmp_path / "c.yaml", "model: SASRec\nepochs: 7\nMAX_ITEM_LIST_LENGTH: 48\n")
    assert load_settings(config_file=config)["epochs"] == 7
    quick = load_settings(config_file=config, quick=True)
    assert quick["epochs"] == model_yaml["quick"]["epochs"] != 7  # quick: sits above --config
    assert quick["MAX_ITEM_LIST_LENGTH"] == model_yaml["quick"]["MAX_ITEM_LIST_LENGTH"] != 48
    assert load_settings(config_file=config, quick=True, overrides=["epochs=3"])["epochs"] == 3


def test_a_quick_block_may_shrink_the_search(tmp_path):
    config = write(
        tmp_path / "c.yaml",
        "model: BPR\ntune:\n  num_samples: 16\n  metric: recall@10\nquick:\n  epochs: 2\n  tune: {num_samples: 2}\n",
    )
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


# ---------------------------------------------------------------- values checked against RecBole's defaults


@pytest.mark.parametrize(
    "model, override, expected",
    [
        ("MultiVAE", "epochs=-3", "command line: epochs must be an integer >= 1, got -3"),
        ("BPR", "epochs=abc", "command line: epochs must be an integer >= 1, got 'abc'"),
        ("BPR", "epochs=2.5", "command line: epochs must be an integer >= 1, got 2.5"),
        ("BPR", "learning_rate=abc", "command line: learning_rate must be a number > 0, got 'abc'"),
        ("BPR", "learning_rate=0", "command line: learning_rate must be a number > 0, got 0"),
        ("EASE", "reg_weight=abc", "command line: reg_weight must be a number >= 0, got 'abc'"),
        ("RecBoleEASE", "reg_weight=-1", "command line: reg_weight must be a number >= 0, got -1"),
        ("EASE", "reg_weight=.inf", "command line: reg_weight must be a number >= 0, got inf"),
        ("EASE", "reg_weight=0", "command line: reg_weight must be a number > 0 (the Gram's inverse needs it), got 0"),
        (
            "UserEASE",
            "user_reg_weight=0",
            "command line: user_reg_weight must be a number > 0 (the Gram's inverse needs it), got 0",
        ),
        ("UserEASE", "user_reg_weight=.inf", "command line: user_reg_weight must be a number >= 0, got inf"),
        ("BPR", "learning_rate=.inf", "command line: learning_rate must be a number > 0, got inf"),
        ("BPR", "learning_rate=-.inf", "command line: learning_rate must be a number > 0, got -inf"),
        ("SASRec", "n_layers=0", "command line: n_layers must be an integer >= 1, got 0"),
        ("SASRec", "hidden_dropout_prob=1.5", "command line: hidden_dropout_prob must be a number in [0, 1], got 1.5"),
        (
            "MultiVAE",
            "mlp_hidden_size=[600, x]",
            "command line: mlp_hidden_size must be a list of integers >= 1, got [600, 'x']",
        ),
        ("MultiVAE", "mlp_hidden_size=600", "command line: mlp_hidden_size must be a list of integers >= 1, got 600"),
        ("BPR", "train_batch_size=~", "command line: train_batch_size must be an integer >= 1, got None"),
        ("BPR", "shuffle=maybe", "command line: shuffle must be true or false, got 'maybe'"),
        ("BPR", "seed=1.5", "command line: seed must be an integer, got 1.5"),
        ("BPR", "refit_epochs=true", "command line: refit_epochs must be best or an integer >= 1, got True"),
        ("BPR", "predict_batch_users=true", "command line: predict_batch_users must be an integer >= 1, got True"),
        ("BPR", "top_n=true", "command line: top_n must be an integer >= 10, got True"),
        (
            "S3Rec",
            "downstream_model=GRU4Rec",
            "command line: downstream_model must be one of SASRec, BERT4Rec, got 'GRU4Rec'",
        ),
    ],
)
def test_a_value_of_the_wrong_kind_names_the_key_the_value_and_the_expected_kind(model, override, expected):
    with pytest.raises(ConfigError) as error:
        load_settings(model, overrides=[override])
    assert str(error.value) == expected


def test_a_bad_value_in_a_yaml_file_names_the_file(tmp_path):
    config = write(tmp_path / "my.yaml", "model: SASRec\ntrain_batch_size: 0\n")
    with pytest.raises(ConfigError, match=f"^{config}: train_batch_size must be an integer >= 1, got 0$"):
        load_settings(config_file=config)


def test_every_models_own_defaults_pass_the_checks():
    # the rules come from RecBole's defaults: they must accept every model's own
    checked = 0
    for model in registry.model_names():
        try:
            check_model(model)
        except (ConfigError, ImportError):  # refused, or its optional package is not installed
            continue
        check_values(model, setting_defaults(model), lambda key: "defaults")
        checked += 1
    assert checked > 50


def test_numbers_of_the_right_kind_pass():
    settings = load_settings(
        "MultiVAE",
        overrides=["epochs=3", "learning_rate=1e-3", "dropout_prob=0", "mlp_hidden_size=[64, 32]", "anneal_cap=1"],
    )
    assert settings["mlp_hidden_size"] == [64, 32] and settings["anneal_cap"] == 1
    assert (
        load_settings("EASE", overrides=["reg_weight=100"])["reg_weight"] == 100
    )  # an int where a float is the default


def test_model_names_are_case_insensitive(tmp_path):
    assert load_settings("sasrec").model == "SASRec"
    config = write(tmp_path / "e.yaml", "model: ease\n")
    assert load_settings("EASE", config_file=config).model == "EASE"


def test_a_name_with_a_yaml_of_its_own_runs_by_name():
    by_name = load_settings("gSASRec", overrides=["epochs=2"])
    by_config = load_settings(config_file=YAML_DIR / "gsasrec.yaml", overrides=["epochs=2"])
    assert by_name.model == "SASRec" and by_name.values["loss_type"] == "gBCE"
    assert by_name.values == by_config.values
    assert (
        load_settings("gsasrec", quick=True).values["MAX_ITEM_LIST_LENGTH"]
        == by_config.values["quick"]["MAX_ITEM_LIST_LENGTH"]
    )


@pytest.mark.parametrize(
    "key, reason",
    [
        ("nproc=2", "a run is one process on one device"),
        ("world_size=2", "a run is one process on one device"),
        ("local_rank=1", "a run is one process on one device"),
        ("user_inter_num_interval=[5,inf)", "filters would drop users or items"),
        ("item_inter_num_interval=[5,inf)", "filters would drop users or items"),
        ("rm_dup_inter=first", "preparing the data drops duplicate interactions already"),
        ("val_interval={timestamp: '[0, 1e9]'}", "filters would drop users or items"),
    ],
)
def test_distributed_settings_and_recboles_filters_are_refused_with_the_reason(key, reason):
    with pytest.raises(ConfigError, match=f"^command line: '{key.split('=')[0]}' is managed by movierec: .*{reason}"):
        load_settings("BPR", overrides=[key])


def test_a_file_where_a_folder_is_expected_is_named(tmp_path):
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(
        ConfigError, match=f"^command line: data_dir '.*': {tmp_path / 'notes'} is a file, expected a folder$"
    ):
        load_settings("BPR", overrides=[f"data_dir={tmp_path / 'notes' / 'data'}"])
    with pytest.raises(
        ConfigError, match=f"^command line: output_dir '.*': {tmp_path / 'notes'} is a file, expected a"
    ):
        load_settings("BPR", overrides=[f"output_dir={tmp_path / 'notes'}"])
