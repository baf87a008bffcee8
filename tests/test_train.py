"""`pneumo train` end to end on a few dozen real X-rays with the tiny config (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pneumo.bundle import load_bundle
from pneumo.data import load_dataset, preprocess, read_image
from pneumo.errors import ConfigError
from pneumo.training.augment import AugmentSpec, augment_batch, mixup
from pneumo.training.cache import load_or_decode, normalise_batch
from pneumo.training.datamodule import split_train_val
from pneumo.training.finalize import predict_logits
from pneumo.training.run import train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


class Grab(L.Callback):
    """Keeps the LightningModule, whose ``model`` holds the bundle's weights once train() returns."""

    def on_fit_end(self, trainer, pl_module):
        self.module = pl_module


@pytest.fixture(scope="module")
def tiny_run(small_samples, val_originals, tmp_path_factory):
    """A tiny run on a manifest with train / val / val_official rows (as `pneumo data split` writes)."""
    from dataclasses import replace

    from pneumo.data import write_manifest

    out = tmp_path_factory.mktemp("train") / "tiny"
    rows = [*small_samples, *(replace(s, split="val_official") for s in val_originals)]
    manifest = write_manifest(rows, out.parent / "with-official.csv")
    grab = Grab()
    bundle = train(TINY, data=manifest, out=out, callbacks=[grab], progress=False,
                   overrides=[f"data.cache_dir={out.parent / 'cache'}"])
    return bundle, grab.module.model.eval(), out


def test_run_directory_holds_everything(tiny_run):
    bundle, _, out = tiny_run
    for name in ("config.yaml", "run.json", "manifest.csv", "metrics.csv", "curves.png",
                 "checkpoints/last.ckpt", "bundle/pneumo.json", "bundle/model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "tb").rglob("events.out.tfevents.*")), "no TensorBoard events"
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_auroc") and len(rows) == 3  # header + 2 epochs
    assert all(cell != "" for cell in rows[-1].split(",")), rows[-1]
    run = json.loads((out / "run.json").read_text())
    assert run["wall_time_s"] > 0 and run["epochs"] == 2 and "commit" in run["git"]


def test_bundle_loads_and_matches_the_trained_model(tiny_run, small_samples):
    bundle_dir, model, _ = tiny_run
    b = load_bundle(bundle_dir)
    x = torch.from_numpy(np.stack([preprocess(read_image(s.path)[0], b.spec) for s in small_samples[:12]]))
    with torch.inference_mode():
        assert torch.allclose(b.model(x), model(x), atol=1e-5)
    meta = b.meta
    assert meta["architecture"] == {"name": "tiny_cnn", "kwargs": {"width": 8, "depth": 3}}
    assert meta["preprocess"]["size"] == 64
    op = meta["operating_point"]
    assert op["rule"] == "youden" and {"logit", "val_sensitivity", "val_specificity"} <= set(op)
    assert set(meta["thresholds"]) == {"youden", "sensitivity", "default"}
    assert meta["training"]["epochs"] == 2 and meta["training"]["config"]["model"]["name"] == "tiny_cnn"
    td = meta["training_data"]
    assert len(td["fingerprint"]) == 64 and td["n_images"] + td["n_val"] == len(small_samples)
    assert (bundle_dir / td["manifest"]).is_file()
    official = meta["validation_metrics"]["official_val"]  # reported, never in train/val
    assert official["n_images"] == 16 and 0.0 <= official["auroc"] <= 1.0
    assert "val_official" not in (bundle_dir / td["manifest"]).read_text()


def test_threshold_and_val_metrics_reproduce_from_the_manifest(tiny_run):
    """The val split in the manifest, read through read_image → preprocess, gives the stored figures."""
    bundle_dir, _, out = tiny_run
    b = load_bundle(bundle_dir)
    val = load_dataset(out / "manifest.csv").select("val")
    train_groups = {s.patient_id for s in load_dataset(out / "manifest.csv").select("train")}
    assert not train_groups & {s.patient_id for s in val}, "a patient is in both train and val"
    x = torch.from_numpy(np.stack([preprocess(read_image(s.path)[0], b.spec) for s in val]))
    with torch.inference_mode():
        logits = b.model(x).numpy()
    cached, _ = load_or_decode(val, b.spec, None, workers=1, progress=False)
    assert np.abs(predict_logits(b.model, cached, b.spec) - logits).max() < 0.05  # uint8 cache ≈ float path
    y = np.array([s.label for s in val])
    decided = logits >= b.threshold_logit
    sens = decided[y == 1].mean()
    assert sens == pytest.approx(b.meta["operating_point"]["val_sensitivity"], abs=1.01 / (y == 1).sum())


def test_cli_refuses_bad_overrides_and_reused_run_dir(tiny_run, small_manifest):
    from pneumo.cli.train import train as cli

    _, _, out = tiny_run
    r = CliRunner().invoke(cli, ["--config", str(TINY), "--data", str(small_manifest), "--out", str(out / "x"),
                                 "train.epochs=zero"])
    assert r.exit_code == 2 and "train.epochs must be an integer" in r.output
    r = CliRunner().invoke(cli, ["--config", str(TINY), "--data", str(small_manifest), "--out", str(out)])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = CliRunner().invoke(cli, ["--resume", str(out / "nothing-here")])
    assert r.exit_code == 2 and "nothing to resume" in r.output
    with pytest.raises(ConfigError, match="no config given"):
        train(None, data=small_manifest, out=out / "y")


def test_train_val_split_keeps_patients_whole_and_stratifies(dataset):
    pool = dataset.select("train")[::6]
    tr, va = split_train_val(pool, 0.2, seed=1)
    assert not {s.group for s in tr} & {s.group for s in va}
    assert len(tr) + len(va) == len(pool) and 0.1 < len(va) / len(pool) < 0.3
    pos = lambda part: np.mean([s.label for s in part])  # noqa: E731
    assert abs(pos(tr) - pos(va)) < 0.08


def test_augmentation_is_batched_bounded_and_varied():
    x = torch.rand(8, 1, 48, 48)
    spec = AugmentSpec(rotate_deg=15, translate=0.1, scale=0.1, shear=0.1, hflip=True, noise_std=0.02)
    out = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0] - x[0], out[1] - x[1])  # each image gets its own draw
    assert torch.equal(augment_batch(x, AugmentSpec(enabled=False)), x)
    xm, ym = mixup(x, torch.tensor([0.0, 1.0] * 4), alpha=0.4, gen=torch.Generator().manual_seed(0))
    assert xm.shape == x.shape and ((ym >= 0) & (ym <= 1)).all()


def test_normalise_batch_equals_preprocess(small_samples):
    from pneumo.data import PreprocessSpec

    spec = PreprocessSpec(size=224)  # the shared train images are 224²: no resize, exact uint8
    s = small_samples[0]
    cached, _ = load_or_decode([s], spec, None, workers=1, progress=False)
    ref = torch.from_numpy(preprocess(read_image(s.path)[0], spec))
    assert torch.allclose(normalise_batch(cached, spec)[0], ref, atol=1e-5)


def test_cache_file_is_reused_without_decoding(small_samples, tmp_path, monkeypatch):
    from pneumo.data import PreprocessSpec
    from pneumo.training import cache

    spec, few = PreprocessSpec(size=32), small_samples[:5]
    first, shas = cache.load_or_decode(few, spec, tmp_path, workers=1, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and len(shas[0]) == 64

    def no_decoding(*a, **k):
        raise AssertionError("decoded again despite a valid cache file")

    monkeypatch.setattr(cache, "decode_all", no_decoding)
    again, shas2 = cache.load_or_decode(few, spec, tmp_path, workers=1, progress=False)
    assert torch.equal(first, again) and shas == shas2 and first.dtype == torch.uint8
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another key
        cache.load_or_decode(few, PreprocessSpec(size=40), tmp_path, workers=1, progress=False)


@pytest.mark.slow
def test_other_optimisers_schedules_sampler_mixup_and_swa(small_manifest, tmp_path):
    bundle = train(TINY, data=small_manifest, out=tmp_path / "r", progress=False, overrides=[
        "optim.name=sgd", "optim.lr=0.01", "schedule.name=onecycle", "data.sampler=balanced",
        "augment.mixup_alpha=0.4", "loss.label_smoothing=0.1", "loss.class_weighting=none", "train.swa=true",
        "train.swa_epoch_start=1", "threshold.rule=sensitivity", "threshold.target_sensitivity=0.9",
        "data.cache_file=false"])
    b = load_bundle(bundle)
    assert b.meta["operating_point"]["rule"] == "sensitivity"
    assert b.meta["operating_point"]["val_sensitivity"] >= 0.9
    assert b.meta["training"]["best_epoch"] is None  # SWA: the averaged final weights, not a best epoch
    assert b.meta["training"]["pos_weight"] == 1.0


def _best_row_auroc(run_dir: Path, epoch: int) -> float:
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    row = next(r.split(",") for r in rows[1:] if int(r.split(",")[0]) == epoch)
    return float(row[header.index("val_auroc")])


def test_bundle_holds_the_best_epoch(tiny_run):
    """The bundle's val AUROC (sklearn, after reloading the best checkpoint) is the best epoch's (torchmetrics)."""
    bundle_dir, _, out = tiny_run
    meta = load_bundle(bundle_dir).meta
    best = meta["training"]["best_epoch"]
    aurocs = [float(r.split(",")[7]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert _best_row_auroc(out, best) == pytest.approx(max(aurocs))
    assert meta["validation_metrics"]["auroc"] == pytest.approx(_best_row_auroc(out, best), abs=1e-4)


@pytest.mark.slow
def test_ema_weights_are_what_is_validated_and_bundled(small_manifest, tmp_path):
    out = tmp_path / "ema"
    bundle = train(TINY, data=small_manifest, out=out, progress=False,
                   overrides=["train.ema_decay=0.9", "data.cache_file=false"])
    meta = load_bundle(bundle).meta
    assert meta["validation_metrics"]["auroc"] == pytest.approx(_best_row_auroc(out, meta["training"]["best_epoch"]),
                                                                abs=1e-4)
    with pytest.raises(ConfigError, match="exclusive"):
        train(TINY, data=small_manifest, out=tmp_path / "both", overrides=["train.ema_decay=0.9", "train.swa=true"])


@pytest.mark.slow
def test_same_seed_same_weights(tiny_run, small_manifest, tmp_path):
    bundle_dir, _, out = tiny_run
    again = train(TINY, data=small_manifest, out=tmp_path / "again", progress=False,
                  overrides=[f"data.cache_dir={out.parent / 'cache'}"])
    assert load_bundle(again).meta["weights_sha256"] == load_bundle(bundle_dir).meta["weights_sha256"]
    other = train(TINY, data=small_manifest, out=tmp_path / "other", progress=False,
                  overrides=[f"data.cache_dir={out.parent / 'cache'}", "seed=1"])
    assert load_bundle(other).meta["weights_sha256"] != load_bundle(bundle_dir).meta["weights_sha256"]


def test_training_cache_and_serving_give_the_same_tensor_for_jpeg_png16_and_dicom(small_samples, tmp_path):
    """Training's cached path (decode once → resize → uint8 → normalise_batch) and serving's
    (read_image → preprocess) must feed the model the same tensor for every format, not only for the
    224² JPEGs where no resize happens: the only allowed difference is the cache's uint8 step."""
    import numpy as np
    from PIL import Image
    from pydicom.uid import ExplicitVRLittleEndian

    from dicom_support import new_dataset, to_bytes
    from pneumo.data import PreprocessSpec, Sample

    src = read_image(small_samples[0].path)[0]
    big = np.asarray(Image.fromarray((src * 65535).astype(np.uint16)).resize((301, 257)), dtype=np.uint16)
    Image.fromarray(big).save(tmp_path / "film16.png")
    ds = new_dataset("DX", ExplicitVRLittleEndian)
    ds.Rows, ds.Columns = big.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = big.tobytes()
    (tmp_path / "film.dcm").write_bytes(to_bytes(ds))
    Image.fromarray((src * 255).astype(np.uint8)).resize((333, 280)).save(tmp_path / "film.jpg", quality=90)
    spec = PreprocessSpec(size=128)
    step = 1.0 / 255.0 / spec.std  # one uint8 step of the cache, in model-input units
    for name in ("film.jpg", "film16.png", "film.dcm"):
        path = tmp_path / name
        cached, _ = load_or_decode([Sample(path, 0)], spec, None, workers=1, progress=False)
        # as the Predictor's batch loop reads a path: a JPEG ≥ 2×size a side is DCT-scaled, in training too
        served = torch.from_numpy(preprocess(read_image(path, target=spec.size)[0], spec))
        diff = float((normalise_batch(cached, spec)[0] - served).abs().max())
        assert diff <= 0.5 * step + 1e-5, (name, diff)
