"""The evaluation options, owned here and embedded by the experiment config (``eval.*``).

:class:`RankingOptions` is what ranks and scores embeddings (the keywords of
:func:`~adasp.evaluation.evaluate_features`); :class:`EvaluationOptions` adds how the
embeddings are made. Builders and protocols pass the object, so a new option is a field here
(with its check in :meth:`RankingOptions.check`) and the code that uses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from adasp.errors import UserInputError


@dataclass
class RankingOptions:
    """How query embeddings are ranked against the gallery and scored.

    Attributes:
        metric: ``cosine`` or ``euclidean`` distance.
        max_rank: length of the CMC curve.
        ap_mode: ``standard`` or ``trapezoid`` average precision.
        rerank: k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value``.
        chunk_size: queries ranked per block (peak memory is the features plus one block of
            ``chunk_size × gallery`` distances); None: about 16 M distances per block.
    """

    metric: Literal["cosine", "euclidean"] = "cosine"
    max_rank: int = 50
    ap_mode: Literal["standard", "trapezoid"] = "standard"
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    chunk_size: int | None = None

    def keywords(self) -> dict[str, Any]:
        """The ranking fields as keywords of :func:`~adasp.evaluation.evaluate_features`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RankingOptions)}

    def ranking(self) -> RankingOptions:
        """Only the ranking options (of an :class:`EvaluationOptions` too)."""
        return RankingOptions(**self.keywords())

    def check(self, prefix: str = "", error: type[Exception] = UserInputError) -> None:
        """Raise ``error`` naming ``prefix + field`` for a value out of range."""
        if self.max_rank < 1:
            raise error(f"config key '{prefix}max_rank' must be >= 1, got {self.max_rank}")
        if self.k1 < 1 or self.k2 < 1:
            raise error(
                f"config keys '{prefix}k1', '{prefix}k2' must be >= 1, got {self.k1}, {self.k2}"
            )
        if not 0 <= self.lambda_value <= 1:
            raise error(
                f"config key '{prefix}lambda_value' must be in [0, 1], got {self.lambda_value}"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise error(
                f"config key '{prefix}chunk_size' must be >= 1 or null, got {self.chunk_size}"
            )


@dataclass
class EvaluationOptions(RankingOptions):
    """The ``eval`` section of an experiment config: the ranking options, and
    ``flip``: average the embeddings of each image and its mirror image."""

    flip: bool = False
