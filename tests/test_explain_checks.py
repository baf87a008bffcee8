"""The checks that explanations mean something (sanity, faithfulness) and the ``pneumo explain`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pneumo.bundle import load_bundle
from pneumo.cli import main
from pneumo.data import preprocess, read_image
from pneumo.explain import DEFAULT_METHOD, explain_tensor, explainer_for
from pneumo.explain.faithfulness import auc, curves, faithfulness, random_map
from pneumo.explain.sanity import DEFAULT_BOUND, map_similarity, randomise, sanity_check


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def inputs(bundle, val_originals):
    """Eight real val X-rays (both classes), preprocessed to the tiny model's grid."""
    picked = [s for s in val_originals if s.label == 0][:4] + [s for s in val_originals if s.label == 1][:4]
    return [preprocess(read_image(s.path)[0], bundle.spec) for s in picked]


def test_randomise_changes_every_layer_and_leaves_the_model(bundle):
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    rnd = randomise(bundle.model, seed=0)
    for (k, v), r in zip(bundle.model.state_dict().items(), rnd.state_dict().values(), strict=True):
        assert torch.equal(v, before[k]), k
        if v.is_floating_point() and v.numel() > 1 and "running" not in k:
            assert not torch.equal(v, r), f"{k} not randomised"


def test_default_method_passes_sanity_on_trained_model(bundle, inputs):
    """The page's map (the default method, explaining each decision) depends on the learned weights."""
    report = sanity_check(bundle.model, inputs, method=DEFAULT_METHOD, target="decision",
                          threshold_logit=bundle.threshold_logit)
    assert report["n_images"] == len(inputs) and not report["inconclusive"]
    assert report["bound"] == DEFAULT_BOUND == 0.30
    assert report["passed"], report
    json.dumps(report)


def test_default_method_beats_a_random_map_on_the_tiny_model(bundle, inputs):
    """On the tiny model (10 k parameters at 64 px, evidence diffuse) the default map still deletes the
    model's evidence faster than a random map; the issue's margins are for a real model (next test)."""
    report = faithfulness(bundle.model, inputs, methods=(DEFAULT_METHOD,), threshold_logit=bundle.threshold_logit)
    m, rnd = report["methods"][DEFAULT_METHOD], report["random"]
    assert report["baseline"] == "blur" and report["steps"] == 20
    assert m["beats_random_deletion"] and m["deletion_auc"] < rnd["deletion_auc"] - 0.05, (m, rnd)


@pytest.mark.slow
def test_default_method_meets_the_targets_on_the_shipped_model(val_originals):
    """models/default on the 16 official originals: sanity |ρ| ≤ 0.30, deletion ≤ random − 0.08,
    insertion ≥ random + 0.06 (blur baseline, 20 steps) — the page's map, explaining each decision."""
    shipped = load_bundle(Path(__file__).resolve().parents[1] / "models" / "default")
    xs = [preprocess(read_image(s.path)[0], shipped.spec) for s in val_originals]
    ex = explainer_for(shipped)
    faith = faithfulness(shipped.model, xs, methods=(DEFAULT_METHOD,), threshold_logit=shipped.threshold_logit,
                         explain=ex.raw)
    m, rnd = faith["methods"][DEFAULT_METHOD], faith["random"]
    assert m["meets_targets"], (m, rnd)
    sanity = sanity_check(shipped.model, xs[::2], method=DEFAULT_METHOD, target="decision",
                          threshold_logit=shipped.threshold_logit)
    assert sanity["passed"] and not sanity["inconclusive"], sanity


def test_faithfulness_fails_for_a_broken_explainer(bundle, inputs):
    """A map that ranks the model's evidence last (the default map inverted) must miss the targets."""
    def inverted(x, method, target):
        return -explain_tensor(bundle.model, x, method=DEFAULT_METHOD, target=target)

    report = faithfulness(bundle.model, inputs, methods=("inverted",), threshold_logit=bundle.threshold_logit,
                          explain=inverted)
    m, rnd = report["methods"]["inverted"], report["random"]
    # worse than a random map on at least one curve (on the tiny model the inverted occlusion map still
    # deletes better than random, but inserts worse), and so never "meets the targets"
    assert not m["meets_targets"], (m, rnd)
    assert m["deletion_auc"] > rnd["deletion_auc"] or m["insertion_auc"] < rnd["insertion_auc"], (m, rnd)


def test_sanity_fails_for_an_explainer_that_ignores_the_model(bundle, inputs):
    """An 'explanation' that is just the input image (an edge detector would do the same) must FAIL."""

    def image_as_map(model, x):
        return np.asarray(x).reshape(np.shape(x)[-2:])

    report = sanity_check(bundle.model, inputs, explainer=image_as_map)
    assert not report["passed"] and report["abs_spearman_mean"] > 0.9 and report["ssim_mean"] > 0.9


def test_map_similarity_extremes():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert map_similarity(a, a) == pytest.approx((1.0, 1.0))
    assert map_similarity(a, -a)[0] == pytest.approx(-1.0)
    assert map_similarity(a, np.zeros_like(a))[0] == 0.0


def test_deletion_curve_uses_the_map(bundle, inputs):
    """Deleting the pixels the model's map ranks first hurts the explained class more than deleting
    the pixels it ranks last (the inverted map): the curves depend on the saliency order."""
    x = inputs[-1]
    with torch.no_grad():
        logit = float(bundle.model(torch.from_numpy(x[None]))[0])
    sign = 1.0 if logit >= bundle.threshold_logit else -1.0
    target = "pneumonia" if sign > 0 else "normal"
    sal = explain_tensor(bundle.model, x, method="occlusion-monai", target=target)  # the map this test was built on
    d_good, i_good = curves(bundle.model, x, sal, sign)
    d_bad, i_bad = curves(bundle.model, x, -sal, sign)
    assert len(d_good) == len(i_good) == 21
    assert d_good[0] == pytest.approx(d_bad[0], abs=1e-3) and i_good[-1] == pytest.approx(d_good[0], abs=1e-3)
    assert auc(d_good) < auc(d_bad) and auc(i_good) > auc(i_bad)
    assert random_map(64, np.random.default_rng(0)).shape == (64, 64)


def test_faithfulness_report(bundle, inputs):
    report = faithfulness(bundle.model, inputs[:3], methods=("gradcam",), threshold_logit=bundle.threshold_logit)
    g = report["methods"]["gradcam"]
    assert report["n_images"] == 3 and 0 <= g["deletion_auc"] <= 1 and 0 <= g["insertion_auc"] <= 1
    assert set(g) >= {"beats_random_deletion", "beats_random_insertion"} and "random" in report
    json.dumps(report)


def test_cli_writes_overlays_and_heatmaps_and_skips_bad_files(tiny_bundle, val_originals, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an X-ray")
    imgs = [str(s.path) for s in val_originals[:2]]
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["explain", str(tiny_bundle), imgs[0], str(bad), imgs[1], "--out", str(out), "--json", "--sanity",
               "--check-images", "2", "--maps"],
    )
    report = json.loads(res.stdout)
    assert res.exit_code == (0 if report["sanity"]["passed"] else 1), res.output  # a failed sanity check exits 1
    assert report["n_images"] == 2 and report["n_errors"] == 1
    err = [r for r in report["images"] if r["error"]]
    assert err[0]["path"] == str(bad) and "notes.txt" in err[0]["error"]
    assert "sanity" in report and isinstance(report["sanity"]["passed"], bool)
    for row, src in zip([r for r in report["images"] if not r["error"]], imgs, strict=True):
        heat = np.load(row["heatmap"])
        assert heat.shape == read_image(src)[0].shape and heat.dtype == np.float32
        assert row["overlay"].endswith(f"_{DEFAULT_METHOD}.png")
        assert row["target"] == ("pneumonia" if row["decision"] == "PNEUMONIA" else "normal")
        assert Path(row["overlay"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 0 <= row["probability"] <= 1 and row["decision"] in ("NORMAL", "PNEUMONIA")


def test_cli_bad_layer_is_a_one_line_error(tiny_bundle, val_originals, tmp_path):
    res = CliRunner().invoke(main, ["explain", str(tiny_bundle), str(val_originals[0].path), "--layer", "nope",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 2 and "nope" in res.output
