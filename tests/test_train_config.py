"""Training config: defaults, YAML files, dot-list overrides and the messages for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.errors import ConfigError
from pneumo.training.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["tiny", "default", "seed-cnn", "densenet121", "resnet18"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.name and cfg.train.epochs >= 1


def test_overrides_parse_and_types_follow_yaml():
    cfg = load_config(CONFIGS / "tiny.yaml", ["model.name=compact_cnn", "train.epochs=20", "optim.lr=1e-4",
                                              "model.kwargs.width=24", "augment.gamma=null", "augment.hflip=true"])
    assert cfg.model.name == "compact_cnn" and cfg.train.epochs == 20
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.model.kwargs.width == 24
    assert cfg.augment.gamma is None and cfg.augment.hflip is True
    assert cfg.model.kwargs.depth == 3  # untouched keys of the file survive


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", r"train.epochs must be an integer >= 1"),
        ("train.epochs=ten", r"train.epochs"),
        ("optim.name=adagrad", r"optim.name must be one of adam, adamw, sgd, rmsprop"),
        ("schedule.name=step", r"schedule.name must be one of"),
        ("loss.class_weighting=inverse", r"loss.class_weighting must be one of balanced, none"),
        ("data.sampler=oversample", r"data.sampler"),
        ("loss.label_smoothing=0.9", r"loss.label_smoothing must be a number >= 0.0 and <= 0.5"),
        ("data.val_fraction=0", r"data.val_fraction must be a number > 0.0"),
        ("threshold.rule=f1", r"threshold.rule"),
        ("threshold.target_sensitivity=1.2", r"threshold.target_sensitivity"),
        ("model.freeze=half", r"model.freeze must be none, backbone or until:<layer>"),
        ("augment.gamma=[1.5,0.5]", r"augment.gamma"),
        ("train.nonsense=1", r"unknown config key 'train.nonsense'"),
        ("epochs=3", r"unknown config key 'epochs'"),
        ("train.epochs", r"expected key=value"),
        ("augment.hflip=maybe", r"augment.hflip must be true or false"),
        ("data.preprocess.normalise=minmax", r"data.preprocess.normalise"),
    ],
)
def test_bad_values_are_refused_with_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "tiny.yaml", [override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("optimiser: {name: adam}\n")
    with pytest.raises(ConfigError, match=f"unknown config key 'optimiser' in {unknown}"):
        load_config(unknown)


def test_resolved_config_is_read_only():
    cfg = load_config({"train": {"epochs": 3}})
    assert cfg.model.name == "compact_cnn"
    with pytest.raises(Exception):  # noqa: B017 - omegaconf's ReadonlyConfigError
        cfg.train.epochs = 4
