"""Build a model without allocating its weights, then adopt the checkpoint's tensors as its parameters.

The usual ``model = Net(); model.load_state_dict(torch.load(f))`` holds the weights twice (random init
plus the file) and spends seconds on an initialisation that is thrown away. Instead:

1. build the module with its parameters on the ``meta`` device (no memory, no init); buffers stay real,
   so non-persistent buffers (masks, position tables) keep the values their constructor computed;
2. check names and shapes strictly (:mod:`lipsyncctl.checkpoints.keys`);
3. cast each tensor to the target dtype/device (a no-op for a memory-mapped fp32 file on CPU) and
   ``load_state_dict(assign=True)``: the tensors BECOME the parameters, nothing is copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from lipsyncctl.checkpoints.keys import check_state_dict
from lipsyncctl.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

M = TypeVar("M", bound="nn.Module")


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Inside this block, new ``nn.Parameter`` s are created on the meta device; buffers stay real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def build_empty(factory: Callable[[], M]) -> M:
    """``factory()`` with its parameters on the meta device (see :func:`empty_weights`)."""
    with empty_weights():
        return factory()


def cast_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Move tensors to ``device`` and floating-point ones to ``dtype`` (integers keep theirs).

    A tensor already on that device with that dtype is returned as is (no copy), so a memory-mapped
    checkpoint stays memory-mapped.
    """
    out = {}
    for name, t in state_dict.items():
        target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        out[name] = t.to(device=device, dtype=target)
    return out


def load_into(
    model: M,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    source: object,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    ignore_missing: Iterable[str] = (),
    hint: str | None = None,
) -> M:
    """Strictly load ``state_dict`` into ``model`` (built with :func:`build_empty` or normally).

    Args:
        model: the module; parameters may be on the meta device.
        state_dict: names exactly as in ``model.state_dict()``.
        what / source: the model and the file, for error messages.
        device / dtype: where the weights go; floating tensors are cast to ``dtype`` (None = as stored).
        ignore_missing: glob patterns of entries that may be absent (the model's own value is kept).

    Returns:
        ``model`` in eval mode, every parameter and buffer materialised on ``device``.

    Raises:
        CheckpointError: names or shapes differ, or something would stay on the meta device.
    """
    import torch

    ignore = list(ignore_missing)
    check_state_dict(model.state_dict(), state_dict, what=what, source=source, ignore_missing=ignore, hint=hint)
    tensors = cast_state_dict(state_dict, device=device, dtype=dtype)
    model.load_state_dict(tensors, strict=not ignore, assign=True)
    # Buffers not in the checkpoint (non-persistent ones, ignored missing entries) were built on CPU.
    for name, buf in model.named_buffers():
        if buf.device.type == "meta":
            raise CheckpointError(f"{source}: {what} buffer {name!r} has no value (not in the checkpoint)")
        target = dtype if (dtype is not None and buf.is_floating_point()) else buf.dtype
        if buf.device != torch.device(device) or buf.dtype != target:
            _set_buffer(model, name, buf.to(device=device, dtype=target))
    for name, param in model.named_parameters():
        if param.device.type == "meta":
            raise CheckpointError(f"{source}: {what} parameter {name!r} has no value (not in the checkpoint)")
    return model.eval()


def _set_buffer(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    owner._buffers[attr] = value
