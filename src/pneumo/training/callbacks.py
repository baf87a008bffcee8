"""Run-directory callbacks: the per-epoch metrics CSV and the learning curves PNG."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pneumo.bundle import atomic_write_bytes

COLUMNS = (
    "epoch", "train_loss", "train_auroc", "train_accuracy", "train_sensitivity", "train_specificity",
    "val_loss", "val_auroc", "val_accuracy", "val_sensitivity", "val_specificity", "lr", "epoch_time_s",
)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


class MetricsCSV(L.Callback):
    """Append one row per validated epoch to ``metrics.csv`` (rank 0; rewritten atomically).

    On resume the rows already there are kept; an epoch that is run again replaces its row.

    Not Lightning's ``CSVLogger`` (checked against Lightning 2.6): its writer deletes an existing
    ``metrics.csv`` whenever its folder is not empty, which on a resumed run is always, so the epochs
    before a crash would be lost; and it writes a row per logging call (step rows, train-end and val-end
    rows apart) where the learning curves, the run summary and the user want one row per epoch.
    TensorBoard event files (``tb/``) come from Lightning's own logger.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "epoch_time_s": round(time.perf_counter() - self._t0, 2)}
        for key in COLUMNS[1:-2]:
            value = m.get(key.replace("_", "/", 1))
            row[key] = f"{float(value):.6g}" if value is not None else ""
        row["lr"] = f"{trainer.optimizers[0].param_groups[-1]['lr']:.6g}" if trainer.optimizers else ""
        rows = [r for r in read_metrics(self.path) if int(r["epoch"]) < trainer.current_epoch]
        write_metrics(self.path, [*rows, row])


def plot_curves(metrics_csv: Path, out_png: Path, best_epoch: int | None = None) -> Path | None:
    """Loss, AUROC and accuracy, train vs val, one panel each (matplotlib, Agg)."""
    rows = read_metrics(metrics_csv)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def col(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows]

    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, what in zip(axes, ("loss", "auroc", "accuracy"), strict=True):
        ax.plot(epochs, col(f"train_{what}"), "o-", label="train", ms=3)
        ax.plot(epochs, col(f"val_{what}"), "o-", label="val (patient split)", ms=3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(what)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file *in the same folder*, fsynced, then renamed.

    Lightning's own ``_atomic_save`` goes through an fsspec transaction whose temp file lives in the
    system temp dir; when that is another filesystem the final move is a copy, which a kill can cut
    short. A same-folder rename cannot.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())
