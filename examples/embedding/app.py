"""The example service: an ordinary FastAPI app, then one ``instrument()`` call.

Environment:
    MLMW_FEEDBACK_DIR      where feedback and captured predictions go
                           (default: <system temp dir>/mlmiddleware-feedback)
    MLMW_CAPTURE_RATE      fraction of predictions captured (default 0.1)
    MODEL_VERSION          reported in logs, metrics and X-Model-Version
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from fastapi import FastAPI
from starlette.routing import Route

import mlmiddleware
from examples.embedding.model import load_encoder, to_list
from mlmiddleware.batching import Batcher, batching_endpoint
from mlmiddleware.feedback import JsonlFeedbackSink
from mlmiddleware.torch import TorchPredictor, pad_collate

# The existing service, with routes of its own that the toolkit does not touch.
api = FastAPI(title="catalogue")


@api.get("/")
def index() -> dict[str, str]:
    return {"service": "catalogue", "embeddings": "POST /v1/embeddings"}


@api.get("/v1/items/{item_id}")
def read_item(item_id: int) -> dict[str, int | str]:
    return {"item_id": item_id, "name": f"item {item_id}"}


def feedback_directory() -> Path:
    default = Path(tempfile.gettempdir()) / "mlmiddleware-feedback"
    return Path(os.environ.get("MLMW_FEEDBACK_DIR", str(default)))


# One intra-op thread per worker process: the batcher, not torch, provides parallelism here,
# and several workers on one machine should not oversubscribe its cores.
torch.set_num_threads(int(os.environ.get("MLMW_TORCH_THREADS", "1")))

tokenize, encoder = load_encoder()
feedback = JsonlFeedbackSink(feedback_directory())
WARMUP_SENTENCES = [tokenize("warm up the model"), tokenize("a second, longer warm-up sentence")]

embedder = Batcher(
    TorchPredictor(encoder),
    name="all-MiniLM-L6-v2",
    max_batch_size=32,
    # Bound a batch by tokens too, so 32 long sentences cannot exhaust GPU memory.
    cost=len,
    max_batch_cost=32 * 128,
    collate=lambda items: pad_collate(items, pad_to_multiple_of=8),
    warmup=WARMUP_SENTENCES,
    warmup_batch_sizes=[1, 8, 32],
    stuck_after_s=30.0,
    capture=feedback,
    capture_rate=float(os.environ.get("MLMW_CAPTURE_RATE", "0.1")),
)
api.router.routes.append(
    Route(
        "/v1/embeddings",
        batching_endpoint(embedder, decode=tokenize, encode=to_list),
        methods=["POST"],
    )
)

app = mlmiddleware.instrument(
    api,
    service="catalogue",
    model_version=os.environ.get("MODEL_VERSION", "all-MiniLM-L6-v2"),
    batchers=[embedder],
    feedback=feedback,
)
