// pneumo film viewer: zoom and pan (wheel, pinch, drag, double-click to fit, keys) up to full resolution,
// window/level applied to the displayed pixels only (a 256-entry lookup table on a canvas), and the heatmap
// layer overlaid or side by side. Nothing here talks to the server: the result never depends on the display.
"use strict";

const PneumoViewer = (() => {
  const $ = (id) => document.getElementById(id);
  const PRESETS = { full: [256, 128], lung: [150, 80], dense: [150, 180], contrast: [110, 128] };
  const MAX_PIXELS = 16e6;  // larger films are drawn at 4096 px on the long side
  const st = { w: 0, h: 0, scale: 1, tx: 0, ty: 0, fit: 1, atFit: true, layout: "overlay", drag: "pan",
               width: 256, level: 128, invert: false, hasHeat: false, queued: false };
  let grey = null;      // Uint8Array of the source's grey values, w×h
  let out = null;       // ImageData written through the window/level table
  let auto = [256, 128];
  const pointers = new Map();
  let gesture = null;

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const paneA = () => $("pane-a");

  function fitScale() {
    const p = paneA();
    return Math.min(p.clientWidth / st.w, p.clientHeight / st.h) || 1;
  }

  function minScale() { return Math.min(st.fit, 1); }
  function maxScale() { return Math.max(2, st.fit); }  // full resolution is 1; twice that to inspect pixels

  function clampPan() {
    const p = paneA();
    const iw = st.w * st.scale, ih = st.h * st.scale;
    st.tx = iw <= p.clientWidth ? (p.clientWidth - iw) / 2 : clamp(st.tx, p.clientWidth - iw, 0);
    st.ty = ih <= p.clientHeight ? (p.clientHeight - ih) / 2 : clamp(st.ty, p.clientHeight - ih, 0);
  }

  function apply() {
    clampPan();
    const t = `translate(${st.tx}px, ${st.ty}px) scale(${st.scale})`;
    $("world-a").style.transform = t;
    $("world-b").style.transform = t;
    const p = paneA();
    p.dataset.scale = st.scale.toFixed(4);
    p.dataset.tx = st.tx.toFixed(1);
    p.dataset.ty = st.ty.toFixed(1);
    $("zoom-readout").textContent = `${Math.round(st.scale * 100)}%` + (st.atFit ? " (fit)" : "");
  }

  function zoomAt(factor, cx, cy) {
    const ns = clamp(st.scale * factor, minScale(), maxScale());
    st.tx = cx - ((cx - st.tx) * ns) / st.scale;
    st.ty = cy - ((cy - st.ty) * ns) / st.scale;
    st.scale = ns;
    st.atFit = Math.abs(ns - st.fit) < 1e-6;
    apply();
  }

  function centre() { const p = paneA(); return [p.clientWidth / 2, p.clientHeight / 2]; }
  function fit() { if (!grey) return; st.fit = fitScale(); st.scale = st.fit; st.atFit = true; apply(); }
  function full() { const [cx, cy] = centre(); zoomAt(1 / st.scale, cx, cy); }
  function pan(dx, dy) { st.tx += dx; st.ty += dy; apply(); }

  // -- window/level ------------------------------------------------------------------------------
  function render() {
    st.queued = false;
    if (!grey) return;
    const lut = new Uint8ClampedArray(256);
    const lo = st.level - st.width / 2;
    for (let i = 0; i < 256; i++) {
      const v = clamp(((i - lo) * 255) / Math.max(1, st.width - 1), 0, 255);
      lut[i] = st.invert ? 255 - v : v;
    }
    const d = out.data;
    for (let j = 0, i = 0; j < grey.length; j++, i += 4) {
      const v = lut[grey[j]];
      d[i] = v; d[i + 1] = v; d[i + 2] = v; d[i + 3] = 255;
    }
    $("film-a").getContext("2d").putImageData(out, 0, 0);
    $("film-b").getContext("2d").drawImage($("film-a"), 0, 0);
    const pa = paneA();
    pa.dataset.window = String(Math.round(st.width));
    pa.dataset.level = String(Math.round(st.level));
  }

  function schedule() { if (!st.queued) { st.queued = true; requestAnimationFrame(render); } }

  function setWL(width, level, preset) {
    st.width = clamp(Math.round(width), 8, 256);
    st.level = clamp(Math.round(level), 0, 255);
    $("wl-width").value = String(st.width);
    $("wl-level").value = String(st.level);
    $("wl-width").setAttribute("aria-valuetext", `${st.width} grey levels`);
    $("wl-level").setAttribute("aria-valuetext", `centre ${st.level} of 255`);
    $("wl-preset").value = preset || "custom";
    schedule();
  }

  function preset(name) {
    if (name === "auto") setWL(auto[0], auto[1], "auto");
    else if (PRESETS[name]) setWL(PRESETS[name][0], PRESETS[name][1], name);
  }

  function autoRange() {
    const hist = new Uint32Array(256);
    for (let j = 0; j < grey.length; j++) hist[grey[j]]++;
    let acc = 0, lo = 0, hi = 255;
    for (let i = 0; i < 256; i++) { acc += hist[i]; if (acc <= grey.length * 0.01) lo = i; if (acc < grey.length * 0.99) hi = i + 1; }
    return [Math.max(8, hi - lo), (hi + lo) / 2];
  }

  // -- heatmap layer -----------------------------------------------------------------------------
  function updateHeat() {
    const on = st.hasHeat && $("heat-on").checked;
    const v = Number($("opacity").value);
    $("opacity").setAttribute("aria-valuetext", v + "%");
    for (const id of ["heat", "heat-b"]) $(id).style.opacity = String(v / 100);
    $("heat").hidden = !(on && st.layout === "overlay");
    $("heat-b").hidden = !on;
  }

  function setLayout(layout) {
    st.layout = layout;
    $("pane-b").hidden = layout !== "side";
    $("panes").classList.toggle("side", layout === "side");
    updateHeat();
    requestAnimationFrame(fit);
  }

  // -- pointer, wheel and keys -------------------------------------------------------------------
  function local(pane, e) { const r = pane.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }

  function onDown(e) {
    if (!grey) return;
    e.currentTarget.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, local(e.currentTarget, e));
    startGesture(e.currentTarget);
  }

  function startGesture(pane) {
    const pts = [...pointers.values()];
    if (pts.length >= 2) {
      const [a, b] = pts;
      gesture = { kind: "pinch", dist: Math.hypot(a[0] - b[0], a[1] - b[1]) || 1, scale: st.scale };
    } else if (pts.length === 1) {
      gesture = { kind: st.drag, x: pts[0][0], y: pts[0][1], tx: st.tx, ty: st.ty, width: st.width, level: st.level, pane };
    } else gesture = null;
  }

  function onMove(e) {
    if (!pointers.has(e.pointerId) || !gesture) return;
    pointers.set(e.pointerId, local(e.currentTarget, e));
    const pts = [...pointers.values()];
    if (gesture.kind === "pinch" && pts.length >= 2) {
      const [a, b] = pts;
      const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
      zoomAt((gesture.scale * d) / gesture.dist / st.scale, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2);
    } else if (gesture.kind === "pan") {
      st.tx = gesture.tx + pts[0][0] - gesture.x;
      st.ty = gesture.ty + pts[0][1] - gesture.y;
      st.atFit = false;
      apply();
    } else if (gesture.kind === "wl") {
      setWL(gesture.width + (pts[0][0] - gesture.x), gesture.level - (pts[0][1] - gesture.y));
    }
  }

  function onUp(e) {
    pointers.delete(e.pointerId);
    startGesture(e.currentTarget);
  }

  function onWheel(e) {
    if (!grey) return;
    e.preventDefault();
    const [cx, cy] = local(e.currentTarget, e);
    zoomAt(Math.exp(-e.deltaY * 0.0015), cx, cy);
  }

  function onKey(e) {
    if (!grey) return;
    const [cx, cy] = centre();
    const step = paneA().clientWidth * 0.1;
    const keys = {
      "+": () => zoomAt(1.25, cx, cy), "=": () => zoomAt(1.25, cx, cy), "-": () => zoomAt(0.8, cx, cy),
      "0": fit, "1": full, ArrowLeft: () => pan(step, 0), ArrowRight: () => pan(-step, 0),
      ArrowUp: () => pan(0, step), ArrowDown: () => pan(0, -step),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  }

  // -- public ------------------------------------------------------------------------------------
  function load(img, heatSrc) {
    let w = img.naturalWidth, h = img.naturalHeight;
    if (w * h > MAX_PIXELS) { const s = Math.sqrt(MAX_PIXELS / (w * h)); w = Math.round(w * s); h = Math.round(h * s); }
    st.w = w; st.h = h;
    for (const id of ["film-a", "film-b"]) { $(id).width = w; $(id).height = h; }
    const ctx = $("film-a").getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0, w, h);
    const rgba = ctx.getImageData(0, 0, w, h).data;
    grey = new Uint8Array(w * h);
    for (let j = 0, i = 0; j < grey.length; j++, i += 4) grey[j] = (rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3;
    out = ctx.createImageData(w, h);
    auto = autoRange();
    for (const id of ["heat", "heat-b"]) {
      const el = $(id);
      el.style.width = w + "px";
      el.style.height = h + "px";
      if (heatSrc) el.src = heatSrc; else el.removeAttribute("src");
    }
    st.hasHeat = Boolean(heatSrc);
    $("heat-controls").disabled = !st.hasHeat;
    $("viewer").hidden = false;
    st.invert = false;
    $("wl-invert").checked = false;
    setWL(256, 128, "full");
    render();
    updateHeat();
    fit();
  }

  function thumbnail(height = 64) {
    if (!grey) return null;
    const c = document.createElement("canvas");
    c.height = height;
    c.width = Math.max(1, Math.round((st.w * height) / st.h));
    c.getContext("2d").drawImage($("film-a"), 0, 0, c.width, c.height);
    return c.toDataURL("image/jpeg", 0.7);
  }

  function init() {
    for (const id of ["pane-a", "pane-b"]) {
      const p = $(id);
      p.addEventListener("pointerdown", onDown);
      p.addEventListener("pointermove", onMove);
      p.addEventListener("pointerup", onUp);
      p.addEventListener("pointercancel", onUp);
      p.addEventListener("wheel", onWheel, { passive: false });
      p.addEventListener("dblclick", fit);
      p.addEventListener("keydown", onKey);
    }
    $("zoom-in").addEventListener("click", () => { const [x, y] = centre(); zoomAt(1.25, x, y); });
    $("zoom-out").addEventListener("click", () => { const [x, y] = centre(); zoomAt(0.8, x, y); });
    $("zoom-fit").addEventListener("click", fit);
    $("zoom-full").addEventListener("click", full);
    document.querySelectorAll("input[name=layout]").forEach((r) => r.addEventListener("change", () => setLayout(r.value)));
    document.querySelectorAll("input[name=drag]").forEach((r) => r.addEventListener("change", () => {
      st.drag = r.value;
      $("panes").classList.toggle("wl-mode", r.value === "wl");
    }));
    $("wl-preset").addEventListener("change", (e) => preset(e.target.value));
    $("wl-width").addEventListener("input", (e) => setWL(Number(e.target.value), st.level));
    $("wl-level").addEventListener("input", (e) => setWL(st.width, Number(e.target.value)));
    $("wl-invert").addEventListener("change", (e) => { st.invert = e.target.checked; schedule(); });
    $("heat-on").addEventListener("change", updateHeat);
    $("opacity").addEventListener("input", updateHeat);
    window.addEventListener("resize", () => { if (st.atFit) fit(); else apply(); });
    setWL(256, 128, "full");
  }

  return { init, load, thumbnail, fit, preset };
})();
