"""``MODEL_CARD.md`` for a bundle, following Mitchell et al., "Model Cards for Model Reporting" (2019).

Facts come from ``pneumo.json`` (architecture, weights hash, operating point, training data
fingerprint, validation metrics, calibration) and, when given, an ``evaluate`` output folder's
``metrics.json`` (metrics with patient-bootstrap CIs on a named split). Nothing is invented: a
missing fact is written as "not recorded".
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from pneumo.bundle import atomic_write_bytes, derived_problem, load_bundle, read_meta, record_derived
from pneumo.decision import SHIFT_RULE
from pneumo.errors import ConfigError
from pneumo.evaluation.metrics import METRIC_LABELS
from pneumo.evaluation.report import fmt
from pneumo.models import count_params

CARD = "MODEL_CARD.md"
NR = "not recorded"

LIMITATIONS = """\
- **Single centre.** All images come from one hospital (Guangzhou Women and Children's Medical Center);
  performance at other hospitals, scanners and populations is unknown until validated locally.
- **Ages 1–5, anterior–posterior views only.** Not validated for older children, adults, or lateral views.
- **Shortcut risk: image size and aspect ratio.** In this dataset PNEUMONIA and NORMAL images differ
  systematically in original size/aspect and in border/marker patterns; a model can score well by
  learning those instead of lung findings. Check heatmaps (`pneumo explain`), stress the saved threshold with
  `benchmarks/robustness.py` (framing, aspect, sharpness, exposure shifts), and evaluate on data
  acquired differently.
- **The official test NORMALs are harder** (and the official val split has only 16 images): figures on
  small splits have wide confidence intervals — read the CIs, not the point estimates.
- **Labels** are image-level NORMAL / PNEUMONIA (bacterial vs viral from file names), graded by
  physicians from the original study; label noise is documented for this dataset.
- Probabilities are calibrated only if `pneumo calibrate` was run, and only for data like the calibration split.
"""

ETHICS = """\
- Decision support for a qualified clinician, **not a diagnosis**; a false negative can delay treatment
  of a sick child, a false positive can lead to unnecessary antibiotics.
- The training data are de-identified images released for research under CC BY 4.0; no patient
  identities are stored in the bundle.
- Subgroup performance (sex, age, scanner) could not be assessed: the dataset records none of them.
  Evaluate per subgroup with a manifest that has such columns before deployment.
"""


def _metrics_table(metrics: dict) -> list[str]:
    """Rows for an evaluation's metrics, or for the block training stores in ``validation_metrics``
    (AUROC at the top level, the rest under ``at_operating_point``, no CIs)."""
    rows = ["| metric | value | 95% CI |", "|---|---|---|"]
    metrics = {**(metrics.get("at_operating_point") or {}), **metrics}
    for k, label in METRIC_LABELS.items():
        m = metrics.get(k)
        if m is None:
            continue
        if isinstance(m, dict):
            ci = f"{fmt(m.get('lo'))} – {fmt(m.get('hi'))}" if "lo" in m else "—"
            rows.append(f"| {label} | {fmt(m.get('value'))} | {ci} |")
        else:
            rows.append(f"| {label} | {fmt(float(m))} | — |")
    return rows


def _load_eval(eval_dir: Path | None) -> dict | None:
    if eval_dir is None:
        return None
    f = Path(eval_dir) / "metrics.json"
    if not f.exists():
        raise ConfigError(f"{eval_dir}: no metrics.json (expected a `pneumo evaluate` output folder)")
    return json.loads(f.read_text())


def _details(meta: dict, n_params: str) -> list[str]:
    arch = meta.get("architecture", {})
    return [
        "## Model details",
        f"- Name: `{meta.get('name', NR)}`; model version {meta.get('model_version', NR)} "
        f"(written by pneumo {meta.get('pneumo_version', NR)}); "
        f"created {meta.get('created', NR)}",
        f"- Architecture: `{arch.get('name', NR)}` with {json.dumps(arch.get('kwargs', {}))}; {n_params} parameters",
        f"- Input: one grey channel, preprocessing {json.dumps(meta.get('preprocess', {}))}",
        "- Output: one logit for PNEUMONIA; probability = sigmoid(logit / temperature + bias)",
        f"- Weights: `model.safetensors`, sha256 `{meta.get('weights_sha256', NR)}`",
        "- Licence of the code: Apache-2.0. Contact: the team that trained this bundle.",
    ]


def _operating_point(meta: dict) -> list[str]:
    op = meta.get("operating_point", {})
    t, b = float(meta.get("temperature", 1.0)), float(meta.get("calibration_bias", 0.0))
    lines = ["## Operating point",
             f"- Rule: {op.get('rule', NR)}; decision PNEUMONIA iff logit ≥ {fmt(op.get('logit'), 4)}"
             f" (probability ≥ {fmt(_sig(op.get('logit'), t, b), 4)} at temperature {fmt(t, 3)}, bias {fmt(b, 3)})"]
    for k in ("val_sensitivity", "val_specificity"):
        if k in op:
            lines.append(f"- {k.replace('_', ' ')} when chosen: {fmt(float(op[k]))}")
    if op.get("rule") == SHIFT_RULE:
        n = op.get("n_shifts")  # counts the unshifted films too ("none")
        lines.append(f"- Chosen so that sensitivity, pooled over the validation images as they are and "
                     f"{n - 1 if isinstance(n, int) else n} shifted copies of them ({n} conditions; framing, "
                     "aspect, margins, rotation, markers, sharpness, source resolution, exposure, JPEG, noise: "
                     f"`pneumo.evaluation.shifts`), is ≥ {fmt(op.get('target'))}: "
                     f"pooled sensitivity {fmt(op.get('pooled_sensitivity'))}, "
                     f"specificity {fmt(op.get('pooled_specificity'))}")
    return lines


def _shift_suite(meta: dict) -> list[str]:
    """The acquisition-shift table (``shift_suite``, written when the threshold rule used the suite)."""
    suite = meta.get("shift_suite")
    if not suite:
        return []
    lines = ["## Acquisition-shift suite (validation)",
             f"The {suite.get('n_images')} patient-grouped validation images, each re-scored after one a-priori "
             "acquisition change (`pneumo.evaluation.shifts`), at the saved operating point. A proxy for new "
             "hospitals and scanners, not a measurement on them.", "",
             "| shift | AUROC | sensitivity | specificity |", "|---|---|---|---|"]
    for name, r in suite["shifts"].items():
        lines.append(f"| {name} | {fmt(r['auroc'], 4)} | {fmt(r['sensitivity'])} | {fmt(r['specificity'])} |")
    lines += ["", f"Over the shifts: sensitivity mean {fmt(suite['mean_sensitivity'])} (worst "
              f"{fmt(suite['worst_sensitivity'])}), specificity mean {fmt(suite['mean_specificity'])} (worst "
              f"{fmt(suite['worst_specificity'])})."]
    if suite.get("mirror_agreement") is not None:
        lines.append(f"A left-right mirrored film keeps its decision for {fmt(100 * suite['mirror_agreement'], 1)}% "
                     "of the validation images.")
    return lines


def _sig(logit, t, b=0.0):
    import math

    return None if logit is None else 1 / (1 + math.exp(-(float(logit) / t + b)))


def _calibration(meta: dict) -> list[str]:
    cal = meta.get("calibration")
    if not cal:
        return ["## Calibration",
                "- Not calibrated (temperature 1.0 unless stated above); probabilities may be over-confident."]
    prev = cal.get("prevalence")
    return ["## Calibration",
            f"- {cal.get('method', 'Temperature scaling')} fitted on split `{cal.get('split')}` "
            f"({cal.get('n')} images) on {cal.get('fitted', NR)}: T = {fmt(float(meta.get('temperature', 1.0)), 3)}, "
            f"bias {fmt(float(meta.get('calibration_bias', 0.0)), 3)}",
            f"- Fitted on: {cal.get('data', NR)}"
            + (f" ({cal['n_normal']} NORMAL / {cal['n_pneumonia']} PNEUMONIA)" if "n_normal" in cal else "")
            + ". `pneumo calibrate` refuses sets with fewer than 30 films of a class, sets the model ranks "
            "perfectly, and fits that put most films at probability 0 or 1.",
            f"- **Probabilities assume a pneumonia prevalence of {fmt(prev, 3)}**"
            + (f" (fitted at {fmt(cal.get('fitted_prevalence'), 3)}, the calibration split's)"
               if prev is not None else "")
            + ". A site with another prevalence runs `pneumo calibrate BUNDLE --prevalence P`; "
            "decisions do not move.",
            f"- ECE {fmt(cal.get('ece_before'))} → {fmt(cal.get('ece_after'))}; Brier {fmt(cal.get('brier_before'))} → "
            f"{fmt(cal.get('brier_after'))} (on the calibration split itself — optimistic)"]


def _data(meta: dict) -> list[str]:
    td = meta.get("training_data", {}) or {}
    lines = ["## Training data",
             "- Kermany et al. pediatric chest X-rays (Guangzhou Women and Children's Medical Center), CC BY 4.0."]
    for k, v in td.items():
        lines.append(f"- {k}: {json.dumps(v) if isinstance(v, dict | list) else v}")
    if not td:
        lines.append(f"- Fingerprint and size: {NR}")
    return lines


def _evaluation(meta: dict, ev: dict | None, kept: list[str] | None = None) -> list[str]:
    lines = ["## Evaluation data and metrics (at the saved operating point, never re-tuned)"]
    vm = meta.get("validation_metrics") or {}
    if vm:
        lines += ["### Validation (used to choose the operating point — optimistic)",
                  f"Data: {vm.get('split', NR)}.", "", *_metrics_table(vm)]
        off = vm.get("official_val")
        if isinstance(off, dict):
            lines += ["", f"Official Kermany val folder ({off.get('n_images', '?')} images; {off.get('note', '')}):",
                      "", *_metrics_table(off)]
    if ev:
        lines += _eval_block(meta, ev)
    elif kept:
        lines += kept
    if not vm and not ev and not kept:
        lines.append(f"- {NR}: run `pneumo evaluate BUNDLE --split test` and `pneumo card BUNDLE --eval DIR`.")
    return lines


def _eval_block(meta: dict, ev: dict) -> list[str]:
    """An ``evaluate`` metrics.json as Markdown, with warnings if it no longer matches the bundle."""
    d, b, eb = ev.get("data", {}), ev.get("bootstrap", {}), ev.get("bundle", {})
    lines = [f"### Evaluation on split `{d.get('split') or 'all'}` of `{d.get('source')}`", ""]
    if eb.get("weights_sha256") and eb["weights_sha256"] != meta.get("weights_sha256"):
        lines += [f"**Warning: this evaluation was run on different weights "
                  f"(sha256 {eb['weights_sha256'][:16]}…), not on this bundle's.**", ""]
    if eb.get("temperature") is not None and float(eb["temperature"]) != float(meta.get("temperature", 1.0)):
        lines += [f"(Brier score and ECE below were computed at temperature {fmt(float(eb['temperature']), 3)}, "
                  "before the current calibration.)", ""]
    lines += [f"{d.get('n_images')} images ({d.get('n_pneumonia')} PNEUMONIA / {d.get('n_normal')} NORMAL) from "
              f"{d.get('n_patients')} patients; 95% CIs from {b.get('n_resamples')} patient-bootstrap resamples.",
              "", *_metrics_table(ev.get("metrics", {}))]
    c = ev.get("confusion")
    if c:
        lines += ["", f"Confusion: TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, FP {c['fp']}."]
    ps = ev.get("pathogen_sensitivity") or {}
    if ps:
        lines += ["", "Sensitivity per pathogen: " + "; ".join(
            f"{k} {fmt(v.get('value'))} [{fmt(v.get('lo'))}, {fmt(v.get('hi'))}] (n={v.get('n')})"
            for k, v in ps.items()) + "."]
    return lines


def _gate(meta: dict) -> list[str]:
    """The two questions asked before any finding, in the words the page and the API use."""
    gate, ood = meta.get("gate") or {}, meta.get("ood") or {}
    out = ["## Before any finding: two questions"]
    if gate.get("fitted"):
        ho = gate.get("held_out") or {}
        ext = gate.get("external") or {}
        out.append(f"- *Is this a frontal chest radiograph?* A gate independent of this model "
                   f"({gate.get('method', NR)}) refuses anything else as `NOT_A_CHEST_XRAY`, with no finding. "
                   f"It accepted {ho.get('accept_rate', float('nan')):.1%} of {ho.get('n', NR)} held-out training-set "
                   f"X-rays; other sources it learnt from: {', '.join(ext.get('sources') or []) or 'none'}.")
    else:
        out.append("- No chest-X-ray gate in this bundle: images are refused only by the population check below.")
    if ood.get("fitted") and not gate.get("fitted"):
        out.append(f"- A Mahalanobis score on the model's features "
                   f"(threshold {ood.get('threshold', float('nan')):.3g}) refuses films unlike the training X-rays.")
    pop = meta.get("population") or {}
    if pop.get("fitted") and gate.get("fitted"):
        out += _population(pop)
    elif ood.get("fitted"):
        out.append(f"- *Is it like the films the model was validated on?* A Mahalanobis score on the model's "
                   f"features (threshold {ood.get('threshold', float('nan')):.3g}, "
                   f"{ood.get('accept_rate_val', float('nan')):.1%} of validation films under it). "
                   "Above it the answer is given with `population: atypical` and the warning "
                   "\"outside the population this model was validated on: results may be unreliable\".")
    return out


def _population(pop: dict) -> list[str]:
    """The population check's card lines: method, thresholds, what it was fitted on, measured rates."""
    def r(x: dict | None) -> str:
        return NR if not x else (f"typical {x['typical']:.1%}, flagged {x['flagged']:.1%}, refused "
                                 f"{x['refused']:.1%} of {x['n']}")
    ff = pop.get("fit_films") or {}
    lines = [
        f"- *Is it like the films the model was validated on?* {pop.get('method', NR)}. A film is `atypical` — "
        "answered, but led everywhere by \"Outside the validated population — <reason>\" — when P(other population) > "
        f"{fmt(pop.get('flag_probability'), 3)} or the distance > {fmt(pop.get('flag_distance'), 2)}; it is "
        f"**refused** as too far outside when atypical with a gate score > {fmt(pop.get('refuse_gate'), 2)}, or "
        f"at a distance > {fmt(pop.get('refuse_distance'), 1)}.",
        f"- Fitted on: {ff.get('in_population', NR)}; other populations: {ff.get('other_populations', NR)} "
        f"(sources: {', '.join(pop.get('external_sources') or []) or NR}); thresholds on {ff.get('thresholds', NR)} "
        f"(target {fmt(pop.get('typical_target'), 3)} typical).",
        f"- Validation films under every acquisition shift: {r(pop.get('val_shifted'))}; official val originals "
        f"(full resolution, never fitted): {r(pop.get('val_originals'))}.",
    ]
    for src, x in (pop.get("held_out_sources") or {}).items():
        lines.append(f"- Refitted without `{src}`, that source's films: {r(x)}.")
    lines.append("- Not measured here: pediatric films from other hospitals (no such source in the fitting data); "
                 "treat the figures above as what the check does on sources like the ones it saw.")
    return lines


def _header_policy(meta: dict) -> list[str]:
    """The DICOM header policy (read before any pixel): what is refused, what is flagged, what a site changed."""
    hp = meta.get("header_policy")
    if not hp:
        return ["## DICOM header policy",
                "- Not recorded in this bundle: pneumo's defaults apply (see docs/inference.md)."]
    age = hp.get("age_years")
    lines = ["## DICOM header policy (read before any pixel is decoded)",
             f"- Refused: Modality other than {', '.join(hp.get('modalities') or [])}; "
             + ("lateral views (ViewPosition / view code); " if hp.get("refuse_lateral") else "")
             + f"BodyPartExamined other than {', '.join(p for p in hp.get('body_parts') or [] if p) or NR}.",
             ("- Flagged \"Outside the validated population\": patient age outside "
              f"{age[0]:g}–{age[1]:g} years with a tolerance of {hp.get('age_tolerance_years', 0):g} year(s)."
              if age else "- Age is not checked."),
             "- A missing attribute is never a reason (anonymised films often carry none)."]
    if hp.get("about"):
        lines.append(f"- Why this tolerance: {hp['about']}")
    if hp.get("overridden"):
        last = (hp.get("history") or [{}])[-1]
        lines.append(f"- **Overridden by the site**: {', '.join(hp['overridden'])} "
                     f"(last change {last.get('at', NR)}"
                     + (f": {last.get('note')}" if last.get("note") else "") + ").")
    return lines


def render_card(meta: dict, ev: dict | None = None, n_params: str = NR, kept: list[str] | None = None) -> str:
    """The card's Markdown from ``pneumo.json`` content and an optional evaluation ``metrics.json``
    (``kept``: an earlier card's evaluation subsection, used verbatim when ``ev`` is absent)."""
    parts = [
        f"# Model card: {meta.get('name', 'pneumo model')}",
        f"_Generated by `pneumo card` on {_dt.date.today().isoformat()}, following Mitchell et al. (2019)._",
        *_details(meta, n_params),
        "## Intended use",
        "- Decision support for clinicians reading **pediatric (ages 1–5) frontal chest X-rays**: flags images likely "
        "to show pneumonia. **Not a diagnosis**; a clinician makes the decision.",
        "- Intended users: radiologists, paediatricians, researchers evaluating triage aids.",
        "## Out-of-scope uses",
        "- Adults or older children; lateral or non-chest views; CT.",
        "- Diseases other than pneumonia (e.g. tuberculosis, COVID-19, effusion), "
        "or telling bacterial from viral pneumonia.",
        "- Use at another hospital or with other scanners without a local validation study.",
        "- Any autonomous decision without a clinician.",
        "## Factors",
        "- Relevant factors include age, scanner/hospital, view (AP/PA), image size and post-processing; only "
        "pathogen (bacteria/virus) is recorded in the data, and sensitivity per pathogen is in the evaluation report.",
        *_operating_point(meta),
        *_shift_suite(meta),
        *_data(meta),
        *_evaluation(meta, ev, kept),
        *_calibration(meta),
        *_gate(meta),
        *_header_policy(meta),
        "## Known limitations", LIMITATIONS,
        "## Ethical considerations", ETHICS,
        "## Citation",
        "- Kermany D. S., Goldbaum M., Cai W., et al. Identifying Medical Diagnoses and Treatable Diseases by "
        "Image-Based Deep Learning. *Cell* 172(5):1122–1131, 2018. doi:10.1016/j.cell.2018.02.010. "
        "Data: Kermany, Zhang, Goldbaum, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2 (CC BY 4.0).",
        "- Mitchell M., et al. Model Cards for Model Reporting. FAT* 2019. doi:10.1145/3287560.3287596.",
    ]
    return "\n".join(("\n" + p if p.startswith("#") else p).rstrip("\n") for p in parts).lstrip() + "\n"


EVAL_HEADING = "### Evaluation on split"


def previous_evaluation(bundle_dir: Path, meta: dict) -> list[str] | None:
    """The evaluation subsection of the bundle's current card, when that card was made from these
    weights: rewriting a card without ``--eval`` must not silently drop an evaluation it carried."""
    card = bundle_dir / CARD
    if not card.is_file() or derived_problem(bundle_dir, meta, CARD, meta.get("weights_sha256") or "") is not None:
        return None
    lines = card.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(EVAL_HEADING)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def write_card(bundle_dir: str | Path, eval_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write ``MODEL_CARD.md`` into the bundle; returns its path and where its evaluation came from
    (``"eval"``: ``eval_dir``; ``"kept"``: the previous card's; ``"none"``: validation metrics only)."""
    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    try:
        n_params = f"{count_params(load_bundle(bundle_dir).model):,}"
    except Exception:  # the card is still useful without a loadable model
        n_params = NR
    ev = _load_eval(Path(eval_dir) if eval_dir else None)
    kept = None if ev else previous_evaluation(bundle_dir, meta)
    text = render_card(meta, ev, n_params, kept)
    path = bundle_dir / CARD
    atomic_write_bytes(path, text.encode("utf-8"))
    record_derived(bundle_dir, CARD)
    return path, "eval" if ev else "kept" if kept else "none"
