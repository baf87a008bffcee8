// pneumo web page: pick or drop X-rays, POST them to /api/v1/predict, show the answer in the viewer (one file)
// or the batch table (several). History lives in this tab's sessionStorage only. No network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x * 100).toFixed(1) + "%";
const num = (x) => (x == null ? "?" : Number(x).toFixed(2));
const HISTORY_KEY = "pneumo.history";
const HISTORY_MAX = 50;
let maxBytes = 25 * 1024 * 1024;
let calibrated = false;
let prevalence = null;
let current = null;           // the File shown in the viewer
const filesById = new Map();  // history id → File, for re-opening during this page's life

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
    prevalence = m.calibration && m.calibration.prevalence != null ? m.calibration.prevalence : null;
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
    $("prevalence-line").textContent = prevalenceNote();
    $("threshold-line").textContent = `The black mark is the decision threshold (${pct(res.threshold)}).`;
  }
  show($("legend"), Boolean(res.heatmap));
  if (res.heatmap) {
    const against = res.heatmap.target === "normal";
    $("legend-high").textContent = `strongest evidence ${against ? "against" : "for"} pneumonia`;
    $("legend-what").textContent = res.heatmap.shows ||
      "Evidence for pneumonia: red where the film most raised the pneumonia score.";
  }
  const warn = $("warnings");
  warn.replaceChildren(...res.warnings.map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
  const im = res.image;
  $("img-info").textContent = `${im.format}, ${im.width}×${im.height} px`;
  const o = res.ood;
  $("ood-info").textContent = !o.available ? "no out-of-distribution check in this model"
    : `${o.flag ? "refused: not like a chest X-ray" : "passed"} (score ${num(o.score)}, limit ${num(o.threshold)})` +
      (pneumoGate(res).split(", ")[1] ? `; population: ${pneumoGate(res).split(", ")[1]}` : "");
  $("req-info").textContent = `${res.request_id.slice(0, 12)} · ${Math.round(res.latency_ms)} ms`;
  show($("result"), true);
  show($("result-details"), true);
}

// What the probability assumes, in words, next to the number: calibrated at the training prevalence.
function prevalenceNote() {
  if (!calibrated) return "This model's probabilities are not calibrated: read them as a score, not a chance.";
  if (prevalence == null) return "Calibrated on validation films.";
  const n = Math.round(prevalence * 100);
  return `This assumes that about ${n} in 100 children X-rayed have pneumonia, as in the films the model ` +
    "learnt from. Where fewer do, the real chance is lower.";
}

// The film pane ends at the bottom of the window, so the film and the verdict share one screen.
function sizePanes() {
  if ($("viewer").hidden) return;
  const top = $("pane-a").getBoundingClientRect().top + window.scrollY;
  const h = Math.max(240, Math.floor(window.innerHeight - top - 12));
  document.documentElement.style.setProperty("--pane-h", `${h}px`);
}

function decoded(src) {
  return new Promise((ok, fail) => {
    const img = new Image();
    img.onload = () => ok(img);
    img.onerror = () => fail(new Error("the browser could not decode the image"));
    img.src = src;
  });
}

async function showFilm(file, res) {
  const displaySrc = res.image.display_png ? "data:image/png;base64," + res.image.display_png : null;
  if (displaySrc) $("xray").src = displaySrc;
  let img = null;
  if (res.image.format !== "DICOM") {  // the original file at full resolution, when it is what the model read
    const url = URL.createObjectURL(file);
    try {
      const full = await decoded(url);
      if (full.naturalWidth === res.image.width && full.naturalHeight === res.image.height) img = full;
    } catch { img = null; }
    URL.revokeObjectURL(url);
  }
  if (!img && displaySrc) img = await decoded(displaySrc);
  if (!img) return;
  PneumoViewer.load(img, res.heatmap ? "data:image/png;base64," + res.heatmap.png : null);
  sizePanes();
  PneumoViewer.fit();
  $("heat").alt = res.heatmap ? "Heatmap of the regions that most influenced the model" : "";
}

function checkSize(file) {
  if (file.size === 0) return `“${file.name}” is empty (0 bytes). Choose a JPEG, PNG or DICOM chest X-ray.`;
  if (file.size > maxBytes) return `“${file.name}” is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${maxBytes / 1048576} MB.`;
  return "";
}

async function analyse(file) {
  setError("");
  show($("result"), false);
  show($("result-details"), false);
  if (!file) return;
  const problem = checkSize(file);
  if (problem) { setError(problem); return; }
  $("status").textContent = `Analysing ${file.name}…`;
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const r = await fetch("/api/v1/predict?heatmap=true&display=true", { method: "POST", body });
    let res;
    try { res = await r.json(); } catch { res = null; }
    if (!r.ok) {
      const msg = res && res.error ? res.error.message : `The server answered ${r.status} ${r.statusText}.`;
      show($("viewer"), false);
      $("status").textContent = `Could not analyse ${file.name}.`;
      setError(msg);
      return;
    }
    current = file;
    $("status").textContent = `Result for ${file.name}:`;
    try {
      render(res);
      await showFilm(file, res);
      remember(file, res, PneumoViewer.thumbnail());
    } catch (e) { setError("The result could not be displayed: " + e.message); }
  } catch (e) {
    $("status").textContent = "";
    setError("The request failed: " + e.message + ". Is the pneumo server still running?");
  }
}

async function downloadReport() {
  if (!current) return;
  const btn = $("report-btn");
  btn.disabled = true;
  $("status").textContent = `Preparing the report for ${current.name}…`;
  const body = new FormData();
  body.append("file", current, current.name);
  try {
    const r = await fetch("/api/v1/report?filename=" + encodeURIComponent(current.name), { method: "POST", body });
    if (!r.ok) {
      let res = null;
      try { res = await r.json(); } catch { res = null; }
      throw new Error(res && res.error ? res.error.message : `${r.status} ${r.statusText}`);
    }
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    const m = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
    a.download = m ? m[1] : "pneumo-report.pdf";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("status").textContent = `Report for ${current.name} downloaded.`;
  } catch (e) {
    setError("The report could not be made: " + e.message);
  } finally {
    btn.disabled = false;
  }
}

// -- history: this tab only ----------------------------------------------------------------------
function history() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]"); } catch { return []; }
}

function remember(file, res, thumb) {
  const id = res.request_id;
  filesById.set(id, file);
  const items = [{ id, name: file.name, time: new Date().toISOString(), label: res.label,
                   probability: res.probability, thumb }, ...history()].slice(0, HISTORY_MAX);
  try { sessionStorage.setItem(HISTORY_KEY, JSON.stringify(items)); } catch {  // full: drop the pictures
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(items.map((i) => ({ ...i, thumb: null }))));
  }
  drawHistory();
}

function drawHistory() {
  const list = $("history");
  const items = history();
  list.replaceChildren(...items.map((it) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "hist-item";
    const file = filesById.get(it.id);
    b.disabled = !file;
    b.title = file ? "Open in the viewer" : "Choose the file again to view it";
    if (it.thumb) { const im = document.createElement("img"); im.src = it.thumb; im.alt = ""; b.append(im); }
    const t = document.createElement("span");
    const when = new Date(it.time).toLocaleTimeString();
    const p = it.probability != null ? ` · ${pct(it.probability)}` : "";
    t.textContent = `${when} · ${it.name} · ${pneumoVerdict(it.label)}${p}`;
    b.append(t);
    if (file) b.addEventListener("click", () => analyse(file));
    li.append(b);
    return li;
  }));
  if (!items.length) { const li = document.createElement("li"); li.className = "small"; li.textContent = "No analyses yet."; list.append(li); }
}

// -- intake: one file → viewer, several or a folder → batch ---------------------------------------
function intake(files) {
  setError("");
  if (files.length === 0) return;
  if (files.length === 1) { analyse(files[0]); return; }
  const n = PneumoBatch.start(files);
  $("status").textContent = n ? `Batch of ${n} files started.` : "";
  if (!n) setError("None of these files is a JPEG, PNG or DICOM image (by name).");
}

async function entryFiles(entry) {
  if (entry.isFile) return new Promise((ok) => entry.file((f) => ok([f]), () => ok([])));
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((ok) => reader.readEntries(ok, () => ok([])));
    if (!batch.length) break;
    for (const e of batch) out.push(...(await entryFiles(e)));
  }
  return out;
}

async function dropped(e) {
  const items = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (!items.length) return intake([...e.dataTransfer.files]);
  const files = [];
  for (const entry of items) files.push(...(await entryFiles(entry)));
  intake(files);
}

function init() {
  const input = $("file");
  const drop = $("drop");
  window.addEventListener("resize", sizePanes);  // before the viewer's own listener, which refits
  PneumoViewer.init();
  PneumoBatch.init({ open: analyse, done: (file, res) => remember(file, res, null) });
  input.addEventListener("change", () => { intake([...input.files]); input.value = ""; });
  $("folder").addEventListener("change", (e) => { intake([...e.target.files]); e.target.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", dropped);
  $("report-btn").addEventListener("click", downloadReport);
  $("history-clear").addEventListener("click", () => { sessionStorage.removeItem(HISTORY_KEY); drawHistory(); });
  drawHistory();
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
