"""Transfer learning from local weight files: pneumo bundles, torchvision / torchxrayvision checkpoints.

Nothing is ever downloaded: the user points at a file they have. Foreign checkpoints are read with
``torch.load(weights_only=True)`` (never arbitrary pickle) or safetensors. Source keys are renamed
onto pneumo's ``features.*`` / ``head.*`` layout; a 3-channel first conv is summed to 1 channel
(a grey image fed as RGB gives exactly the same activations); classifier layers of other tasks
(ImageNet's 1000 classes, torchxrayvision's 18 findings) are skipped, leaving pneumo's head at its
initialisation. Anything else that does not fit is an error naming the keys.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from pneumo.errors import ConfigError
from pneumo.models.base import PneumoNet

_RESNETS = ("resnet18", "resnet34", "resnet50")
_FOREIGN_HEADS = ("fc.", "classifier.", "op_threshs", "upsample.")  # other tasks' classifiers
_DENSE_LAYER = re.compile(r"(denselayer\d+)\.(norm|relu|conv)\.?(\d)")


def load_weights(model: PneumoNet, path: str | Path, *, arch_name: str, reset_head: bool = False) -> dict:
    """Load ``path`` into ``model`` in place and return a JSON-able report.

    ``path`` may be a pneumo bundle directory, a ``.safetensors`` state dict, or a ``.pt``/``.pth``
    state dict (torchvision ImageNet ResNet-18/34/50 or DenseNet-121, torchxrayvision DenseNet-121,
    or a pneumo-layout state dict). ``arch_name`` is the registry name ``model`` was built with; it
    picks the key mapping. ``reset_head`` keeps the model's fresh head instead of the source's one.

    Raises :class:`ConfigError` when the file is missing/unreadable or keys/shapes do not fit.
    """
    path = Path(path)
    state, source = _read_state(path)
    target = model.state_dict()
    if _looks_native(state, target):
        fmt, mapped, skipped = "pneumo", dict(state), list[str]()
    elif arch_name in _RESNETS or arch_name == "densenet121":
        fmt = "torchvision-style"
        mapped, skipped = _from_torchvision(state, arch_name)
    else:
        raise ConfigError(f"{path}: keys are not pneumo {arch_name!r} keys and {arch_name!r} has no "
                          f"torchvision mapping (e.g. {_few(sorted(state))})")
    if reset_head:
        skipped += [k for k in mapped if k.startswith("head.")]
        mapped = {k: v for k, v in mapped.items() if not k.startswith("head.")}
    mapped, adapted = _adapt_first_conv(mapped, target)
    _check_fit(path, arch_name, source, mapped, target, head_optional=fmt != "pneumo" or reset_head)
    model.load_state_dict(mapped, strict=False)
    missing = sorted(set(target) - set(mapped))
    return {
        "path": str(path), "source": source, "format": fmt, "arch_name": arch_name,
        "loaded": len(mapped), "skipped": len(skipped), "skipped_keys": sorted(skipped),
        "kept_init": len(missing), "kept_init_keys": missing, "first_conv_summed_to_1_channel": adapted,
        "head_reset": bool(reset_head or any(k.startswith("head.") for k in missing)),
    }


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a bundle dir / safetensors / torch state dict, plus what kind of source it was."""
    if not path.exists():
        raise ConfigError(f"{path}: weights file or bundle not found")
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.exists():
            raise ConfigError(f"{path}: directory is not a pneumo bundle (no model.safetensors)")
        return _safetensors(weights), f"bundle:{_bundle_arch(path)}"
    if path.suffix == ".safetensors":
        return _safetensors(path), "safetensors"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{path}: not a plain state dict (a pickled full model or other objects); load it "
                          f"where its code is installed and re-save with torch.save(model.state_dict(), ...) "
                          f"({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read as a torch checkpoint ({exc})") from exc
    return _unwrap(path, obj), "torch"


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise ConfigError(f"{path}: cannot read safetensors file ({exc})") from exc


def _bundle_arch(path: Path) -> str:
    try:
        return str(json.loads((path / "pneumo.json").read_text())["architecture"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _unwrap(path: Path, obj) -> dict[str, torch.Tensor]:
    """Accept ``{"state_dict": ...}`` / ``{"model": ...}`` training checkpoints too; strip ``module.``."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _looks_native(state: dict, target: dict) -> bool:
    """Pneumo layout if most source keys are model keys as they are."""
    return len(set(state) & set(target)) >= 0.5 * len(state) > 0


def _from_torchvision(state: dict[str, torch.Tensor], arch_name: str) -> tuple[dict, list[str]]:
    """Rename torchvision (and torchxrayvision) keys onto pneumo's MONAI-based layout."""
    mapped, skipped = {}, []
    for key, value in state.items():
        if key.startswith(_FOREIGN_HEADS):
            skipped.append(key)
        elif arch_name == "densenet121":
            mapped[_DENSE_LAYER.sub(r"\1.layers.\2\3", key)] = value
        else:
            mapped["features." + key] = value
    return mapped, skipped


def _adapt_first_conv(mapped: dict, target: dict) -> tuple[dict, list[str]]:
    """Sum RGB input filters to one grey channel where the model's conv takes 1 channel."""
    adapted = []
    for key, value in mapped.items():
        want = target.get(key)
        if want is not None and value.ndim == 4 and want.ndim == 4 and value.shape[1] == 3 and want.shape[1] == 1 \
                and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            mapped[key] = value.sum(dim=1, keepdim=True)
            adapted.append(key)
    return mapped, adapted


def _check_fit(path: Path, arch: str, source: str, mapped: dict, target: dict, *, head_optional: bool) -> None:
    unexpected = sorted(set(mapped) - set(target))
    bad_shape = [f"{k} {tuple(mapped[k].shape)}≠{tuple(target[k].shape)}"
                 for k in sorted(set(mapped) & set(target)) if mapped[k].shape != target[k].shape]

    def optional(k: str) -> bool:  # old checkpoints lack BN counters; foreign ones lack our head
        return k.endswith("num_batches_tracked") or (head_optional and k.startswith("head."))

    missing = sorted(k for k in set(target) - set(mapped) if not optional(k))
    if unexpected or bad_shape or missing:
        parts = [f"{len(v)} {what} (e.g. {_few(v)})" for what, v in
                 (("unexpected keys", unexpected), ("shape mismatches", bad_shape), ("missing keys", missing)) if v]
        raise ConfigError(f"{path} ({source}): weights do not fit model {arch!r}: " + "; ".join(parts))


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
