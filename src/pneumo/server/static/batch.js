// pneumo batch: many files (or a folder) through the same /api/v1/predict, two at a time so a batch of
// hundreds never floods the server, into a sortable table with CSV export. A row opens in the viewer.
"use strict";

// Files are taken by their content, not their name: PACS exports are often DICOM without an extension.
async function pneumoKind(file) {
  if (file.size === 0) return { ok: false, why: "empty file" };
  const b = new Uint8Array(await file.slice(0, 132).arrayBuffer());
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { ok: true };  // JPEG
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return { ok: true };  // PNG
  if (b.length >= 132 && String.fromCharCode(b[128], b[129], b[130], b[131]) === "DICM") return { ok: true };
  if ((b[0] === 0x08 || b[0] === 0x02) && b[1] === 0x00 && b[3] === 0x00) return { ok: true };  // DICOM without preamble
  return { ok: false, why: "not a JPEG, PNG or DICOM file (by its content)" };
}

function pneumoGate(res) {
  if (!res) return "";
  if (res.label === "not_a_chest_xray") return "refused: not a chest X-ray";
  const parts = [res.ood && res.ood.available ? "passed" : "no check"];
  const pop = res.population && typeof res.population === "object" ? (res.population.label || res.population.value)
    : res.population;
  if (pop) parts.push(String(pop));
  return parts.join(", ");
}

function pneumoVerdict(label) {
  return { PNEUMONIA: "Pneumonia suspected", NORMAL: "No pneumonia detected", not_a_chest_xray: "Not a chest X-ray" }[label]
    || label || "";
}

// What a row or a history entry says first: a flagged film leads with "Outside the validated population",
// a refused one with its headline (issue 21: the verdict must never stand alone for such films).
function pneumoStatusVerdict(res) {
  if (!res) return "";
  const head = (res.headline || "").split(" — ")[0];
  if (res.status === "flagged") return `${head || "Outside the validated population"} (${pneumoVerdict(res.label).toLowerCase()})`;
  if (res.status === "refused") return head || pneumoVerdict(res.label);
  return pneumoVerdict(res.label);
}

const PneumoBatch = (() => {
  const $ = (id) => document.getElementById(id);
  const IN_FLIGHT = 2;
  const MAX_RETRIES = 5;
  let rows = [];
  let queue = [];
  let running = 0;
  let started = 0;
  let sortKey = null, sortDir = 1;
  let hooks = { open: () => {}, done: () => {} };

  function status() {
    const done = rows.filter((r) => r.state !== "waiting" && r.state !== "running").length;
    const secs = (performance.now() - started) / 1000;
    let text = `${done} of ${rows.length} done`;
    if (running) text += ` · ${running} in flight`;
    if (done === rows.length && rows.length) {
      text = `${rows.length} files in ${secs.toFixed(1)} s (${(rows.length / secs).toFixed(1)} files/s)`;
      const failed = rows.filter((r) => r.state === "error").length;
      if (failed) text += ` · ${failed} could not be analysed`;
    }
    $("batch-status").textContent = text;
    $("batch-csv").disabled = done === 0;
  }

  async function post(row) {
    for (let attempt = 0; ; attempt++) {
      const body = new FormData();
      body.append("file", row.file, row.file.name);
      const r = await fetch("/api/v1/predict", { method: "POST", body });
      let res = null;
      try { res = await r.json(); } catch { res = null; }
      if (r.status === 503 && attempt < MAX_RETRIES) {
        const wait = Number(r.headers.get("Retry-After")) || 2;
        await new Promise((ok) => setTimeout(ok, wait * 1000));
        continue;
      }
      if (!r.ok) throw new Error(res && res.error ? res.error.message : `${r.status} ${r.statusText}`);
      return res;
    }
  }

  async function worker() {
    while (queue.length) {
      const row = queue.shift();
      row.state = "running";
      running++;
      status();
      try {
        row.res = await post(row);
        row.state = "done";
        hooks.done(row.file, row.res);
      } catch (e) {
        row.state = "error";
        row.error = e.message;
      }
      running--;
      draw();
    }
  }

  function value(row, key) {
    if (key === "name") return row.file.name.toLowerCase();
    if (key === "verdict") return row.res ? row.res.label : "~" + row.state;
    if (key === "probability") return row.res && row.res.probability != null ? row.res.probability : -1;
    if (key === "gate") return pneumoGate(row.res);
    return 0;
  }

  function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.append(td); return td; }

  function draw() {
    const order = rows.slice();
    if (sortKey) order.sort((a, b) => (value(a, sortKey) < value(b, sortKey) ? -sortDir : value(a, sortKey) > value(b, sortKey) ? sortDir : 0));
    const body = $("batch-body");
    body.replaceChildren(...order.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.index = String(rows.indexOf(row));
      const first = document.createElement("td");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "linkish";
      open.textContent = row.file.webkitRelativePath || row.file.name;
      open.addEventListener("click", (e) => { e.stopPropagation(); hooks.open(row.file); });
      first.append(open);
      tr.append(first);
      const verdict = row.res ? pneumoStatusVerdict(row.res) : row.state === "error" ? "Error: " + row.error : row.state + "…";
      cell(tr, verdict).className = !row.res ? "" : row.res.status === "flagged" ? "flagged"
        : { PNEUMONIA: "pos", NORMAL: "neg" }[row.res.label] || "ood";
      cell(tr, row.res && row.res.probability != null ? (row.res.probability * 100).toFixed(1) + "%" : "—");
      cell(tr, pneumoGate(row.res));
      tr.addEventListener("click", () => hooks.open(row.file));
      return tr;
    }));
    status();
  }

  function sortBy(key) {
    sortDir = sortKey === key ? -sortDir : 1;
    sortKey = key;
    document.querySelectorAll("#batch-table th").forEach((th) => {
      const k = th.querySelector("button").dataset.key;
      th.setAttribute("aria-sort", k === key ? (sortDir > 0 ? "ascending" : "descending") : "none");
    });
    draw();
  }

  function csvField(v) {
    const s = v == null ? "" : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    const head = ["file", "status", "headline", "label", "probability", "threshold", "gate", "request_id", "error"];
    const lines = [head.join(",")];
    for (const r of rows) {
      const res = r.res || {};
      lines.push([r.file.webkitRelativePath || r.file.name, res.status, res.headline, res.label, res.probability,
                  res.threshold, pneumoGate(r.res), res.request_id, r.error].map(csvField).join(","));
    }
    const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "pneumo-batch.csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function showSkipped(skipped) {
    let box = $("batch-skipped");
    if (!box) {
      box = document.createElement("details");
      box.id = "batch-skipped";
      $("batch-status").after(box);
    }
    box.hidden = !skipped.length;
    const summary = document.createElement("summary");
    summary.textContent = `${skipped.length} file(s) skipped`;
    const list = document.createElement("ul");
    list.append(...skipped.map(({ file, why }) => {
      const li = document.createElement("li");
      li.textContent = `${file.webkitRelativePath || file.name}: ${why}`;
      return li;
    }));
    box.replaceChildren(summary, list);
  }

  async function start(files) {
    const kinds = await Promise.all(files.map((f) => pneumoKind(f).catch(() => ({ ok: false, why: "could not be read" }))));
    const picked = files.filter((f, i) => kinds[i].ok);
    showSkipped(files.map((file, i) => ({ file, why: kinds[i].why })).filter((_, i) => !kinds[i].ok));
    rows = picked.map((file) => ({ file, state: "waiting", res: null, error: null }));
    queue = rows.slice();
    sortKey = null;
    started = performance.now();
    $("batch").hidden = false;
    draw();
    for (let i = 0; i < Math.min(IN_FLIGHT, queue.length); i++) worker();
    return picked.length;
  }

  function init(h) {
    hooks = h;
    document.querySelectorAll("#batch-table th button").forEach((b) => b.addEventListener("click", () => sortBy(b.dataset.key)));
    $("batch-csv").addEventListener("click", exportCsv);
    $("batch-stop").addEventListener("click", () => {
      for (const r of queue) { r.state = "error"; r.error = "stopped"; }
      queue = [];
      draw();
    });
  }

  return { init, start };
})();
