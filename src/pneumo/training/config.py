"""Training configuration: defaults, YAML + dot-list overrides, and up-front validation.

Every key a run may use is declared in :data:`DEFAULTS`; a config file or a ``key=value`` override
naming anything else is refused with a :class:`ConfigError`, as is a value outside what is allowed,
before any data is read. The resolved config is saved in the run directory and in the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pneumo.bundle import atomic_write_bytes
from pneumo.decision import RULES
from pneumo.errors import ConfigError

DEFAULTS: dict = {
    "name": None,
    "seed": 0,
    "model": {"name": "compact_cnn", "kwargs": {}, "weights": None, "freeze": "none"},
    "data": {
        "preprocess": {"size": 224, "resize": "stretch", "normalise": "zscore", "mean": 0.5, "std": 0.25,
                       "equalise": False},
        "val_fraction": 0.15,
        "sampler": "none",
        "sampler_power": 1.0,
        "sampler_cap": 8.0,
        "cache_dir": None,  # None: the per-user cache (pneumo.paths.cache_dir), not ./.cache
        "cache_file": True,
        "decode_workers": 2,
        "limit": None,
    },
    "augment": {
        "enabled": True,
        "rotate_deg": 10.0,
        "translate": 0.08,
        "scale": 0.1,
        "shear": 0.05,
        "hflip": False,
        "intensity_scale": 0.1,
        "intensity_shift": 0.05,
        "gamma": [0.8, 1.25],
        "noise_std": 0.0,
        "aspect": 0.0,
        "blur_sigma": 0.0,
        "sharpen": 0.0,
        "downscale": 0.0,
        "degrade_prob": 0.5,
        "match_blur_prob": 0.0,
        "match_blur_sigma": 1.5,
        "mixup_alpha": 0.0,
    },
    "loss": {"class_weighting": "balanced", "label_smoothing": 0.0, "consistency": 0.0},
    "optim": {
        "name": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "alpha": 0.99,
        "eps": 1e-8,
        "backbone_lr_mult": 1.0,
    },
    "schedule": {"name": "cosine", "min_lr": 1e-6, "factor": 0.5, "patience": 2, "pct_start": 0.2},
    "train": {
        "epochs": 20,
        "batch_size": 32,
        "eval_batch_size": 128,
        "early_stopping_patience": 5,
        "grad_clip": 1.0,
        "max_minutes": None,
        "threads": None,
        "swa": False,
        "swa_lr": None,
        "swa_epoch_start": 0.75,
        "ema_decay": 0.0,
        "deterministic": True,
        "precision": "32",
        "channels_last": False,
        "log_indices": False,
    },
    "threshold": {"rule": "youden", "target_sensitivity": 0.97},
}

CHOICES = {
    "data.sampler": ("none", "balanced", "acquisition"),
    "data.preprocess.resize": ("stretch", "letterbox", "center_crop"),
    "data.preprocess.normalise": ("unit", "zscore"),
    "loss.class_weighting": ("balanced", "none"),
    "optim.name": ("adam", "adamw", "sgd", "rmsprop"),
    "schedule.name": ("plateau", "cosine", "onecycle", "none"),
    "threshold.rule": RULES,
    "train.precision": ("32", "bf16-mixed"),
}
# key → (low, high, integer?, open interval at low?)
RANGES = {
    "seed": (0, 2**32 - 1, True, False),
    "data.preprocess.size": (16, 2048, True, False),
    "data.preprocess.std": (0.0, None, False, True),
    "data.val_fraction": (0.0, 0.9, False, True),
    "data.decode_workers": (0, 64, True, False),
    "data.limit": (2, None, True, False),
    "data.sampler_power": (0.0, 4.0, False, False),
    "data.sampler_cap": (1.0, 1000.0, False, False),
    "augment.rotate_deg": (0.0, 180.0, False, False),
    "augment.translate": (0.0, 0.5, False, False),
    "augment.scale": (0.0, 0.9, False, False),
    "augment.shear": (0.0, 1.0, False, False),
    "augment.intensity_scale": (0.0, 0.9, False, False),
    "augment.intensity_shift": (0.0, 1.0, False, False),
    "augment.noise_std": (0.0, 1.0, False, False),
    "augment.mixup_alpha": (0.0, 10.0, False, False),
    "augment.aspect": (0.0, 1.0, False, False),
    "augment.blur_sigma": (0.0, 5.0, False, False),
    "augment.sharpen": (0.0, 5.0, False, False),
    "augment.downscale": (0.0, 1.0, False, False),
    "augment.degrade_prob": (0.0, 1.0, False, False),
    "augment.match_blur_prob": (0.0, 1.0, False, False),
    "augment.match_blur_sigma": (0.0, 5.0, False, False),
    "loss.label_smoothing": (0.0, 0.5, False, False),
    "loss.consistency": (0.0, 100.0, False, False),
    "optim.lr": (0.0, 10.0, False, True),
    "optim.weight_decay": (0.0, 1.0, False, False),
    "optim.momentum": (0.0, 1.0, False, False),
    "optim.alpha": (0.0, 1.0, False, True),
    "optim.eps": (0.0, 1.0, False, True),
    "optim.backbone_lr_mult": (0.0, 10.0, False, False),
    "schedule.min_lr": (0.0, 10.0, False, False),
    "schedule.factor": (0.0, 1.0, False, True),
    "schedule.patience": (0, 1000, True, False),
    "schedule.pct_start": (0.0, 1.0, False, True),
    "train.epochs": (1, 10_000, True, False),
    "train.batch_size": (1, 65_536, True, False),
    "train.eval_batch_size": (1, 65_536, True, False),
    "train.early_stopping_patience": (0, 10_000, True, False),
    "train.grad_clip": (0.0, None, False, False),
    "train.max_minutes": (0.0, None, False, True),
    "train.threads": (1, 256, True, False),
    "train.swa_lr": (0.0, 10.0, False, True),
    "train.swa_epoch_start": (0.0, None, False, True),
    "train.ema_decay": (0.0, 1.0, False, False),
    "threshold.target_sensitivity": (0.0, 1.0, False, True),
}
BOOLS = ("data.cache_file", "data.preprocess.equalise", "augment.enabled", "augment.hflip", "train.swa",
         "train.deterministic", "train.log_indices", "train.channels_last")


def load_config(
    source: str | Path | dict | DictConfig | None = None, overrides: Sequence[str] = ()
) -> DictConfig:
    """Defaults ← YAML file or mapping ← ``key=value`` overrides; validated, read-only result."""
    cfg: DictConfig = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.model.kwargs, False)  # free-form: passed to build_model
    try:
        if source is not None:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, _read_source(source)))
        if overrides:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, OmegaConf.from_dotlist(_check_overrides(overrides))))
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, source)) from exc
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _read_source(source) -> DictConfig:
    if isinstance(source, DictConfig):
        return source
    if isinstance(source, dict):
        return OmegaConf.create(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (expected a YAML file, e.g. configs/default.yaml)")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def _check_overrides(overrides: Sequence[str]) -> list[str]:
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=5")
    return list(overrides)


def _explain(exc: OmegaConfBaseException, source) -> str:
    key = getattr(exc, "full_key", None)
    where = f" in {source}" if isinstance(source, str | Path) else ""
    msg = str(exc).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"unknown config key {key!r}{where}; known sections: {', '.join(k for k in DEFAULTS)}"
    return f"config key {key!r}{where}: {msg}"


def _get(cfg: DictConfig, dotted: str):
    return OmegaConf.select(cfg, dotted)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is not allowed."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {_get(cfg, key)!r}")
    for key, (lo, hi, integer, open_lo) in RANGES.items():
        _check_range(key, _get(cfg, key), lo, hi, integer, open_lo)
    for key in BOOLS:
        if not isinstance(_get(cfg, key), bool):
            raise ConfigError(f"{key} must be true or false, got {_get(cfg, key)!r}")
    if not isinstance(cfg.model.name, str) or not cfg.model.name:
        raise ConfigError(f"model.name must be a registered model name, got {cfg.model.name!r}")
    if not isinstance(cfg.model.kwargs, DictConfig):
        raise ConfigError(f"model.kwargs must be a mapping, got {cfg.model.kwargs!r}")
    freeze = cfg.model.freeze
    if not isinstance(freeze, str) or not (freeze in ("none", "backbone") or freeze.startswith("until:")):
        raise ConfigError(f"model.freeze must be none, backbone or until:<layer>, got {freeze!r}")
    if cfg.train.swa and cfg.train.ema_decay:
        raise ConfigError("train.swa and train.ema_decay are exclusive: average weights one way or the other")
    if cfg.train.ema_decay >= 1.0:
        raise ConfigError(f"train.ema_decay must be a number in [0, 1) (0 = off), got {cfg.train.ema_decay!r}")
    gamma = cfg.augment.gamma
    if gamma is not None and (
        len(gamma) != 2 or not all(isinstance(g, int | float) for g in gamma) or not 0 < gamma[0] <= gamma[1]
    ):
        raise ConfigError(f"augment.gamma must be null or [low, high] with 0 < low <= high, got {gamma!r}")


def _check_range(key: str, value, lo, hi, integer: bool, open_lo: bool) -> None:
    if value is None and key in ("data.limit", "train.max_minutes", "train.threads", "train.swa_lr"):
        return
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key} must be {kind}, got {value!r}")
    too_low = value <= lo if open_lo else value < lo
    if too_low or (hi is not None and value > hi):
        low = f"> {lo}" if open_lo else f">= {lo}"
        span = f"{low} and <= {hi}" if hi is not None else low
        raise ConfigError(f"{key} must be {kind} {span}, got {value!r}")


def to_container(cfg: DictConfig | ListConfig) -> dict:
    """A mapping config as a plain dict (a recipe or config file whose top level is a list is refused)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(out, dict):
        raise ConfigError(f"expected a mapping, got a {type(out).__name__}")
    return out


def save_config(cfg: DictConfig, path: Path) -> None:
    atomic_write_bytes(path, OmegaConf.to_yaml(cfg).encode())
