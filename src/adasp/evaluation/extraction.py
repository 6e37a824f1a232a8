"""Embedding images with a model: in order, in batches, sharded over DDP ranks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from adasp.models import unwrap_model
from adasp.utils.distributed import ProcessRanks, gather_rows


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

    The host waits for the device once, at the end: each batch's embedding is copied into a
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
    return gather_rows(local).cpu() if world > 1 else local
