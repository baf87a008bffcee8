"""Drift monitoring over the audit log: the PSI/KS arithmetic on the shipped model's real validation
reference, then two real servers — one fed validation films, one fed blurred copies of them — whose
``/api/v1/monitor``, ``/monitor`` page and ``pneumo audit monitor`` must tell them apart."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFilter

from page_support import TEST_BOUNDS, val_paths
from pneumo.bundle import read_meta
from pneumo.errors import ConfigError
from pneumo.monitoring import Bounds, score_reference, summarise
from pneumo.monitoring.drift import bucket_key, to_logits
from pneumo.monitoring.reference import QUANTILE_PROBS
from pneumo.server.audit_store import utc_now

pytest_plugins = ["page_support"]

N_POST = 120  # enough that ≥ 100 (min_scored) are scored after refusals
BLUR = 4  # px: a softer film (another scanner's post-processing) moves this model's scores


def _rows(probs, sha, time="2026-03-04T10:00:00.000+00:00"):
    return [{"time": time, "outcome": "ok", "probability": float(p), "image_sha256": f"img{i}", "model_sha256": sha,
             "decision": "PNEUMONIA" if p > 0.5 else "NORMAL", "latency_ms": 5.0} for i, p in enumerate(probs)]


def test_reference_and_drift_arithmetic(ref_bundle):
    meta = read_meta(ref_bundle[0])
    ref, sha = meta["score_reference"], meta["weights_sha256"]
    t, b = float(meta["temperature"]), float(meta.get("calibration_bias", 0.0))
    assert ref["n"] >= 100 and len(ref["quantiles"]) == len(QUANTILE_PROBS) and sum(ref["psi_counts"]) == ref["n"]
    # scores drawn from the reference's own distribution: no drift; the same shifted by +3 logits: drift
    rng = np.random.default_rng(0)
    logits = np.interp(rng.uniform(size=400), QUANTILE_PROBS, ref["quantiles"])
    same = summarise(_rows(1 / (1 + np.exp(-(logits / t + b))), sha), meta, model_sha=sha)
    moved = summarise(_rows(1 / (1 + np.exp(-((logits + 3) / t + b))), sha), meta, model_sha=sha)
    assert same["overall"]["psi"] < 0.1 and same["overall"]["ks"] < 0.1 and same["alarms"] == []
    assert moved["overall"]["psi"] > 0.25 and {a["metric"] for a in moved["alarms"]} >= {"psi", "ks"}
    assert abs(sum(same["overall"]["histogram"]["reference"]) - 1) < 1e-3
    # another model's rows are counted as requests but never compared with this model's reference
    other = summarise(_rows(1 / (1 + np.exp(-(logits + 3) / t)), "another-sha"), meta, model_sha=sha)
    assert other["overall"]["requests"] == 400 and other["overall"]["n_scored"] == 0 and other["alarms"] == []
    assert np.allclose(to_logits([0.25, 0.75], 2.0), [-2 * np.log(3), 2 * np.log(3)])
    block = score_reference(np.arange(100.0), threshold_logit=50.0)
    assert block["positive_rate"] == 0.5 and block["psi_counts"] == [10] * 10


def test_buckets_bounds_and_refusals():
    assert bucket_key("2026-03-04T23:59:00+00:00", "week") == "2026-03-02"  # a Wednesday → its Monday
    rows = [{"time": f"2026-03-0{d}T08:00:00+00:00", "outcome": o, "probability": None, "latency_ms": 3.0,
             "error_code": "busy" if o == "error" else None}
            for d in (2, 3) for o in ["refused_ood"] * 5 + ["ok"] * 10 + ["error"] * 3]
    s = summarise(rows, {"name": "m"}, bucket="day")
    assert [b["start"] for b in s["buckets"]] == ["2026-03-02", "2026-03-03"]
    assert s["overall"]["refusal_rate"] == round(10 / 30, 4) and s["overall"]["error_codes"] == {"busy": 6}
    assert {a["metric"] for a in s["alarms"]} == {"refusal_rate", "error_rate"}
    assert any("no validation score reference" in n for n in s["notes"])
    assert summarise(rows, {}, bounds=Bounds(refusal_max=0.5, error_max=0.5))["alarms"] == []
    with pytest.raises(ConfigError):
        Bounds.from_env(psi_maximum=1)


def _blurred(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("L").filter(ImageFilter.GaussianBlur(BLUR)).save(buf, format="PNG")
    return buf.getvalue()


def _post_all(url: str, items: list[tuple[str, bytes, str]]) -> list[dict]:
    def one(item):
        name, data, ctype = item
        r = httpx.post(url + "/api/v1/predict", files={"file": (name, data, ctype)}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, items))


@pytest.fixture(scope="module")
def monitored(page_server, ref_bundle):
    """Validation films, then the same films blurred, through one real server: two audit windows."""
    rng = np.random.default_rng(1)
    paths = val_paths(ref_bundle[1])
    chosen = [paths[i][0] for i in rng.permutation(len(paths))[:N_POST]]
    t0 = utc_now()
    _post_all(page_server.url, [(p.name, p.read_bytes(), "image/jpeg") for p in chosen])
    t1 = utc_now()
    _post_all(page_server.url, [(p.stem + ".png", _blurred(p), "image/png") for p in chosen])
    t2 = utc_now()
    return page_server, {"unshifted": (t0, t1), "shifted": (t1, t2)}


def _api(server, since, until, **extra) -> dict:
    r = httpx.get(server.url + "/api/v1/monitor", params={"since": since, "until": until, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_monitor_api_alarms_for_shifted_scores_only(monitored, capsys):
    server, windows = monitored
    got = {k: _api(server, lo, hi, bucket="week") for k, (lo, hi) in windows.items()}
    with capsys.disabled():
        for k, m in got.items():
            o = m["overall"]
            print(f"\n[monitor] {k}: requests {o['requests']} scored {o['n_scored']} refused {o['refusal_rate']} "
                  f"positive {o['positive_rate']} PSI {o['psi']} KS {o['ks']} (p {o['ks_p']}) "
                  f"p50/p95 {o['latency_p50_ms']}/{o['latency_p95_ms']} ms alarms {[a['metric'] for a in m['alarms']]}")
    calm, shifted = got["unshifted"], got["shifted"]
    assert calm["overall"]["requests"] == N_POST and calm["overall"]["n_scored"] >= 100
    assert calm["status"] == "ok" and calm["alarms"] == [], calm["alarms"]
    assert calm["overall"]["psi"] < 0.25 and calm["overall"]["ks"] < 0.2
    assert shifted["overall"]["n_scored"] >= 100
    assert shifted["status"] == "alarm" and {"psi"} <= {a["metric"] for a in shifted["alarms"]}
    assert shifted["overall"]["psi"] > 4 * calm["overall"]["psi"]
    assert len(shifted["buckets"]) == 1 and shifted["buckets"][0]["requests"] == N_POST


@pytest.mark.slow
def test_cli_monitor_gives_the_same_figures(monitored, ref_bundle):
    server, windows = monitored
    exe = Path(sys.executable).with_name("pneumo")
    codes = {}
    for k, (lo, hi) in windows.items():
        cmd = [str(exe), "audit", "monitor", "--db", str(server.db), "--since", lo, "--until", hi, "--bundle",
               str(ref_bundle[0])]
        env = dict(os.environ, PNEUMO_MONITOR_BOUNDS=TEST_BOUNDS)
        proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=120, env=env)
        codes[k] = proc.returncode
        assert json.loads(proc.stdout)["overall"]["psi"] == _api(server, lo, hi)["overall"]["psi"]
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert text.returncode == proc.returncode and "PSI" in text.stdout
        assert ("ALARM" in text.stdout) == (k == "shifted")
    assert codes == {"unshifted": 0, "shifted": 1}


@pytest.mark.browser
@pytest.mark.slow
def test_monitor_page_shows_the_alarm(monitored, chromium, tmp_path):
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect

    server, windows = monitored
    page = chromium.new_page(viewport={"width": 1366, "height": 768})
    try:
        for kind, (lo, hi) in windows.items():
            page.goto(f"{server.url}/monitor?{urlencode({'since': lo, 'until': hi})}")
            expect(page.locator("#mon-state")).to_contain_text(f"{N_POST} requests")
            if kind == "shifted":
                expect(page.locator("#alarm")).to_be_visible()
                expect(page.locator("#alarm-list")).to_contain_text("PSI")
            else:
                expect(page.locator("#calm")).to_be_visible()
                expect(page.locator("#alarm")).to_be_hidden()
            assert page.locator("#hist .hist-bin").count() == 10
            page.screenshot(path=str(tmp_path / f"monitor-{kind}.png"), full_page=True)
        bad = [v["id"] for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]
        assert bad == [], bad
    finally:
        page.close()
    print(f"\n[monitor] screenshots in {tmp_path}")
