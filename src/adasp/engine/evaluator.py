"""Embedding extraction and the benchmarks' test protocols, for a trained or untrained model.

Extraction shards the test images over DDP ranks and gathers the embeddings on every rank;
evaluation runs the metric of :mod:`adasp.evaluation` per test set. A dataset whose protocol
is more than one query/gallery split (VehicleID's 10 random gallery draws) has its own entry
in :data:`PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from adasp.engine.config import EvalConfig
from adasp.engine.distributed import DistributedContext, gather_rows

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper or a ``torch.compile`` wrapper (or the model itself)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    samples: Sequence[Any],
    transform: Any,
    *,
    device: torch.device,
    batch_size: int = 128,
    num_workers: int = 2,
    flip: bool = False,
    channels_last: bool = False,
    ctx: DistributedContext | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Embeddings ``(N, D)`` float32 on the CPU of ``samples`` in order.

    Each DDP rank embeds a contiguous shard; the shards are gathered on every rank. ``flip``
    averages the embeddings of each image and its mirror image.
    """
    from adasp.data import build_test_loader

    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    n = len(samples)
    shard = list(samples[n * rank // world : n * (rank + 1) // world])
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    parts = []
    loader = build_test_loader(shard, transform, batch_size=batch_size, num_workers=num_workers)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for batch in loader:
        images = (
            batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        )
        embedding = net(images).float()
        if flip:
            embedding = (embedding + net(images.flip(3)).float()) / 2
        parts.append(embedding.cpu())
        if progress is not None:
            progress(images.shape[0])
    net.train(was_training)
    local = torch.cat(parts) if parts else torch.zeros(0, getattr(net, "embedding_dim", 0))
    if ctx is not None and ctx.distributed:
        return gather_rows(local, ctx).cpu()
    return local


def embed_with_config(
    model: nn.Module,
    samples: Sequence[Any],
    transform: Any,
    config: Any,
    device: torch.device,
    ctx: DistributedContext | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """:func:`extract_embeddings` with the run's test batch size, workers, flip and memory
    format (an :class:`~adasp.engine.config.ExperimentConfig`)."""
    return extract_embeddings(
        model,
        samples,
        transform,
        device=device,
        batch_size=config.data.test_batch_size,
        num_workers=config.data.num_workers,
        flip=config.eval.flip,
        channels_last=config.model.channels_last,
        ctx=ctx,
        progress=progress,
    )


def _arrays(samples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    camids = np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples))
    return pids, camids


def evaluate_split(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    query: Sequence[Any],
    gallery: Sequence[Any],
    cfg: EvalConfig,
    camera_filter: bool,
) -> dict[str, Any]:
    """The ranking metrics of one query/gallery split (the full result dict)."""
    from adasp.evaluation import evaluate_features

    q_pids, q_camids = _arrays(query)
    g_pids, g_camids = _arrays(gallery)
    return evaluate_features(
        query_features,
        gallery_features,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        camera_filter=camera_filter,
        **_metric_options(cfg),
    )


def _metric_options(cfg: EvalConfig) -> dict[str, Any]:
    """The keywords of :func:`adasp.evaluation.evaluate_features` set by ``eval.*``."""
    return {
        "metric": cfg.metric,
        "max_rank": cfg.max_rank,
        "rerank": cfg.rerank,
        "k1": cfg.k1,
        "k2": cfg.k2,
        "lambda_value": cfg.lambda_value,
        "ap_mode": cfg.ap_mode,
    }


@dataclass
class TestSetResult:
    """Summary metrics (fractions) of one test set, with the full results behind them.

    ``summary`` has ``mAP``, ``rank1``, ``rank5``, ``rank10``, ``mINP`` (and, for protocols
    with several draws, ``std`` with the same keys and ``num_draws``).
    """

    name: str
    summary: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


Embedder = Callable[[Sequence[Any]], torch.Tensor]


def single_split_protocol(
    dataset: Any, name: str, embed: Embedder, cfg: EvalConfig, compute: bool = True
) -> TestSetResult:
    """The usual protocol: the dataset's query against its gallery.

    ``compute=False`` only takes part in the (collective) embedding and returns no metrics.
    """
    from adasp.evaluation import summarize

    features = embed(list(dataset.query) + list(dataset.gallery))
    if not compute:
        return TestSetResult(name, {})
    nq = len(dataset.query)
    result = evaluate_split(
        features[:nq], features[nq:], dataset.query, dataset.gallery, cfg, dataset.camera_filter
    )
    details = {"result": result, "features": features, "dataset": dataset}
    return TestSetResult(name, summarize(result), details)


def vehicleid_protocol(
    dataset: Any, name: str, embed: Embedder, cfg: EvalConfig, compute: bool = True
) -> TestSetResult:
    """VehicleID: 10 random draws of one gallery image per vehicle; mean and std over draws.

    The test images are embedded once and re-split for every draw, whatever the dataset's
    own ``trial`` option (which only chooses its ``query``/``gallery`` lists).
    """
    from adasp.data.vehicleid import VEHICLEID_TRIALS, vehicleid_trial_split
    from adasp.evaluation import evaluate_draws

    test = list(dataset.query) + list(dataset.gallery)
    features = embed(test)
    if not compute:
        return TestSetResult(name, {})
    seed = dataset.options.get("seed", 0)
    draws = [vehicleid_trial_split(test, trial, seed) for trial in range(VEHICLEID_TRIALS)]
    pids, camids = _arrays(test)
    aggregate = evaluate_draws(
        features, pids, camids, draws, camera_filter=False, **_metric_options(cfg)
    )
    summary: dict[str, Any] = dict(aggregate["mean"])
    summary["std"] = dict(aggregate["std"])
    summary["num_draws"] = aggregate["num_draws"]
    return TestSetResult(name, summary, {"trials": aggregate["draws"]})


#: Dataset name -> protocol (default: :func:`single_split_protocol`).
PROTOCOLS: dict[str, Callable[..., TestSetResult]] = {"vehicleid": vehicleid_protocol}

#: Dataset options that select a test variant, appended to the test set's name.
VARIANT_OPTIONS = ("split", "test_size")


def test_set_name(dataset: str, options: dict[str, Any]) -> str:
    """E.g. ``market1501``, ``cuhk03-labeled``, ``vehicleid-800``, ``veriwild-10000``."""
    parts = [dataset] + [str(options[k]) for k in VARIANT_OPTIONS if k in options]
    return "-".join(parts)


def run_protocol(
    dataset: Any, name: str, embed: Embedder, cfg: EvalConfig, compute: bool = True
) -> TestSetResult:
    """Evaluate ``dataset`` with its protocol, embedding images with ``embed``.

    ``compute=False`` (DDP ranks other than 0) only takes part in the embedding.
    """
    protocol = PROTOCOLS.get(dataset.name, single_split_protocol)
    return protocol(dataset, name, embed, cfg, compute)


def build_test_sets(cfg: Any, main_dataset: Any | None = None) -> list[tuple[str, Any]]:
    """``(name, dataset)`` of the main test set and each of ``data.test_sets``.

    ``cfg`` is the :class:`~adasp.engine.config.DataConfig`; an extra test set without its
    own root shares the main dataset's.
    """
    from adasp.data import build_dataset
    from adasp.engine.builders import build_datasets, dataset_root

    main = main_dataset if main_dataset is not None else build_datasets(cfg)
    sets = [(test_set_name(main.name, main.options), main)]
    for extra in cfg.test_sets:
        root = dataset_root(extra.dataset, extra.root or cfg.root)
        dataset = build_dataset(extra.dataset, root, **extra.options)
        sets.append((extra.name or test_set_name(dataset.name, dataset.options), dataset))
    return sets
