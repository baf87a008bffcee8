"""The images the chest-X-ray gate learns from, with outlier exposure.

Positives: frontal chest X-rays (the training dataset, plus any other-hospital frontal films in an
external folder), each also seen under mild acquisition changes (crop, border, small rotation,
gamma, mirror, blur). Negatives: every non-chest image we hold (an external folder, the images that
scikit-image and pydicom ship), each also cropped/flipped/rotated, and negatives *made from chest
X-rays* that must never pass silently: 90°/180° rotations, upside-down films, extreme crops, plus
blanks and noise. Every item keeps its ``source`` so evaluation can hold a whole source out.

External folder layout: ``labels.csv`` with columns ``path,set[,source_repo]`` where ``set`` is
``cxr_other`` (a frontal chest X-ray) or anything else (not one); ``source_repo`` (``owner/name@sha``)
names the source. Without ``labels.csv``: ``cxr_other/**`` are positives, other top folders negatives,
the source being the second path component.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.data.imageio import read_image
from pneumo.data.preprocess import fit_long_side, resample
from pneumo.errors import PneumoError

WORK_SIDE = 256  # images are kept at most this large: the gate's view is 64 px
POSITIVE_SET = "cxr_other"


@dataclass
class Item:
    """One gate image: ``pixels`` (float32, long side ≤ WORK_SIDE), whether it is a frontal chest
    X-ray, where it came from (``source``) and what it is (``kind``)."""

    pixels: np.ndarray
    positive: bool
    source: str
    kind: str
    name: str = ""
    original: bool = True  # False for variants and chest-derived negatives


def shrink(pixels: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """The film with its long side at most ``side``: the gate's features never need more."""
    size = fit_long_side(pixels.shape, side)
    return np.asarray(pixels, dtype=np.float32) if size == pixels.shape else resample(pixels, *size)


def _read(path: str | Path) -> np.ndarray | None:
    try:
        return shrink(read_image(path)[0])
    except PneumoError:
        return None


def read_items(paths: Iterable[str | Path], positive: bool, source: str, kind: str) -> list[Item]:
    out = []
    for p in paths:
        px = _read(p)
        if px is not None:
            out.append(Item(px, positive, source, kind, Path(p).name))
    return out


def external_items(root: str | Path) -> list[Item]:
    """The external development folder (see the module docstring) as items; undecodable files skipped."""
    root = Path(root)
    labels = root / "labels.csv"
    rows: list[tuple[Path, bool, str, str]] = []
    if labels.is_file():
        with labels.open(newline="") as fh:
            for r in csv.DictReader(fh):
                src = (r.get("source_repo") or "").split("@")[0] or Path(r["path"]).parts[1]
                rows.append((root / r["path"], r["set"] == POSITIVE_SET, src, r.get("label") or r["set"]))
    else:
        for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            parts = f.relative_to(root).parts
            if len(parts) >= 2:
                rows.append((f, parts[0] == POSITIVE_SET, parts[1] if len(parts) > 2 else parts[0], parts[0]))
    out = []
    for path, pos, src, kind in rows:
        px = _read(path)
        if px is not None:
            out.append(Item(px, pos, src, kind, path.name))
    return out


def package_items() -> list[Item]:
    """Non-chest images shipped inside installed wheels (scikit-image, pydicom): no download."""
    import pydicom
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    images = sorted(p for p in sk.iterdir() if p.suffix in (".png", ".jpg", ".tif"))
    out = read_items(images, False, "skimage", "package")
    faces = sk / "lfw_subset.npy"
    if faces.exists():
        arr = np.load(faces, allow_pickle=False)[:20]
        out += [Item(shrink(np.kron(f.astype(np.float32), np.ones((8, 8), np.float32))), False, "skimage", "face",
                     f"lfw{i}") for i, f in enumerate(arr)]
    pd = Path(pydicom.__file__).parent / "data" / "test_files"
    out += read_items(sorted(pd.glob("*.dcm")), False, "pydicom", "dicom")
    return out


# -- augmentations ------------------------------------------------------------------------------

def acquisition_variant(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chest film as another hospital might send it: cropped or bordered, slightly rotated, other
    gamma, mirrored, blurred or noisy, other aspect. Still a frontal chest X-ray."""
    from scipy import ndimage  # lazy: the gate module imports this one, and screening a film needs no scipy

    h, w = px.shape
    out = px
    if rng.random() < 0.6:  # crop 75–100 % of each side
        ch, cw = int(h * rng.uniform(0.75, 1)), int(w * rng.uniform(0.75, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out = out[y : y + ch, x : x + cw]
    if rng.random() < 0.3:  # a border (collimation, scanner frame)
        b = int(min(out.shape) * rng.uniform(0.02, 0.12))
        out = np.pad(out, b, constant_values=float(rng.choice([0.0, 1.0, out.min()])))
    if rng.random() < 0.5:
        out = ndimage.rotate(out, rng.uniform(-8, 8), reshape=False, order=1, mode="nearest")
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.4:
        oh, ow = out.shape
        r = rng.uniform(0.75, 1.35)
        out = resample(out, max(1, oh), max(1, int(ow * r)))
    out = np.clip(out, 0, 1) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.2:
        out = ndimage.gaussian_filter(out, rng.uniform(0.5, 1.5))
    if rng.random() < 0.2:
        out = out + rng.normal(0, rng.uniform(0.01, 0.05), out.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def negative_variant(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another view of a non-chest image (crop, mirror, rotation, gamma): still not a chest X-ray."""
    h, w = px.shape
    out = px
    if rng.random() < 0.7 and min(h, w) > 40:
        ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out = out[y : y + ch, x : x + cw]
    out = np.rot90(out, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return (np.clip(out, 0, 1) ** rng.uniform(0.6, 1.6)).astype(np.float32)


def chest_derived_negative(px: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    """A chest X-ray turned into something that must be refused: ``rot90``, ``rot180``, ``flipud``,
    ``crop`` (a small patch), ``half`` (one side), ``noise``, ``blank``, ``gradient``."""
    h, w = px.shape
    if kind == "rot90":
        return np.ascontiguousarray(np.rot90(px, int(rng.choice([1, 3]))))
    if kind == "rot180":
        return np.ascontiguousarray(np.rot90(px, 2))
    if kind == "flipud":
        return np.ascontiguousarray(px[::-1])
    if kind == "crop":
        f = rng.uniform(0.15, 0.4)
        ch, cw = max(8, int(h * f)), max(8, int(w * f * rng.uniform(0.7, 1.4)))
        cw = min(cw, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return np.ascontiguousarray(px[y : y + ch, x : x + cw])
    if kind == "half":  # one lung field only: no bilateral layout (what a lateral view also lacks)
        cw = int(w * rng.uniform(0.35, 0.55))
        return np.ascontiguousarray(px[:, :cw] if rng.random() < 0.5 else px[:, w - cw :])
    s = (int(rng.integers(128, 256)), int(rng.integers(128, 256)))
    if kind == "noise":
        from scipy import ndimage  # lazy, as in acquisition_variant

        base = rng.random(s) if rng.random() < 0.5 else rng.normal(0.5, rng.uniform(0.05, 0.3), s)
        return np.clip(ndimage.gaussian_filter(base, rng.uniform(0, 3)), 0, 1).astype(np.float32)
    if kind == "blank":
        return np.full(s, rng.uniform(0, 1), np.float32)
    if kind == "gradient":
        yy, xx = np.mgrid[0 : s[0], 0 : s[1]] / max(s)
        a = rng.normal(size=2)
        g = a[0] * yy + a[1] * xx
        return ((g - g.min()) / (np.ptp(g) or 1)).astype(np.float32)
    raise ValueError(kind)


DERIVED_KINDS = ("rot90", "rot180", "flipud", "crop", "half", "noise", "blank", "gradient")


def expand(
    items: Sequence[Item],
    rng: np.random.Generator,
    pos_variants: int = 1,
    ext_pos_variants: int = 4,
    neg_variants: int = 6,
    derived_per_kind: int = 150,
    derived_from: str = "kermany",
) -> list[Item]:
    """The training images: originals, their variants, and chest-derived negatives."""
    out = list(items)
    for it in items:
        if it.positive:
            n = pos_variants if it.source == derived_from else ext_pos_variants
            out += [Item(acquisition_variant(it.pixels, rng), True, it.source, it.kind, it.name, False)
                    for _ in range(n)]
        else:
            out += [Item(negative_variant(it.pixels, rng), False, it.source, it.kind, it.name, False)
                    for _ in range(neg_variants)]
    chest = [it for it in items if it.positive]
    for kind in DERIVED_KINDS:
        for i in rng.choice(len(chest), min(derived_per_kind, len(chest)), replace=False):
            out.append(Item(chest_derived_negative(chest[i].pixels, rng, kind), False, f"derived:{chest[i].source}",
                            kind, chest[i].name, False))
    return out
