"""Batched augmentation on ``[0, 1]`` images, one random draw per image, all in a few torch ops.

The parameters mirror MONAI's ``RandAffine`` (rotate/translate/scale/shear ranges),
``RandScaleIntensity``, ``RandShiftIntensity``, ``RandAdjustContrast`` (gamma), ``RandFlip`` and
``RandGaussianNoise``, but act on a whole ``B×1×S×S`` batch at once: per-image MONAI array
transforms cost about as much as the model itself on a 2-core CPU, one ``grid_sample`` does not.
Sharpness and resolution jitter (``blur_sigma``/``sharpen``/``downscale``, as MONAI's
``RandGaussianSmooth``/``RandGaussianSharpen`` and a down-then-up resample) keep the model from
depending on the exact resampler and JPEG softness of the shared 224 px training copies: images
at inference are originals of 340–2,750 px, resized by pneumo's own antialiased bilinear.
Mixup lives in the LightningModule because it also mixes labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges are symmetric: an image is rotated by U(−rotate_deg, rotate_deg), and so on.

    ``translate`` is a fraction of the image side; ``scale`` a relative zoom (0.1 → 0.9..1.1);
    ``shear`` a shear factor; ``intensity_scale``/``intensity_shift`` act as ``x·(1+f) + o``;
    ``gamma`` is a ``(low, high)`` range for ``x ** γ`` (log-uniform) or ``None``.
    ``aspect`` stretches one axis against the other by ``exp(U(−aspect, aspect))`` (originals are
    stretched to a square whatever their aspect ratio, which differs between the classes).
    With probability ``degrade_prob`` an image is blurred (Gaussian σ ~ U(0, ``blur_sigma``) px) or
    sharpened (unsharp mask, amount ~ U(0, ``sharpen``)), each half the time when both are on; and,
    independently with the same probability, resampled down to a factor ~ U(``downscale``, 1) of its
    side and back up (one factor per batch). 0 switches each off.
    ``match_blur_prob``/``match_blur_sigma`` blur NORMAL (label 0) images only, before everything
    else, with σ ~ U(0, ``match_blur_sigma``): the shared training copies of NORMAL films are sharper
    than the PNEUMONIA ones (Laplacian energy alone separates them at AUROC 0.87, 0.65 after the
    class-blind jitter above), and the NORMAL films a model over-calls are the soft ones from small
    originals. Blurring only NORMALs makes softness stop predicting PNEUMONIA instead of adding
    noise to a cue that still points one way.
    """

    enabled: bool = True
    rotate_deg: float = 10.0
    translate: float = 0.08
    scale: float = 0.1
    shear: float = 0.05
    hflip: bool = False
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    gamma: tuple[float, float] | None = (0.8, 1.25)
    noise_std: float = 0.0
    aspect: float = 0.0
    blur_sigma: float = 0.0
    sharpen: float = 0.0
    downscale: float = 0.0
    degrade_prob: float = 0.5
    match_blur_prob: float = 0.0
    match_blur_sigma: float = 1.5

    @classmethod
    def from_config(cls, cfg) -> AugmentSpec:
        d = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        d["gamma"] = tuple(float(g) for g in d["gamma"]) if d["gamma"] is not None else None
        return cls(**d)


def _uniform(n: int, half_width: float, gen: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2 - 1) * half_width


def affine_matrices(n: int, spec: AugmentSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """``n×2×3`` matrices for ``affine_grid`` (output → input, normalised coordinates)."""
    angle = _uniform(n, math.radians(spec.rotate_deg), gen)
    zoom = 1.0 + _uniform(n, spec.scale, gen)
    shear = _uniform(n, spec.shear, gen)
    shift = _uniform(2 * n, 2.0 * spec.translate, gen).reshape(n, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    sh = torch.eye(2).repeat(n, 1, 1)
    sh[:, 0, 1] = shear
    lin = rot @ sh / zoom[:, None, None]
    if spec.aspect:
        r = torch.exp(_uniform(n, spec.aspect, gen))
        lin = lin * torch.stack([r.sqrt(), 1.0 / r.sqrt()], -1)[:, None, :]
    if spec.hflip:
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        lin[:, :, 0] *= flip[:, None]
    return torch.cat([lin, shift[:, :, None]], dim=2)


def augment_batch(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None = None,
                  y: torch.Tensor | None = None) -> torch.Tensor:
    """``B×1×S×S`` float in ``[0, 1]`` → augmented batch, same shape, values in ``[0, 1]``.

    ``y`` (the labels) is needed only by the class-conditional ``match_blur_prob``.
    """
    if not spec.enabled or x.shape[0] == 0:
        return x
    n = x.shape[0]
    if spec.match_blur_prob and spec.match_blur_sigma and y is not None:
        hit = (y.view(-1) < 0.5) & (torch.rand(n, generator=gen) < spec.match_blur_prob)
        if bool(hit.any()):
            x = gaussian_blur(x, torch.where(hit, torch.rand(n, generator=gen) * spec.match_blur_sigma, torch.zeros(n)))
    if spec.rotate_deg or spec.translate or spec.scale or spec.shear or spec.hflip or spec.aspect:
        theta = affine_matrices(n, spec, gen).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if spec.blur_sigma or spec.sharpen:
        x = sharpness_jitter(x, spec, gen)
    if spec.downscale:
        x = resolution_jitter(x, spec, gen)
    if spec.intensity_scale:
        x = x * (1.0 + _uniform(n, spec.intensity_scale, gen)).view(n, 1, 1, 1)
    if spec.intensity_shift:
        x = x + _uniform(n, spec.intensity_shift, gen).view(n, 1, 1, 1)
    x = x.clamp(0.0, 1.0)
    if spec.gamma is not None and spec.gamma != (1.0, 1.0):
        lo, hi = math.log(spec.gamma[0]), math.log(spec.gamma[1])
        g = torch.exp(lo + torch.rand(n, generator=gen) * (hi - lo))
        x = x.pow(g.view(n, 1, 1, 1))
    if spec.noise_std:
        x = (x + torch.randn(x.shape, generator=gen) * spec.noise_std).clamp(0.0, 1.0)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``B×1×H×W`` blurred per image by ``sigma`` (``B`` px; 0 = unchanged), separable, reflect-padded."""
    n = x.shape[0]
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # B×K; σ≈0 gives a unit impulse
    y = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="reflect")  # 1×B×H'×W'
    y = F.conv2d(y, k.view(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, k.view(n, 1, -1, 1), groups=n)
    return y.transpose(0, 1)


def sharpness_jitter(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """Blur or unsharp-mask a random subset of the batch: ``x + a·(x − G_σ x)`` with ``a = −1`` to blur."""
    n = x.shape[0]
    hit = torch.rand(n, generator=gen) < spec.degrade_prob
    u = torch.rand(n, generator=gen)
    if spec.blur_sigma and spec.sharpen:
        blur = torch.rand(n, generator=gen) < 0.5
    else:
        blur = torch.full((n,), bool(spec.blur_sigma))
    sigma = torch.where(blur, u * spec.blur_sigma, torch.ones(n))
    amount = torch.where(blur, -torch.ones(n), u * spec.sharpen)
    amount = torch.where(hit, amount, torch.zeros(n)).to(x.dtype)
    if not bool(hit.any()):
        return x
    y = x + amount.view(n, 1, 1, 1) * (x - gaussian_blur(x, torch.where(hit, sigma, torch.zeros(n))))
    return y.clamp(0.0, 1.0)


def resolution_jitter(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """Resample a random subset of the batch down to ``f``×side (antialiased) and back up, ``f ~ U(downscale, 1)``."""
    n, size = x.shape[0], x.shape[-2:]
    hit = torch.rand(n, generator=gen) < spec.degrade_prob
    if not bool(hit.any()):
        return x
    f = spec.downscale + float(torch.rand(1, generator=gen)) * (1.0 - spec.downscale)
    small = [max(8, round(s * f)) for s in size]
    y = F.interpolate(x[hit], size=small, mode="bilinear", antialias=True, align_corners=False)
    y = F.interpolate(y, size=list(size), mode="bilinear", align_corners=False)
    out = x.clone()
    out[hit] = y.clamp(0.0, 1.0)
    return out


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image and (soft) label with a random partner: ``λ ~ Beta(α, α)`` per batch."""
    if alpha <= 0 or x.shape[0] < 2:
        return x, y
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=gen)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
