// pneumo web page: pick or drop an X-ray, POST it to /api/v1/predict, show the answer. No framework, no network
// beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x * 100).toFixed(1) + "%";
const num = (x) => (x == null ? "?" : Number(x).toFixed(2));
let maxBytes = 25 * 1024 * 1024;
let calibrated = false;

function show(el, on) { el.hidden = !on; }

function setError(message) {
  $("error").textContent = message;
  show($("error"), Boolean(message));
}

async function loadModel() {
  try {
    const r = await fetch("/api/v1/model");
    const m = await r.json();
    if (!r.ok) throw new Error((m.error && m.error.message) || r.statusText);
    const id = `Model ${m.name} · version ${m.version} · ${m.sha256.slice(0, 12)}`;
    $("model-line").textContent = id;
    $("model-foot").textContent = id;
    calibrated = Boolean(m.calibration) || m.temperature !== 1;
    const op = m.operating_point;
    const parts = [`Pneumonia is reported when the probability is at least ${pct(op.threshold)}`];
    if (op.rule) parts[0] += ` (rule: ${op.rule})`;
    if (op.val_sensitivity != null && op.val_specificity != null) {
      parts.push(`On validation images at this point: sensitivity ${pct(op.val_sensitivity)}, ` +
                 `specificity ${pct(op.val_specificity)}.`);
    }
    $("op-line").textContent = parts.join(". ");
    if (m.limits && m.limits.max_upload_mb) {
      maxBytes = m.limits.max_upload_mb * 1024 * 1024;
      $("max-mb").textContent = String(m.limits.max_upload_mb);
    }
  } catch (e) {
    $("model-line").textContent = "Model information unavailable";
    setError("Could not reach the pneumo server: " + e.message);
  }
}

function labelText(res) {
  if (res.label === "PNEUMONIA") return ["Pneumonia suspected", "pos"];
  if (res.label === "NORMAL") return ["No pneumonia detected", "neg"];
  return ["Not a chest X-ray", "ood"];
}

function render(res) {
  const [text, cls] = labelText(res);
  const label = $("label");
  label.textContent = text;
  label.className = "label " + cls;
  const refused = res.label === "not_a_chest_xray";
  show($("prob-block"), !refused);
  show($("refusal"), refused);
  $("refusal").textContent = refused ? res.message : "";
  if (!refused) {
    $("prob").textContent = pct(res.probability);
    $("prob-fill").style.width = pct(res.probability);
    $("thr-mark").style.left = pct(res.threshold);
    $("threshold-line").textContent =
      `The marker is the operating threshold (${pct(res.threshold)}). ` +
      (calibrated ? "Probabilities are calibrated on validation data." : "This model's probabilities are not calibrated.");
  }
  const warn = $("warnings");
  warn.replaceChildren(...res.warnings.map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
  const im = res.image;
  $("img-info").textContent = `${im.format}, ${im.width}×${im.height} px`;
  const o = res.ood;
  $("ood-info").textContent = !o.available ? "not available for this model"
    : `${o.flag ? "failed: not like a chest X-ray" : "passed"} (score ${num(o.score)}, limit ${num(o.threshold)})`;
  $("req-info").textContent = `${res.request_id.slice(0, 12)} · ${Math.round(res.latency_ms)} ms`;
  if (im.display_png) {
    $("xray").src = "data:image/png;base64," + im.display_png;
    show($("stage"), true);
  }
  const hasHeat = Boolean(res.heatmap);
  $("heat-controls").disabled = !hasHeat;
  if (hasHeat) $("heat").src = "data:image/png;base64," + res.heatmap.png;
  updateHeat(hasHeat);
  show($("result"), true);
}

function updateHeat(hasHeat) {
  const on = hasHeat && $("heat-on").checked;
  const v = Number($("opacity").value);
  $("heat").style.opacity = String(v / 100);
  $("opacity").setAttribute("aria-valuetext", v + "%");
  show($("heat"), on);
}

async function analyse(file) {
  setError("");
  show($("result"), false);
  if (!file) return;
  if (file.size === 0) { setError(`“${file.name}” is empty (0 bytes). Choose a JPEG, PNG or DICOM chest X-ray.`); return; }
  if (file.size > maxBytes) {
    setError(`“${file.name}” is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${maxBytes / 1048576} MB.`);
    return;
  }
  $("status").textContent = `Analysing ${file.name}…`;
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const r = await fetch("/api/v1/predict?heatmap=true&display=true", { method: "POST", body });
    let res;
    try { res = await r.json(); } catch { res = null; }
    if (!r.ok) {
      const msg = res && res.error ? res.error.message : `The server answered ${r.status} ${r.statusText}.`;
      show($("stage"), false);
      $("status").textContent = `Could not analyse ${file.name}.`;
      setError(msg);
      return;
    }
    $("status").textContent = `Result for ${file.name}:`;
    try { render(res); } catch (e) { setError("The result could not be displayed: " + e.message); }
  } catch (e) {
    $("status").textContent = "";
    setError("The request failed: " + e.message + ". Is the pneumo server still running?");
  }
}

function init() {
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => analyse(input.files[0]));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => {
    const files = e.dataTransfer.files;
    if (files.length !== 1) { setError("Drop exactly one image."); return; }
    analyse(files[0]);
  });
  $("heat-on").addEventListener("change", () => updateHeat(!$("heat-controls").disabled));
  $("opacity").addEventListener("input", () => updateHeat(!$("heat-controls").disabled));
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
