"""The one shape every pneumo network has: a spatial feature extractor, then a head to one logit.

Keeping that split explicit gives every other piece what it needs without knowing the architecture:
Grad-CAM hooks ``cam_layer`` (the last spatial feature map), the predictor, the OOD detector and the
ONNX export read ``logit_and_embedding``, and freezing for transfer learning acts on ``features``.
"""

from __future__ import annotations

import torch
from torch import nn


class PneumoNet(nn.Module):
    """Binary classifier: input ``B×1×H×W`` (preprocessed), output ``B`` logits for PNEUMONIA.

    Args:
        features: maps ``B×1×H×W`` to a spatial map ``B×C×h×w``.
        head: maps that map to ``B×1`` (or ``B``) logits. Its input to the last ``nn.Linear`` is the
            embedding returned by :meth:`logit_and_embedding` (and :meth:`embed`).
        cam_layer: dotted name of the module whose output Grad-CAM should use; defaults to ``features``.
    """

    def __init__(self, features: nn.Module, head: nn.Module, cam_layer: str = "features"):
        super().__init__()
        self.features = features
        self.head = head
        self.cam_layer = cam_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(x.shape[0])

    def logit_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B×1×H×W`` → (``B`` logits, ``B×D`` embeddings), the features run once.

        The embedding is the head's input to its last ``nn.Linear``: the head runs up to (not
        including) that layer, and the rest of the head gives the logit. For a global-pool head that
        is the pooled map; for a dense head (Flatten → Linear → ReLU → ... → Linear) the last hidden
        layer after its activation. A head without a Linear gives the globally pooled map. The one
        definition of the embedding: :meth:`embed`, the predictor and the two-output ONNX export use it.
        """
        z = self.features(x)
        layers = list(self.head.children()) if isinstance(self.head, nn.Sequential) else [self.head]
        linears = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if not linears:
            return self.head(z).reshape(x.shape[0]), (z.mean(dim=(2, 3)) if z.ndim == 4 else z.flatten(1))
        for m in layers[: linears[-1]]:
            z = m(z)
        logit = z
        for m in layers[linears[-1] :]:
            logit = m(logit)
        return logit.reshape(x.shape[0]), z.flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``B×D`` (see :meth:`logit_and_embedding`)."""
        return self.logit_and_embedding(x)[1]


class GlobalPoolHead(nn.Sequential):
    """Global average pool → dropout → linear to one logit (the head most backbones use)."""

    def __init__(self, in_channels: int, dropout: float = 0.0):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(in_channels, 1))
