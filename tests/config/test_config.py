"""Config modules load, values match the released code, and bad configs are refused."""

import pytest

from config import ConfigError, available_experiments, load_config, load_raw
from config.schema import from_dict
from engine.build import head_size
from engine.cli import parse_set
from utils.schedule import lr_at

PAPER = ["cnn_rotation", "cnn_deform", "tcn_rotation", "tcn_deform"]
REQUIRED = PAPER + [
    "cnn_rotation_resnet", "tcn_rotation_dilated", "tcn_deform_dilated", "cnn_supervised", "tcn_supervised"
]


def test_every_required_experiment_exists_and_loads():
    assert set(REQUIRED) <= set(available_experiments())
    for name in available_experiments():
        cfg = load_config(name)
        assert cfg.name == name


@pytest.mark.parametrize("name", ["cnn_rotation", "cnn_deform"])
def test_cnn_values_that_ran_in_released_code(name):
    cfg = load_config(name)
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == ("sgd", 0.9, True, 5e-4)
    assert (cfg.train.batch_size, cfg.train.epochs) == (256, 10)
    lrs = [lr_at(cfg.optim.lr_schedule, e) for e in range(1, 11)]
    assert lrs == [0.01] * 5 + [1e-3] * 2 + [1e-4] * 2 + [1e-5]
    assert cfg.model.name == "alexnet" and cfg.data.image_size == 224


@pytest.mark.parametrize("name", ["tcn_rotation", "tcn_deform"])
def test_tcn_values_that_ran_in_released_code(name):
    cfg = load_config(name)
    assert cfg.optim.name == "adam"
    assert (cfg.train.batch_size, cfg.train.epochs) == (512, 10)
    assert [lr_at(cfg.optim.lr_schedule, e) for e in range(1, 11)] == [1e-3] * 5 + [1e-4] * 5
    assert cfg.model.name == "tcn" and cfg.data.max_points == 100


@pytest.mark.parametrize("name", sorted(available_experiments()))
def test_every_config_head_fits_its_task(name):
    # The released configs got two heads wrong (tcn_rotation had 2 outputs, cnn_deform 4):
    # every head written in a config must be the size its task asks for, and a wrong one
    # is refused by name.
    cfg = load_config(name)
    assert head_size(cfg) == cfg.model.num_classes or cfg.model.num_classes is None
    wrong = (cfg.model.num_classes or head_size(cfg)) + 1
    with pytest.raises(ConfigError, match=f"model.num_classes is {wrong} but the '{cfg.algorithm.name}' task"):
        head_size(load_config(name, {"model.num_classes": wrong}))


def test_unknown_key_is_refused_with_its_name():
    raw = load_raw("cnn_rotation")
    raw["train"]["epochz"] = 3
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        from_dict(raw)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="train.epochs: expected int, got str"):
        load_config("cnn_rotation", {"train.epochs": "ten"})
    with pytest.raises(ConfigError, match="expected int, got bool"):
        load_config("cnn_rotation", {"train.batch_size": True})
    # ints are fine where floats are expected
    assert load_config("cnn_rotation", {"data.line_width": 2}).data.line_width == 2.0


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown experiment 'cnn_rotaton'; known: .*cnn_rotation"):
        load_config("cnn_rotaton")


def test_store_source_needs_a_path():
    with pytest.raises(ConfigError, match="data.path is not set"):
        load_config("cnn_rotation", {"data.source": "store"})


def test_dual_configs_state_their_defaults():
    # issue 18: both forms at the paper's sizes, AlexNet-BN + TCN, one optimiser (the CNN's)
    for name in ("dual_crossmodal", "dual_crossmodal_rotation"):
        cfg = load_config(name)
        assert (cfg.branch, cfg.data.modality, cfg.data.image_size, cfg.data.max_points) == ("dual", "paired", 224, 100)
        assert cfg.model.name == "dual" and cfg.model.params == {"raster": "alexnet", "stroke": "tcn"}
        assert (cfg.optim.name, cfg.train.batch_size, cfg.train.epochs) == ("sgd", 256, 10)
        assert cfg.algorithm.params["temperature"] == 0.1 and cfg.eval.feature == "raster.fc_block"
    contrastive, pretext = load_config("dual_crossmodal"), load_config("dual_crossmodal_rotation")
    assert contrastive.algorithm.name == "crossmodal_contrastive" and contrastive.model.num_classes is None
    assert (contrastive.train.best_metric, contrastive.train.best_mode) == ("val_loss", "min")
    assert pretext.algorithm.name == "crossmodal_pretext" and pretext.model.num_classes == 4
    assert pretext.algorithm.params["task"] == "rotation" and pretext.algorithm.params["cross_weight"] == 1.0
    assert (pretext.train.best_metric, pretext.train.best_mode) == ("val_acc", "max")


def test_branch_and_modality_must_agree():
    with pytest.raises(ConfigError, match="CNN experiment but data.modality is 'stroke'"):
        load_config("cnn_rotation", {"data.modality": "stroke"})


def test_bad_schedule_and_choices():
    with pytest.raises(ConfigError, match="starting at 1"):
        load_config("cnn_rotation", {"optim.lr_schedule": [[2, 0.1]]})
    with pytest.raises(ConfigError, match="optim.name must be one of sgd, adam"):
        load_config("cnn_rotation", {"optim.name": "rmsprop"})
    with pytest.raises(ConfigError, match="train.device must be"):
        load_config("cnn_rotation", {"train.device": "tpu"})


def test_parse_set_reads_literals():
    assert parse_set(["a.b=3", "c=False", "d=[1, 2]", "e=cnn"]) == {"a.b": 3, "c": False, "d": [1, 2], "e": "cnn"}
    with pytest.raises(ConfigError):
        parse_set(["novalue"])


def test_lr_at_table():
    sched = [[1, 0.1], [3, 0.01]]
    assert [lr_at(sched, e) for e in (1, 2, 3, 7)] == [0.1, 0.1, 0.01, 0.01]
    with pytest.raises(ValueError):
        lr_at(sched, 0)


def test_train_threads_must_be_positive():
    with pytest.raises(ConfigError, match="train.threads must be positive"):
        load_config("cnn_rotation", {"train.threads": 0})
