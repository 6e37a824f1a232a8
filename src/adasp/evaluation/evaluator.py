"""The evaluator a training run (or ``adasp evaluate``) calls: test sets in, typed results out.

An :class:`Evaluator` holds the test sets, the test transform and the metric options; calling
:meth:`Evaluator.evaluate` embeds each test set with the model and runs the dataset's protocol
(:data:`~adasp.evaluation.protocols.PROTOCOLS`). Under DDP every rank embeds a shard, rank 0
computes the metrics and every rank receives them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from adasp.evaluation.extraction import extract_embeddings
from adasp.evaluation.options import RankingOptions
from adasp.evaluation.protocols import run_protocol
from adasp.evaluation.results import TestSetResult
from adasp.utils.distributed import ProcessRanks, broadcast_from_main


class Evaluator:
    """Evaluates a model on named test sets with one set of metric and embedding options.

    Args:
        test_sets: ``(name, dataset)`` pairs (a :class:`~adasp.data.ReIDDataset` each); the
            first is the run's main test set.
        transform: the test transform (PIL image -> normalised tensor).
        ranking: how embeddings are ranked and scored (metric, re-ranking, AP variant...).
        flip: average the embeddings of each image and its mirror image.
        batch_size, num_workers: of the embedding loader.
        channels_last: feed images in channels-last memory format.

    Example:
        >>> evaluator = Evaluator([("market1501", market)], build_test_transform((256, 128)))
        >>> results = evaluator.evaluate(model, device="cuda")
        >>> results[0].metrics.mAP
    """

    def __init__(
        self,
        test_sets: Sequence[tuple[str, Any]],
        transform: Any,
        *,
        ranking: RankingOptions | None = None,
        flip: bool = False,
        batch_size: int = 128,
        num_workers: int = 2,
        channels_last: bool = False,
    ) -> None:
        self.test_sets = list(test_sets)
        self.transform = transform
        self.ranking = ranking if ranking is not None else RankingOptions()
        self.flip = flip
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.channels_last = channels_last

    def embed(
        self,
        model: nn.Module,
        samples: Sequence[Any],
        device: torch.device | str,
        progress: bool = False,
        desc: str = "embedding",
        ranks: ProcessRanks | None = None,
    ) -> torch.Tensor:
        """Embeddings ``(N, D)`` (CPU, float32) of ``samples`` with this evaluator's options."""
        bar = _progress_bar(len(samples), desc) if progress else None
        try:
            return extract_embeddings(
                model,
                samples,
                self.transform,
                device=device,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                flip=self.flip,
                channels_last=self.channels_last,
                progress=bar.update if bar is not None else None,
                ranks=ranks,
            )
        finally:
            if bar is not None:
                bar.close()

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device | str,
        progress: bool = False,
        keep_details: bool = False,
        ranks: ProcessRanks | None = None,
    ) -> list[TestSetResult]:
        """One :class:`TestSetResult` per test set, in order (on every DDP rank).

        Args:
            keep_details: keep each single-split result's full result, embeddings and dataset
                (for pictures of ranked lists); only on rank 0.
            ranks: this process's place in the group (the engine passes its own; default:
                :meth:`~adasp.utils.distributed.ProcessRanks.current`). Rank 0 computes the
                metrics; every rank embeds a shard.
        """
        ranks = ranks if ranks is not None else ProcessRanks.current()
        main = ranks.is_main
        results: list[TestSetResult] = []
        for name, dataset in self.test_sets:

            def embed(samples: Sequence[Any], _name: str = name) -> torch.Tensor:
                return self.embed(
                    model, samples, device, progress and main, f"embedding {_name}", ranks
                )

            result = run_protocol(dataset, name, embed, self.ranking, main, keep_details)
            if result is not None:  # None on ranks other than 0
                results.append(result)
        metrics = broadcast_from_main([r.metrics for r in results] if main else None)
        if main:
            return results
        return [
            TestSetResult(name, m) for (name, _), m in zip(self.test_sets, metrics, strict=True)
        ]


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, dynamic_ncols=True, mininterval=1.0, file=sys.stderr, leave=False
    )
