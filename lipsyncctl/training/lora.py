"""LoRA fine-tuning of the UNet (``run.lora_rank > 0``) with peft: low-rank adapters on the attention
projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) of the modules the trainable rule selects; the base
weights stay frozen. Exports merge the adapters into the official names (``W + B·A·α/r``), so ``sync`` loads
a LoRA run like any other UNet; full checkpoints keep the adapters as they are (resume).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

#: the projections that get adapters (diffusers ``Attention`` naming, as the official UNet)
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def target_modules(model: nn.Module, rule: Sequence[str]) -> list[str]:
    """Names of the linear projections that get adapters: attention projections whose full parameter
    name matches the trainable rule (empty rule: every attention projection)."""
    from torch import nn

    from lipsyncctl.training.trainable import is_trainable

    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.endswith(TARGETS) and is_trainable(f"{name}.weight", rule):
            out.append(name)
    return out


def add_lora(model: nn.Module, rank: int, rule: Sequence[str], alpha: float | None = None, *,
             seed: int = 0) -> list[nn.Parameter]:
    """Freeze ``model``, inject rank-``rank`` adapters, return the adapter parameters (B starts at zero:
    the first forward is the base model's; A's random start comes from ``seed`` alone, not from whatever
    drew from the global generator before)."""
    import torch

    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        from lipsyncctl.errors import MissingToolError

        raise MissingToolError("run.lora_rank needs the peft package, which is not installed",
                               hint="pip install 'lipsyncctl[train]' (or peft>=0.13), or train without LoRA "
                               "(run.lora_rank=0)") from None

    from lipsyncctl.training.sampling import LORA_STREAM, stable_seed

    names = target_modules(model, rule)
    if not names:
        from lipsyncctl.errors import ConfigError

        raise ConfigError("run.lora_rank: no attention projection matches model.trainable",
                          hint="use the stage-2 rule [motion_modules., attentions.]")
    model.requires_grad_(False)
    # a string target is a regex peft matches against each full module name
    pattern = "|".join(f"(^{re.escape(n)}$)" for n in names)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=pattern, lora_dropout=0.0, bias="none")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stable_seed(seed, 0, LORA_STREAM))  # peft's kaiming init of lora_A draws here
        inject_adapter_in_model(config, model)
    return [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The official state dict of a LoRA-injected model with every adapter merged into its base weight."""

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "lora_A"):
            continue
        weight = base.weight.detach().float().cpu().clone()
        for adapter in module.lora_A:
            a = module.lora_A[adapter].weight.detach().float().cpu()
            b = module.lora_B[adapter].weight.detach().float().cpu()
            weight += (b @ a) * module.scaling[adapter]
        out[f"{name}.weight"] = weight.to(base.weight.dtype)
        if base.bias is not None:
            out[f"{name}.bias"] = base.bias.detach().cpu()
    for key, value in state.items():
        if "lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        out.setdefault(plain, value)
    return out
