"""``report.html`` for ``pneumo data audit``: one self-contained offline page (every image inlined as PNG).

Sections: warnings, class balance, patients, image size/aspect, intensity histograms, sample films
beside their Canny edge maps (edges show burnt-in text, markers and borders a model could key on),
duplicates, cross-split patient ids, unreadable and skipped files.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pneumo.data.audit import AuditResult  # noqa: E402
from pneumo.fsutil import atomic_write_text  # noqa: E402
from pneumo.templates import render  # noqa: E402

COLOURS = {"NORMAL": "#3b7dd8", "PNEUMONIA": "#d8553b"}
MAX_ROWS = 200


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _array_png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def class_balance_figure(summary: dict) -> str:
    """Left: stacked image counts per split (NORMAL; PNEUMONIA by pathogen). Right: the same as shares."""
    splits = list(summary["counts"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    x = np.arange(len(splits))
    shades = {"bacteria": "#d8553b", "virus": "#f0a04b", "unknown": "#b58d86"}
    for ax, share in zip(axes, (False, True), strict=True):
        totals = (np.array([summary["counts"][s]["total"] for s in splits], dtype=float) if share
                  else np.ones(len(splits)))
        normal = np.array([summary["counts"][s]["NORMAL"] for s in splits]) / totals
        ax.bar(x, normal, 0.6, color=COLOURS["NORMAL"], label="NORMAL")
        bottom = normal.copy()
        for kind, colour in shades.items():
            vals = np.array([summary["pathogens"].get(s, {}).get(kind, 0) for s in splits]) / totals
            if vals.any():
                ax.bar(x, vals, 0.6, bottom=bottom, color=colour, label=f"PNEUMONIA ({kind})")
                bottom += vals
        ax.set_xticks(x, [f"{s}\n(n={summary['counts'][s]['total']})" for s in splits])
        ax.set_ylabel("share of images" if share else "images")
    axes[0].set_title("Images per split")
    axes[1].set_title("Class and pathogen shares per split")
    axes[1].legend(fontsize=8, loc="lower right")
    return _png(fig)


def geometry_figure(files: list[dict]) -> str:
    """One row per split: width, height, aspect histograms per class, and width×height scatter."""
    splits = sorted({f["split"] or "all" for f in files})
    fig, axes = plt.subplots(len(splits), 4, figsize=(14, 2.8 * len(splits)), squeeze=False)
    for row, split in zip(axes, splits, strict=True):
        recs = [f for f in files if (f["split"] or "all") == split]
        for cls, colour in COLOURS.items():
            sel = [f for f in recs if f["label"] == cls]
            if not sel:
                continue
            w = np.array([f["width"] for f in sel], dtype=float)
            h = np.array([f["height"] for f in sel], dtype=float)
            for ax, vals, name in ((row[0], w, "width (px)"), (row[1], h, "height (px)"),
                                   (row[2], w / h, "aspect (w/h)")):
                ax.hist(vals, bins=30, alpha=0.55, color=colour, label=cls)
                ax.set_xlabel(name)
            row[3].scatter(w, h, s=8, alpha=0.5, color=colour, label=cls)
        row[0].set_ylabel(f"{split}: images")
        row[3].set_xlabel("width")
        row[3].set_ylabel("height")
        row[3].legend(fontsize=8)
    fig.suptitle("Image geometry per split and class (a size or aspect that separates the classes is a shortcut)")
    fig.tight_layout()
    return _png(fig)


def intensity_figure(summary: dict) -> str:
    """Mean normalised grey-level histogram per split × class."""
    stats = summary["image_stats"]
    cells = [k for k in stats if not k.startswith("all/")] or list(stats)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    centres = (np.arange(summary["hist_bins"]) + 0.5) / summary["hist_bins"]
    styles = ["-", "--", ":", "-."]
    splits = sorted({k.split("/")[0] for k in cells})
    for key in cells:
        split, cls = key.split("/")
        ax.plot(centres, stats[key]["intensity_hist"], styles[splits.index(split) % 4], color=COLOURS[cls],
                label=f"{key} (n={stats[key]['n']})")
    ax.set_xlabel("intensity (0 = air, 1 = dense)")
    ax.set_ylabel("fraction of pixels")
    ax.set_title("Intensity histograms per class")
    ax.legend(fontsize=8)
    return _png(fig)


def sample_tiles(result: AuditResult) -> list[dict]:
    """Each sample thumbnail beside its Canny edge map."""
    from skimage.feature import canny

    by_path = {f["path"]: f for f in result.files}
    tiles = []
    for path, thumb in sorted(result.thumbs.items(), key=lambda kv: (by_path[kv[0]]["label"], kv[0])):
        edges = canny(thumb.astype(np.float32) / 255.0, sigma=2.0)
        f = by_path[path]
        tiles.append({"label": f["label"], "name": Path(path).name, "split": f["split"] or "",
                      "size": f"{f['width']}×{f['height']}", "image": _array_png(thumb),
                      "edges": _array_png((edges * 255).astype(np.uint8))})
    return tiles


def render_report(result: AuditResult) -> str:
    """The audit as one HTML string with every figure inlined (layout: ``pneumo/templates/audit_report.html``)."""
    s = result.summary
    figures = {"balance": class_balance_figure(s), "geometry": geometry_figure(result.files),
               "intensity": intensity_figure(s)}
    features = list(next(iter(s["shortcuts"].values()), {}))
    return render("audit_report.html", s=s, fig=figures, tiles=sample_tiles(result), features=features,
                  max_rows=MAX_ROWS)


def write_outputs(result: AuditResult, out_dir: Path) -> dict[str, Path]:
    """Write ``audit.json`` (summary + per-file records) and ``report.html`` into ``out_dir``, atomically."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "audit.json", "html": out_dir / "report.html"}
    doc = {**result.summary, "files": result.files}
    for key, text in (("json", json.dumps(doc, indent=1)), ("html", render_report(result))):
        atomic_write_text(paths[key], text)
    return paths
