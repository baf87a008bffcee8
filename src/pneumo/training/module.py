"""The LightningModule: batched augmentation, weighted BCE, per-epoch metrics, optimiser and schedule.

Batches arrive as ``(x uint8 B×1×S×S, y float B, index B)`` from :class:`XrayDataModule`; the module
turns them into model input (augment in ``[0, 1]``, then the spec's normalisation) so the data
pipeline costs a few tensor ops per batch. Metrics are torchmetrics (synchronised across DDP ranks),
at the untuned threshold (probability 0.5); the operating threshold is chosen after training.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryRecall, BinarySpecificity

from pneumo.data import PreprocessSpec
from pneumo.models import PneumoNet
from pneumo.models.freeze import param_groups
from pneumo.training.augment import AugmentSpec, augment_batch, mixup
from pneumo.training.cache import normalise_batch


def bernoulli_js(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean Jensen–Shannon divergence between ``Bernoulli(sigmoid(a))`` and ``Bernoulli(sigmoid(b))``.

    The consistency term of AugMix (Hendrycks et al. 2020) for one logit: it penalises a prediction
    that moves when the same film is framed, exposed or sharpened differently — the fragility the
    acquisition-shift suite measures (NORMAL scores rising under any change).
    """
    p = torch.stack([torch.sigmoid(a.float()), torch.sigmoid(b.float())]).clamp(1e-6, 1 - 1e-6)
    m = p.mean(0)

    def kl(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return q * (q / r).log() + (1 - q) * ((1 - q) / (1 - r)).log()

    return 0.5 * (kl(p[0], m) + kl(p[1], m)).mean()


def make_metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "accuracy": BinaryAccuracy(),
            "sensitivity": BinaryRecall(),
            "specificity": BinarySpecificity(),
        },
        prefix=prefix,
    )


class PneumoModule(L.LightningModule):
    """Wraps a :class:`PneumoNet` for training.

    Args:
        model: the network (``B×1×S×S`` → ``B`` logits).
        cfg: the resolved training config as a plain dict.
        pos_weight: BCE weight of the positive class (``n_neg / n_pos`` for ``balanced``, else 1).
        index_log_dir: when set, each rank appends the sample indices it trained on to a file there.
    """

    def __init__(self, model: PneumoNet, cfg: dict, pos_weight: float = 1.0, index_log_dir: str | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.spec = PreprocessSpec.from_dict(dict(cfg["data"]["preprocess"]))
        self.aug = AugmentSpec.from_config(cfg["augment"])
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.index_log_dir = index_log_dir
        self.train_metrics = make_metrics("train/")
        self.val_metrics = make_metrics("val/")
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.memory_format = torch.channels_last if cfg["train"].get("channels_last") else torch.contiguous_format
        if cfg["train"].get("channels_last"):
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float input in the configured memory layout (channels-last is faster on CPU)."""
        return normalise_batch(x, self.spec).contiguous(memory_format=self.memory_format)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        if smoothing:
            target = target * (1 - smoothing) + 0.5 * smoothing
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, idx = batch
        if self.index_log_dir:
            self._log_indices(idx)
        clean = x.float().div_(255.0)
        x = augment_batch(clean, self.aug, y=y)
        x, target = mixup(x, y, float(self.cfg["augment"]["mixup_alpha"]))
        smoothing = float(self.cfg["loss"]["label_smoothing"])
        weight = float(self.cfg["loss"].get("consistency", 0.0))
        if weight > 0:  # a second, independently augmented view of the same images (no mixup)
            both = self.model(self._input(torch.cat([x, augment_batch(clean, self.aug, y=y)])))
            logits, other = both[: len(y)], both[len(y) :]
            loss = 0.5 * (self._loss(logits, target, smoothing) + self._loss(other, y, smoothing))
            loss = loss + weight * bernoulli_js(logits, other)
        else:
            logits = self.model(self._input(x))
            loss = self._loss(logits, target, smoothing)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_metrics.update(torch.sigmoid(logits.detach()), y.long())
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, _ = batch
        logits = self.model(self._input(x))
        self.val_loss.update(self._loss(logits, y), weight=len(y))
        self.val_metrics.update(torch.sigmoid(logits), y.long())

    def on_validation_epoch_end(self) -> None:
        """Log train and val figures together, before checkpointing sees them.

        Train figures are over this epoch's augmented batches (labels before mixup). Both sets are
        computed here, not in ``on_train_epoch_end``, so that the metrics CSV and the checkpoint
        written at ``on_validation_end`` always describe the same epoch.
        """
        if self.trainer.sanity_checking:
            return
        values = {"val/loss": self.val_loss.compute(), **self.val_metrics.compute()}
        if self.train_loss.update_count:
            values.update({"train/loss": self.train_loss.compute(), **self.train_metrics.compute()})
        self.log_dict(values, sync_dist=True)  # already synced by torchmetrics: identical on every rank
        self.log("val_auroc", values["val/auroc"], prog_bar=True, logger=False, sync_dist=True)
        for m in (self.val_loss, self.val_metrics, self.train_loss, self.train_metrics):
            m.reset()

    def _log_indices(self, idx: torch.Tensor) -> None:
        path = Path(str(self.index_log_dir)) / f"indices_rank{self.global_rank}.txt"
        with path.open("a") as fh:
            fh.write(f"{self.current_epoch} " + " ".join(str(int(i)) for i in idx) + "\n")

    def configure_optimizers(self):
        return build_optimisation(self.model, self.cfg, self.trainer)


def _param_groups(model: PneumoNet, lr: float, mult: float):
    if mult != 1.0:
        return param_groups(model, lr, mult)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def build_optimisation(model: PneumoNet, cfg: dict, trainer) -> dict:
    """Optimiser (+ LR schedule) from ``optim.*`` and ``schedule.*``."""
    o, s = cfg["optim"], cfg["schedule"]
    groups = _param_groups(model, float(o["lr"]), float(o["backbone_lr_mult"]))
    lr, wd = float(o["lr"]), float(o["weight_decay"])
    if o["name"] == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=wd, eps=o["eps"])
    elif o["name"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd, eps=o["eps"])
    elif o["name"] == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=o["momentum"], nesterov=o["momentum"] > 0)
    else:
        opt = torch.optim.RMSprop(groups, lr=lr, weight_decay=wd, alpha=o["alpha"], eps=o["eps"])
    name = s["name"]
    if name == "none":
        return {"optimizer": opt}
    if name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=s["factor"], patience=s["patience"], min_lr=s["min_lr"]
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/auroc", "interval": "epoch"}}
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["train"]["epochs"], eta_min=s["min_lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=int(trainer.estimated_stepping_batches),
        pct_start=s["pct_start"],
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
