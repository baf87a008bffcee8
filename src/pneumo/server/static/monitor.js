// pneumo monitor page: GET /api/v1/monitor and lay the figures out; the alarm is the first thing shown.
"use strict";

const $ = (id) => document.getElementById(id);
const rate = (x) => (x == null ? "—" : (x * 100).toFixed(1) + "%");
const fixed = (x, d = 3) => (x == null ? "—" : Number(x).toFixed(d));

function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
  return tr;
}

function histogram(h) {
  const bars = $("hist"), axis = $("hist-axis"), body = document.querySelector("#hist-table tbody");
  bars.replaceChildren(); axis.replaceChildren(); body.replaceChildren();
  if (!h) { body.append(row(["no scored images or no reference", "", ""])); return; }
  const top = Math.max(...h.live, ...h.reference, 0.01);
  h.live.forEach((live, i) => {
    const bin = document.createElement("div"); bin.className = "hist-bin";
    for (const [cls, v] of [["live", live], ["ref", h.reference[i]]]) {
      const s = document.createElement("span"); s.className = cls; s.style.height = (100 * v / top) + "%"; bin.append(s);
    }
    bars.append(bin);
    const band = `${Math.round(h.edges[i] * 100)}–${Math.round(h.edges[i + 1] * 100)}%`;
    const lab = document.createElement("span"); lab.textContent = Math.round(h.edges[i] * 100) + "%"; axis.append(lab);
    body.append(row([band, rate(live), rate(h.reference[i])]));
  });
}

let exact = null;  // ?since=…&until=… from the address, used verbatim until the form is changed

async function load() {
  const since = $("since").value;
  const bucket = $("bucket").value;
  const q = new URLSearchParams({ bucket });
  if (exact && exact.get("since")) q.set("since", exact.get("since")); else if (since) q.set("since", since);
  if (exact && exact.get("until")) q.set("until", exact.get("until"));
  $("mon-state").textContent = "Loading…";
  try {
    const r = await fetch("/api/v1/monitor?" + q.toString());
    const m = await r.json();
    if (!r.ok) throw new Error(m.error ? m.error.message : r.statusText);
    $("mon-error").hidden = true;
    const o = m.overall;
    $("mon-state").textContent = `Model ${m.model.name || "?"} · ${o.requests} requests since ${m.since.slice(0, 16).replace("T", " ")} UTC`;
    $("alarm").hidden = m.alarms.length === 0;
    $("calm").hidden = m.alarms.length !== 0;
    $("alarm-list").replaceChildren(...m.alarms.map((a) => { const li = document.createElement("li"); li.textContent = a.message; return li; }));
    $("calm-text").textContent = "— every figure is within its bound" + (m.notes.length ? " (see the notes below)." : ".");
    $("notes").replaceChildren(...m.notes.map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
    const ref = m.reference;
    facts($("overall"), [
      ["Requests", `${o.requests} (${o.images} distinct images)`],
      ["Refused as not a chest X-ray", `${rate(o.refusal_rate)} (${o.refused})`],
      ["Atypical for the training population", o.atypical_rate == null ? "not recorded by this server" : rate(o.atypical_rate)],
      ["Flagged or refused, by reason", Object.entries(o.flags_by_reason || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "none"],
      ["Reported as pneumonia", rate(o.positive_rate) + (ref && ref.positive_rate != null ? ` (validation: ${rate(ref.positive_rate)})` : "")],
      ["Errors", `${rate(o.error_rate)} (${o.errors})` + (o.errors ? " — " + Object.entries(o.error_codes).map(([k, v]) => `${k}: ${v}`).join(", ") : "")],
      ["Latency p50 / p95", `${fixed(o.latency_p50_ms, 0)} / ${fixed(o.latency_p95_ms, 0)} ms`],
      ["Scored images", String(o.n_scored)],
      ["Population stability index (PSI)", fixed(o.psi)],
      ["Kolmogorov–Smirnov statistic", o.ks == null ? "—" : `${fixed(o.ks)} (p ${o.ks_p})`],
      ["Validation reference", ref ? `${ref.n} images (${ref.split})` : "none stored in the bundle"],
    ]);
    histogram(o.histogram);
    $("bucket-name").textContent = m.bucket;
    document.querySelector("#buckets tbody").replaceChildren(...m.buckets.map((b) => row([
      b.start, b.requests, rate(b.refusal_rate), rate(b.atypical_rate), rate(b.positive_rate), b.errors,
      `${fixed(b.latency_p50_ms, 0)} / ${fixed(b.latency_p95_ms, 0)}`, fixed(b.psi, 2), fixed(b.ks, 2), b.alarms.join(", ") || "—",
    ])));
    facts($("bounds"), Object.entries(m.bounds).map(([k, v]) => [k, String(v)]));
  } catch (e) {
    $("mon-state").textContent = "";
    $("mon-error").textContent = "Could not load the monitoring figures: " + e.message;
    $("mon-error").hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("since")) $("since").value = params.get("since").slice(0, 10);
  if (params.get("bucket")) $("bucket").value = params.get("bucket");
  exact = params;
  $("mon-form").addEventListener("submit", (e) => { e.preventDefault(); exact = null; load(); });
  load();
});
