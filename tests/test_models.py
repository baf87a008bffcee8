"""Every registered network honours the PneumoNet contract; presets are the documented architectures;
the compact CNN stays within its budget; freezing and parameter groups do what their spec says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumo.errors import ConfigError
from pneumo.models import (
    apply_freeze,
    available_models,
    build_model,
    count_flops,
    count_params,
    frozen_bn_eval,
    param_groups,
)

FLATTEN_SIZED = {"seed_cnn": 150, "scratch_cnn": 150}  # flatten heads need their design size


@pytest.mark.parametrize("name", available_models())
def test_contract(name):
    torch.manual_seed(0)
    size = FLATTEN_SIZED.get(name, 64)
    model = build_model(name).eval()
    x = torch.rand(2, 1, size, size)
    seen = {}
    cam = model.get_submodule(model.cam_layer)
    handle = cam.register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    with torch.no_grad():
        logits = model(x)
        emb = model.embed(x)
    handle.remove()
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert emb.shape == (2, last.in_features)
    # embed is really the penultimate layer: the final linear layer maps it to the logits
    torch.testing.assert_close(last(emb).reshape(2), logits, rtol=1e-4, atol=1e-5)
    assert seen["map"].ndim == 4 and seen["map"].shape[0] == 2
    assert seen["map"].shape[-1] > 1 or size < 100


def test_seed_cnn_is_the_documented_architecture():
    model = build_model("seed_cnn")
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features.modules()) == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    sdrop = [[m.p for m in block if isinstance(m, nn.Dropout2d)] for block in model.features]
    assert sdrop == [[], [], [0.2], [0.2]]
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7 * 7 * 128, 512), (512, 1)]
    assert model.embed(torch.rand(2, 1, 150, 150)).min() >= 0  # after the ReLU


def test_scratch_cnn_flatten_follows_input_size_and_options():
    model = build_model("seed_cnn", input_size=224)  # 224→222→111→109→54→52→26→24→12
    assert model.head[1].in_features == 12 * 12 * 128
    assert model(torch.rand(1, 1, 224, 224)).shape == (1,)
    model = build_model("scratch_cnn", filters=[8, 16], batch_norm=True, padding="same", pool="avg",
                        dropout=0.1, spatial_dropout=[0.1, 0.3], dense=[32, 16], head_dropout=0.5,
                        global_pool=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == [0.1, 0.3]
    assert model.eval().embed(torch.rand(3, 1, 40, 56)).shape == (3, 16)  # global pool: any size
    with pytest.raises(ConfigError, match="spatial_dropout"):
        build_model("scratch_cnn", spatial_dropout=[0.1, 0.2])
    with pytest.raises(ConfigError, match="input_size"):
        build_model("seed_cnn", input_size=20)


def test_compact_cnn_budget_and_sizes():
    model = build_model("compact_cnn").eval()
    assert count_params(model) <= 2_000_000
    assert count_flops(model, 224) <= 0.4e9
    for size in (160, 192, 256):
        assert model(torch.rand(1, 1, size, size)).shape == (1,)
    assert count_flops(model, 256) > count_flops(model, 224) > count_flops(model, 192)


def test_count_flops_counts_multiply_adds_twice():
    conv = nn.Conv2d(1, 4, 3, padding=1)
    assert count_flops(conv, 8) == 2 * 4 * 9 * 8 * 8
    assert conv.training  # mode restored


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet1000")
    with pytest.raises(ConfigError, match="bad arguments"):
        build_model("compact_cnn", nonsense=1)


def _frozen(model, prefix):
    return {not p.requires_grad for n, p in model.named_parameters() if n.startswith(prefix)}


def test_freeze_specs():
    model = build_model("resnet18")
    info = apply_freeze(model, "backbone")
    assert _frozen(model, "features.") == {True} and _frozen(model, "head.") == {False}
    assert info["trainable_params"] == 513
    apply_freeze(model, "until:features.layer2")
    for part in ("features.conv1", "features.bn1", "features.layer1", "features.layer2"):
        assert _frozen(model, part) == {True}, part
    assert _frozen(model, "features.layer3") == {False} and _frozen(model, "head.") == {False}
    apply_freeze(model, "until:layer1")  # relative to features; re-applying resets first
    assert _frozen(model, "features.layer1") == {True} and _frozen(model, "features.layer2") == {False}
    apply_freeze(model, "none")
    assert _frozen(model, "") == {False}
    with pytest.raises(ConfigError, match="features.layer4"):
        apply_freeze(model, "until:layer9")
    with pytest.raises(ConfigError, match="freeze spec"):
        apply_freeze(model, "everything")


def test_frozen_bn_eval_and_param_groups():
    model = build_model("compact_cnn", width=8)
    apply_freeze(model, "until:features.1")
    model.train()
    frozen_bn_eval(model)
    assert not model.features[0][1].training and model.features[2][0].conv1[1].training
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, backbone_lr_mult=0.1)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == 1e-3
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_trainable
    apply_freeze(model, "backbone")
    assert [g["name"] for g in param_groups(model, 1e-3)] == ["head"]
    torch.optim.AdamW(param_groups(model, 1e-3, 0.1))  # accepted by a real optimizer
