"""Input-gradient attributions from Captum: integrated gradients and SmoothGrad.

They differentiate with respect to the *input*, so they need no hook on the model at all. Their raw
maps are pixel-level; a light Gaussian (σ = S/64) turns them into regions, which is what a reader and
the deletion/insertion check look at.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from scipy.ndimage import gaussian_filter
from torch import nn

from pneumo.explain.cam import eval_mode
from pneumo.explain.perturb import blurred


class _Signed(nn.Module):
    """``sign·logit`` as a ``B×1`` output (Captum's ``target=0``)."""

    def __init__(self, net: nn.Module, sign: float):
        super().__init__()
        self.net, self.sign = net, sign

    def forward(self, x):
        return (self.sign * self.net(x)).reshape(-1, 1)


def _smooth(a: torch.Tensor, size: int) -> np.ndarray:
    m = a.detach().reshape(size, size).float().numpy()
    return gaussian_filter(m, sigma=max(1.0, size / 64)).astype(np.float32)


def integrated_gradients(model: nn.Module, x: torch.Tensor, sign: float, steps: int = 32) -> np.ndarray:
    """IG (Sundararajan 2017) from the blurred image (the insertion check's start) to the image;
    positive part (evidence for the explained class)."""
    s = x.shape[-1]
    base = torch.from_numpy(blurred(x.reshape(s, s).numpy()))[None, None]
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model):
        ig = IntegratedGradients(_Signed(model, sign))
        attr = ig.attribute(x.clone(), baselines=base, target=0, n_steps=steps, internal_batch_size=steps)
    return np.clip(_smooth(attr, s), 0.0, None)


def smoothgrad(model: nn.Module, x: torch.Tensor, sign: float, samples: int = 16, noise: float = 0.15) -> np.ndarray:
    """SmoothGrad (Smilkov 2017): mean |gradient| over ``samples`` noisy copies (σ = ``noise``×range)."""
    s = x.shape[-1]
    stdev = float(noise * (x.max() - x.min()))
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model):
        nt = NoiseTunnel(Saliency(_Signed(model, sign)))
        attr = nt.attribute(x.clone(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples,
                            stdevs=stdev, target=0, abs=True)
    return _smooth(attr, s)
