"""Which UNet parameters a training run updates: the official name rules (``scripts/train_unet.py``).

- stage 1 (no motion modules): every parameter;
- stage 2: names containing ``motion_modules.`` or ``attentions.`` (the temporal layers and the spatial
  transformers with their audio cross-attention);
- stage 2 efficient: ``motion_modules.`` or ``attn2.`` (temporal layers and audio cross-attention only).

The rule is a preset's ``model.trainable`` (substrings; empty = all). Counts on the meta device (no memory)
are what ``train`` prints and the tests pin: stage1 686 tensors / 849 962 244 parameters, stage2 936 /
674 792 320, stage2_efficient 392 / 284 660 480.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TrainableCount:
    tensors: int
    params: int
    frozen_tensors: int
    frozen_params: int

    def to_dict(self) -> dict[str, int]:
        return {"tensors": self.tensors, "params": self.params, "frozen_tensors": self.frozen_tensors,
                "frozen_params": self.frozen_params}


def is_trainable(name: str, rule: Sequence[str]) -> bool:
    """True when parameter ``name`` is trained under ``rule`` (substrings; empty = every parameter)."""
    return not rule or any(part in name for part in rule)


def select_trainable(model: nn.Module, rule: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """Set ``requires_grad`` by ``rule`` and return the trained ``(name, parameter)`` pairs in model order.

    Raises:
        ConfigError: a part of ``rule`` matches no parameter (a typo trained nothing it named: or, alone, nothing
            at all, an "empty parameter list" deep in the optimizer).
    """
    check_rule((name for name, _ in model.named_parameters()), rule)
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name, rule))
        if p.requires_grad:
            out.append((name, p))
    return out


def check_rule(names: Iterable[str], rule: Sequence[str]) -> None:
    """Every part of ``rule`` is in some parameter name of ``names``.

    Raises:
        ConfigError: naming the parts that match no parameter.
    """
    used: set[str] = set()
    for name in names:
        used.update(part for part in rule if part in name)
    unused = [part for part in rule if part not in used]
    if unused:
        from lipsyncctl.errors import ConfigError

        raise ConfigError(f"model.trainable: {', '.join(map(repr, unused))} match{'es' if len(unused) == 1 else ''} "
                          "no parameter of the model", hint="parts of parameter names, such as motion_modules. and "
                          "attentions. (the stage-2 presets' model.trainable); [] trains every parameter")


def check_for_config(unet_config: str, rule: Sequence[str]) -> None:
    """:func:`check_rule` on the UNet architecture ``unet_config`` (a name or file) built on the meta device (no
    memory, no weights): a typo is said before the networks load (minutes for the full UNet)."""
    from lipsyncctl.training.memory import meta_unet

    if rule:
        check_rule((name for name, _ in meta_unet(unet_config).named_parameters()), rule)


def count(named: Iterable[tuple[str, nn.Parameter]], rule: Sequence[str]) -> TrainableCount:
    t = p = ft = fp = 0
    for name, param in named:
        if is_trainable(name, rule):
            t, p = t + 1, p + param.numel()
        else:
            ft, fp = ft + 1, fp + param.numel()
    return TrainableCount(t, p, ft, fp)


def count_for_config(unet_config: object, rule: Sequence[str]) -> TrainableCount:
    """The counts of a UNet architecture (a :class:`~lipsyncctl.nets.unet_config.UNetConfig`), built on
    the meta device: no memory, no weights."""
    import torch

    from lipsyncctl.nets.unet import UNet3DConditionModel

    with torch.device("meta"):
        model = UNet3DConditionModel(unet_config)  # type: ignore[arg-type]
    return count(model.named_parameters(), rule)
