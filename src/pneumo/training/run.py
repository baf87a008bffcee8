"""``train(config, data, out, resume)``: one call from a YAML config to a model bundle.

The same function runs alone or under ``torchrun --nproc_per_node N`` (Lightning DDP on gloo for CPU):
every rank trains on its shard of each epoch, only rank 0 writes the run directory and the bundle.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from pneumo import paths
from pneumo.bundle import read_meta, sha256_file
from pneumo.data import PreprocessSpec, Sample, load_dataset, resolve_data
from pneumo.errors import ConfigError
from pneumo.models import build_model
from pneumo.models.freeze import apply_freeze
from pneumo.models.weights import load_weights
from pneumo.training import rundir as rd
from pneumo.training.cache import load_or_decode
from pneumo.training.callbacks import AtomicCheckpointIO, MetricsCSV, plot_curves
from pneumo.training.config import load_config, save_config, to_container
from pneumo.training.datamodule import XrayDataModule, make_splits
from pneumo.training.finalize import build_bundle, load_checkpoint_weights
from pneumo.training.module import PneumoModule


def _prepare_run(config, data, out, resume, overrides) -> tuple[DictConfig, Path, Path, Path | None]:
    """Resolve config, run dir, data source and the checkpoint to resume from (if any)."""
    if resume is not None:
        run_dir = Path(resume)
        ckpt = run_dir / rd.CHECKPOINTS / rd.LAST
        if not (run_dir / rd.CONFIG).is_file() or not ckpt.is_file():
            raise ConfigError(f"{run_dir}: nothing to resume (expected {rd.CONFIG} and {rd.CHECKPOINTS}/{rd.LAST})")
        cfg = load_config(run_dir / rd.CONFIG, overrides)
        source = data or rd.read_run_json(run_dir).get("data")
        return cfg, run_dir, resolve_data(source), ckpt
    if config is None:
        raise ConfigError("no config given: pass --config CONFIG.yaml (see configs/)")
    cfg = load_config(config, overrides)
    stem = cfg.name or (Path(config).stem if isinstance(config, str | Path) else "run")
    run_dir = Path(out) if out else Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / rd.CHECKPOINTS).exists() or (run_dir / rd.BUNDLE).exists():
        raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or choose another --out")
    return cfg, run_dir, resolve_data(data), None


def _load_tensors(splits, spec: PreprocessSpec, cfg: DictConfig, progress: bool, also: Sequence[Sample] = ()):
    """Decode (or load from cache) every image once; returns uint8 tensors per split and sha256 per path.

    ``also``: further images to decode into the same cache file (the dataset's other non-test rows),
    so that runs over different train/val splits of one dataset (CV folds) share one cache.
    """
    universe = sorted({str(s.path) for s in [*splits.train, *splits.val, *splits.official_val, *also]})
    cache_dir = Path(cfg.data.cache_dir or paths.cache_dir()) if cfg.data.cache_file else None
    pixels, shas = load_or_decode([Sample(Path(p), 0) for p in universe], spec, cache_dir,
                                  cfg.data.decode_workers, progress)
    where = {p: i for i, p in enumerate(universe)}

    def take(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor([where[str(s.path)] for s in samples], dtype=torch.long)
        return pixels[idx].clone(), torch.tensor([s.label for s in samples])

    sha_of = {p: shas[i] for p, i in where.items()}
    return take(splits.train), take(splits.val), take(splits.official_val), sha_of


def _build_model(cfg: DictConfig):
    model = build_model(cfg.model.name, **to_container(cfg.model.kwargs))
    if cfg.model.weights:
        load_weights(model, Path(cfg.model.weights), arch_name=cfg.model.name)
    if cfg.model.freeze != "none":
        apply_freeze(model, cfg.model.freeze)
    return model


def _distributed() -> dict:
    """Trainer device arguments: DDP when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return {"devices": 1, "strategy": "auto"}
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return {"devices": local, "num_nodes": world // local, "strategy": "ddp"}


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback], n_batches: int) -> L.Trainer:
    ckpt_cb = ModelCheckpoint(dirpath=run_dir / rd.CHECKPOINTS, filename="best-{epoch:03d}", monitor="val/auroc",
                              mode="max", save_top_k=1, save_last=True,
                              save_on_train_epoch_end=True)  # a completed epoch: --resume starts the next
    cbs: list[L.Callback] = [
        ckpt_cb,
        MetricsCSV(run_dir / rd.METRICS),
        LearningRateMonitor(logging_interval="epoch"),
        TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else max(1, n_batches // 10)),
    ]
    if cfg.train.early_stopping_patience > 0:
        cbs.append(EarlyStopping(monitor="val/auroc", mode="max", patience=cfg.train.early_stopping_patience))
    if cfg.train.swa:
        from lightning.pytorch.callbacks import StochasticWeightAveraging

        cbs.append(StochasticWeightAveraging(swa_lrs=cfg.train.swa_lr or cfg.optim.lr,
                                             swa_epoch_start=cfg.train.swa_epoch_start))
    if cfg.train.ema_decay:
        from lightning.pytorch.callbacks import WeightAveraging
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        # validation, checkpoints (hence the best epoch) and the bundle all see the EMA weights
        cbs.append(WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay)))
    max_time = timedelta(minutes=cfg.train.max_minutes) if cfg.train.max_minutes else None
    return L.Trainer(
        accelerator="cpu", max_epochs=cfg.train.epochs, max_time=max_time, callbacks=[*cbs, *callbacks],
        logger=TensorBoardLogger(str(run_dir), name="tb", version=""), default_root_dir=str(run_dir),
        gradient_clip_val=cfg.train.grad_clip or None, deterministic=cfg.train.deterministic,
        precision=cfg.train.precision, plugins=[AtomicCheckpointIO()], num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, n_batches)), enable_model_summary=False,
        **_distributed(),
    )


def train(
    config: str | Path | dict | DictConfig | None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    callbacks: Sequence[L.Callback] = (),
    progress: bool = True,
) -> Path:
    """Train per ``config`` on ``data`` into ``out`` (or continue ``resume``); returns the bundle path.

    ``overrides`` are ``key=value`` strings applied on top of the config (or of the saved config when
    resuming). Under DDP every rank returns the same path; only rank 0 writes it.
    """
    t0 = time.perf_counter()
    cfg, run_dir, data_path, ckpt = _prepare_run(config, data, out, resume, overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _set_threads(cfg)
    index = load_dataset(data_path)
    splits = make_splits(index, cfg.data.val_fraction, cfg.seed, cfg.data.limit)
    spec = PreprocessSpec.from_dict(to_container(cfg.data.preprocess))
    rank0 = rd.global_rank() == 0
    also = [] if cfg.data.limit else [s for s in index.samples if s.split != "test"]
    (tx, ty), (vx, vy), (ox, oy), sha_of = _load_tensors(splits, spec, cfg, progress and rank0, also)
    train_s = [replace(s, sha256=sha_of[str(s.path)]) for s in splits.train]
    val_s = [replace(s, sha256=sha_of[str(s.path)]) for s in splits.val]
    if rank0:
        save_config(cfg, run_dir / rd.CONFIG)
        rd.start_session(run_dir, data_path, resumed=ckpt is not None)
        rd.write_split_manifest(run_dir, train_s, val_s)
    n_pos = int(ty.sum())
    pos_weight = (len(ty) - n_pos) / max(n_pos, 1) if cfg.loss.class_weighting == "balanced" else 1.0
    module = PneumoModule(_build_model(cfg), to_container(cfg), pos_weight,
                          index_log_dir=str(run_dir) if cfg.train.log_indices else None)
    dm = XrayDataModule(tx, ty, vx, vy, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.data.sampler, cfg.seed,
                        cfg.data.sampler_power, cfg.data.sampler_cap)
    trainer = _trainer(cfg, run_dir, callbacks, max(1, len(ty) // cfg.train.batch_size))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
        if not trainer.interrupted:
            raise
        print(f"\nstopped: continue with  pneumo train --resume {run_dir}", file=sys.stderr)
        raise KeyboardInterrupt from None
    if trainer.is_global_zero:
        _finish(trainer, module, cfg, run_dir, t0, splits.how, data_path, (vx, vy), (ox, oy))
    return run_dir / rd.BUNDLE


def _set_threads(cfg: DictConfig) -> None:
    """Honour ``train.threads``; under torchrun share the cores between the local ranks."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif local > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def _finish(trainer, module, cfg, run_dir: Path, t0: float, split_method: str, data_path: Path, val, official):
    """Rank 0 after fitting: best weights, curves, run record, then the bundle."""
    best = trainer.checkpoint_callback.best_model_path
    best_epoch = None if cfg.train.swa or not best else load_checkpoint_weights(module.model, Path(best))
    record = rd.end_session(run_dir, time.perf_counter() - t0, epochs=trainer.current_epoch, best_epoch=best_epoch)
    plot_curves(run_dir / rd.METRICS, run_dir / rd.CURVES, best_epoch)
    manifest = run_dir / rd.MANIFEST
    index = load_dataset(manifest)
    train_s, val_s = index.select("train"), index.select("val")
    n_pos = sum(s.label for s in train_s)
    training = {"config": to_container(cfg), "wall_time_s": record["wall_time_s"], "epochs": trainer.current_epoch,
                "best_epoch": best_epoch, "git_commit": record.get("git", {}).get("commit"),
                "git_dirty": record.get("git", {}).get("dirty"), "split_method": split_method,
                "pos_weight": float(module.pos_weight), "run_dir": str(run_dir.resolve())}
    training_data = {"fingerprint": sha256_file(manifest), "n_images": len(train_s), "n_val": len(val_s),
                     "n_normal": len(train_s) - n_pos, "n_pneumonia": n_pos, "source": str(data_path)}
    (vx, vy), (ox, oy) = val, official
    build_bundle(model=module.model, cfg=to_container(cfg), spec=module.spec, out=run_dir / rd.BUNDLE,
                 val_x=vx, val_y=vy.numpy(), official_x=ox if len(ox) else None,
                 official_y=oy.numpy() if len(oy) else None, training_data=training_data, training=training,
                 manifest=manifest, split_method=split_method)


def summary(bundle_dir: Path) -> dict:
    """The figures a person wants after a run (read back from the bundle)."""
    meta = read_meta(bundle_dir)
    vm, tr = meta["validation_metrics"], meta.get("training", {})
    at = vm.get("at_operating_point", {})
    return {
        "bundle": str(bundle_dir), "wall_time_s": tr.get("wall_time_s"), "epochs": tr.get("epochs"),
        "best_epoch": tr.get("best_epoch"), "val_auroc": vm.get("auroc"), "val_accuracy": at.get("accuracy"),
        "val_sensitivity": at.get("sensitivity"), "val_specificity": at.get("specificity"),
        "operating_point": meta["operating_point"],
        "official_val_auroc": vm.get("official_val", {}).get("auroc"),
        "official_val_accuracy": vm.get("official_val", {}).get("at_operating_point", {}).get("accuracy"),
        "n_train": meta["training_data"].get("n_images"), "n_val": meta["training_data"].get("n_val"),
    }


__all__ = ["summary", "train"]
