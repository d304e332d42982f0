"""Optional PyTorch helpers for ``Batcher``: collate functions and a device-aware predictor.

Install with the ``torch`` extra. Nothing else in the package imports this module, so
``import mlmiddleware`` never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "PaddedBatch",
    "TorchPredictor",
    "default_device",
    "pad_collate",
    "stack_collate",
    "unpad",
    "unstack",
]

logger = logging.getLogger("mlmiddleware.torch")


class PaddedBatch(NamedTuple):
    """Variable-length sequences padded along their first axis into one tensor."""

    values: torch.Tensor
    # ``True`` at real positions and ``False`` at padding, shape ``(batch, max_length)``.
    mask: torch.Tensor
    lengths: torch.Tensor


def default_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stack_collate(items: list[Any]) -> torch.Tensor:
    """Stack equal-shape items (tensors, arrays or nested lists) into one batch tensor."""
    tensors = [torch.as_tensor(item) for item in items]
    shapes = {tuple(tensor.shape) for tensor in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"stack_collate needs items of one shape, got shapes {sorted(shapes)}: "
            "use pad_collate for variable-length items"
        )
    return torch.stack(tensors)


def pad_collate(
    items: list[Any], *, padding_value: float = 0.0, pad_to_multiple_of: int | None = None
) -> PaddedBatch:
    """Pad items of different lengths along their first axis and return them with a mask.

    Items must agree on every axis after the first. ``pad_to_multiple_of`` rounds the
    padded length up (8 suits tensor cores), which also limits how many input shapes
    reach the model and so how many kernels it compiles.
    """
    tensors = [torch.as_tensor(item) for item in items]
    trailing = {tuple(tensor.shape[1:]) for tensor in tensors}
    if len(trailing) > 1:
        raise ValueError(
            f"pad_collate needs items that differ only in length, got trailing shapes "
            f"{sorted(trailing)}"
        )

    lengths = torch.tensor([tensor.shape[0] for tensor in tensors], dtype=torch.long)
    max_length = int(lengths.max()) if len(tensors) else 0
    if pad_to_multiple_of:
        max_length = -(-max_length // pad_to_multiple_of) * pad_to_multiple_of

    values = tensors[0].new_full((len(tensors), max_length, *tensors[0].shape[1:]), padding_value)
    for row, tensor in enumerate(tensors):
        values[row, : tensor.shape[0]] = tensor
    mask = torch.arange(max_length).unsqueeze(0) < lengths.unsqueeze(1)
    return PaddedBatch(values=values, mask=mask, lengths=lengths)


def unstack(output: torch.Tensor) -> list[torch.Tensor]:
    """Split a batch output along its first axis into one tensor per item."""
    return list(output.unbind(0))


def unpad(output: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Split a padded batch output into per-item tensors cut to their real lengths."""
    return [row[:length] for row, length in zip(output.unbind(0), lengths.tolist(), strict=True)]


class TorchPredictor:
    """Wrap a model as ``predict`` for a ``Batcher``: move, run without autograd, return CPU.

    Each call moves the collated batch (a tensor, a ``PaddedBatch``, or a tuple, list or
    dict of tensors) to ``device``, runs ``model`` under ``torch.inference_mode()`` and
    moves the output back to the CPU. On CUDA the input is copied from pinned host memory
    with ``non_blocking=True``, and the output is copied back the same way before one
    stream synchronize, so host and device copies overlap with the kernel launches.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        device: str | torch.device | None = None,
        pin_memory: bool = True,
        unpack: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.is_cuda = self.device.type == "cuda"
        self.pin_memory = pin_memory and self.is_cuda
        # ``unpack=True`` calls ``model(*batch)`` for tuples and ``model(**batch)`` for dicts.
        self.unpack = unpack

        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        logger.info("TorchPredictor running on %s", self.device)

    def __call__(self, batch: Any) -> Any:
        with torch.inference_mode():
            inputs = self._to_device(batch)
            if self.unpack and isinstance(inputs, Mapping):
                output = self.model(**inputs)
            elif self.unpack and isinstance(inputs, tuple | list):
                output = self.model(*inputs)
            else:
                output = self.model(inputs)
            return self._to_cpu(output)

    def _to_device(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if self.pin_memory and value.device.type == "cpu":
                value = value.pin_memory()
            return value.to(self.device, non_blocking=self.is_cuda)
        if isinstance(value, PaddedBatch):
            return PaddedBatch(*(self._to_device(part) for part in value))
        if isinstance(value, Mapping):
            return {key: self._to_device(part) for key, part in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(self._to_device(part) for part in value)
        return value

    def _to_cpu(self, output: Any) -> Any:
        # NOTE: the CUDA branches (pinned copies, stream synchronize) have not run in the
        # test suite, which runs on CPU-only machines.
        if not self.is_cuda:
            return output
        moved = _map_tensors(output, lambda tensor: tensor.to("cpu", non_blocking=True))
        # Non-blocking device-to-host copies are only complete after a synchronize.
        torch.cuda.current_stream(self.device).synchronize()
        return moved


def _map_tensors(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, Mapping):
        return {key: _map_tensors(part, function) for key, part in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(part, function) for part in value))
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return type(value)(_map_tensors(part, function) for part in value)  # type: ignore[call-arg]
    return value
