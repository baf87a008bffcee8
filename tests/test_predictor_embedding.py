"""``PneumoNet.logit_and_embedding`` is the one definition of the embedding: its logit is ``forward``'s,
its embedding is ``embed``'s, for a global-pool head, a dense head, a head without a Linear and an
ensemble; the ONNX export wrapper is a thin shell over it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumo.inference.export import LogitAndEmbedding
from pneumo.models import PneumoNet, build_model
from pneumo.models.ensemble import ensemble_from_models


def _nets():
    torch.manual_seed(0)
    yield "tiny_cnn", build_model("tiny_cnn", width=8, depth=3).eval(), 64
    dense = build_model("scratch_cnn", filters=[8, 16], spatial_dropout=0.0, dense=[16], global_pool=True)
    yield "scratch_cnn dense", dense.eval(), 64
    a, b = build_model("tiny_cnn", width=8, depth=3).eval(), build_model("tiny_cnn", width=8, depth=3).eval()
    yield "ensemble mirror", ensemble_from_models([a, b], mirror=True), 64
    head = nn.Sequential(nn.Conv2d(4, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # no nn.Linear
    yield "no linear", PneumoNet(nn.Conv2d(1, 4, 3), head).eval(), 16


@pytest.mark.parametrize("net,size", [pytest.param(n, s, id=name) for name, n, s in _nets()])
def test_logit_and_embedding_agree_with_forward_and_embed(net, size):
    x = torch.rand(3, 1, size, size)
    with torch.inference_mode():
        logit, emb = net.logit_and_embedding(x)
        assert logit.shape == (3,) and emb.ndim == 2 and emb.shape[0] == 3
        torch.testing.assert_close(logit, net(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(emb, net.embed(x), rtol=0, atol=0)
        wl, we = LogitAndEmbedding(net)(x)
        torch.testing.assert_close(wl, logit, rtol=0, atol=0)
        torch.testing.assert_close(we, emb, rtol=0, atol=0)
