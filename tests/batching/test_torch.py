"""mlmiddleware.torch: collate functions, TorchPredictor, and torch staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from prometheus_client import CollectorRegistry

from mlmiddleware.batching import Batcher
from mlmiddleware.torch import (
    PaddedBatch,
    TorchPredictor,
    pad_collate,
    stack_collate,
    unpad,
    unstack,
)

pytestmark = pytest.mark.torch


def test_stack_collate_stacks_items() -> None:
    batch = stack_collate([[1.0, 2.0], torch.tensor([3.0, 4.0])])

    assert batch.shape == (2, 2)
    assert batch[1].tolist() == [3.0, 4.0]


def test_stack_collate_rejects_mixed_shapes() -> None:
    with pytest.raises(ValueError, match="use pad_collate"):
        stack_collate([torch.zeros(2), torch.zeros(3)])


def test_pad_collate_pads_and_masks() -> None:
    batch = pad_collate([torch.ones(2, 3), torch.ones(4, 3)], padding_value=-1.0)

    assert batch.values.shape == (2, 4, 3)
    assert batch.mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert batch.lengths.tolist() == [2, 4]
    assert batch.values[0, 2:].eq(-1.0).all()


def test_pad_collate_rounds_length() -> None:
    batch = pad_collate([[1, 2, 3]], pad_to_multiple_of=8)

    assert batch.values.shape == (1, 8)
    assert batch.mask.sum().item() == 3


def test_pad_collate_rejects_trailing_mismatch() -> None:
    with pytest.raises(ValueError, match="differ only in length"):
        pad_collate([torch.ones(2, 3), torch.ones(2, 4)])


def test_unpad_cuts_real_lengths() -> None:
    output = torch.arange(8).reshape(2, 4)

    rows = unpad(output, torch.tensor([1, 3]))

    assert [row.tolist() for row in rows] == [[0], [4, 5, 6]]


def test_predictor_runs_without_autograd() -> None:
    linear = torch.nn.Linear(3, 2)
    predictor = TorchPredictor(linear, device="cpu")

    output = predictor(torch.ones(4, 3))

    assert output.shape == (4, 2)
    assert output.is_inference()
    assert output.device.type == "cpu"


def test_predictor_moves_nested_batch() -> None:
    def model(values: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum(dim=1)

    predictor = TorchPredictor(model, device="cpu", unpack=True)
    batch = pad_collate([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])

    output = predictor(batch)

    assert isinstance(batch, PaddedBatch)
    assert output.tolist() == [3.0, 3.0]


def test_default_device_matches_cuda() -> None:
    predictor = TorchPredictor(torch.nn.Identity())

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert predictor.device.type == expected


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_batcher_with_torch_helpers(anyio_backend: str) -> None:
    predictor = TorchPredictor(torch.nn.Linear(4, 2), device="cpu")
    batcher = Batcher(
        predictor,
        registry=CollectorRegistry(),
        collate=stack_collate,
        uncollate=unstack,
        warmup=[torch.zeros(4)],
        max_batch_size=4,
    )
    async with batcher:
        result = await batcher.submit(torch.ones(4))

    assert result.shape == (2,)


def test_package_import_skips_torch() -> None:
    code = (
        "import sys, mlmiddleware, mlmiddleware.batching, mlmiddleware._instrument; "
        "print('torch' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert output.stdout.strip() == "False"
