"""Embedding images with a model: in order, in batches, sharded over DDP ranks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from adasp.errors import UserInputError
from adasp.models import unwrap_model
from adasp.utils.distributed import ProcessRanks, gather_rows


class NonFiniteEmbeddingsError(UserInputError):
    """The model produced NaN or infinite embeddings (e.g. a checkpoint with NaN weights):
    every distance and metric computed from them would be meaningless."""


def check_finite_embeddings(embeddings: torch.Tensor, samples: Sequence[Any]) -> torch.Tensor:
    """``embeddings (N, D)`` if every value is finite.

    Raises:
        NonFiniteEmbeddingsError: how many rows are not, and the first image's path.
    """
    # On the host copy, after the one wait for the device: no further device read.
    bad = ~np.isfinite(embeddings.detach().cpu().numpy()).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        where = getattr(samples[first], "path", f"image {first}")
        raise NonFiniteEmbeddingsError(
            f"{int(bad.sum())} of {len(bad)} embeddings are not finite (NaN or inf), the first "
            f"of {where}: the model's weights are not finite or it overflows; check the "
            "checkpoint (a diverged run?)"
        )
    return embeddings


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    samples: Sequence[Any],
    transform: Any,
    *,
    device: torch.device | str,
    batch_size: int = 128,
    num_workers: int = 2,
    flip: bool = False,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
    ranks: ProcessRanks | None = None,
) -> torch.Tensor:
    """Embeddings ``(N, D)`` float32 on the CPU of ``samples`` (``Sample``s), in order.

    Under ``torch.distributed`` each rank embeds a contiguous shard and the shards are
    gathered on every rank (call it on every rank). ``flip`` averages the embeddings of each
    image and its mirror image. The model is put in eval mode and back afterwards.

    Non-finite embeddings are refused (:class:`NonFiniteEmbeddingsError`): nothing downstream
    could tell them from real ones. The host waits for the device once, at the end: each batch's embedding is copied into a
    preallocated (pinned, on CUDA) host buffer without blocking.

    Args:
        model: returns ``(B, D)`` embeddings in eval mode (e.g. a :class:`~adasp.models.ReIDModel`).
        transform: the test transform (PIL image -> tensor).
        progress: called with the number of images of each batch, as it is queued.
        ranks: this process's rank and the group size (default: :meth:`ProcessRanks.current`).
    """
    from adasp.data import build_test_loader

    device = torch.device(device)
    ranks = ranks if ranks is not None else ProcessRanks.current()
    rank, world = ranks.rank, ranks.world_size
    n = len(samples)
    shard = list(samples[n * rank // world : n * (rank + 1) // world])
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    loader = build_test_loader(shard, transform, batch_size=batch_size, num_workers=num_workers)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    local: torch.Tensor | None = None
    start = 0
    try:
        for batch in loader:
            images = (
                batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            )
            embedding = net(images).float()
            if flip:
                embedding = (embedding + net(images.flip(3)).float()) / 2
            if local is None:  # the embedding size is known after the first batch
                local = torch.empty(
                    (len(shard), embedding.shape[1]), pin_memory=device.type == "cuda"
                )
            stop = start + embedding.shape[0]
            local[start:stop].copy_(embedding, non_blocking=True)
            start = stop
            if progress is not None:
                progress(images.shape[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the copies into ``local`` are complete
    finally:
        net.train(was_training)
    if local is None:
        local = torch.zeros(0, getattr(net, "embedding_dim", 0))
    embeddings = gather_rows(local).cpu() if world > 1 else local
    return check_finite_embeddings(embeddings, samples)
