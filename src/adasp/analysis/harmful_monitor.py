"""Measuring, during training, how many harmful positive pairs each loss selects.

With a dataset that marks the images sharing no visual cue with the rest of their identity
(the synthetic set does), the monitor computes on every training batch the fraction of the
pairs selected by batch-hard triplet, SP-H, SP-LH and AdaSP that are harmful
(:func:`adasp.analysis.pair_selection.harmful_fraction_tensors`) and keeps running means. The trainer
logs the per-step values and stores the summary with the evaluation results.
"""

from __future__ import annotations

from typing import Any

import torch

from adasp.analysis.pair_selection import SELECTORS, harmful_fraction_tensors
from adasp.errors import UserInputError

KEYS = (*SELECTORS, "all")


class HarmfulPairMonitor:
    """Running harmful-pair fractions of the pairs each loss selects.

    The per-batch fractions are added up on the features' device; the host reads them only
    when the trainer logs (:meth:`last_values`), evaluates (:meth:`summary`) or checkpoints
    (:meth:`state_dict`), so observing a batch does not wait for the GPU.

    Args:
        harmful: ``(N,)`` bool per training image (dataset index order).
        temperature: τ for AdaSP's adaptive weight.
    """

    def __init__(self, harmful: torch.Tensor, temperature: float = 0.04) -> None:
        self.harmful = harmful.bool().cpu()
        self.temperature = temperature
        self._sums = torch.zeros(len(KEYS), dtype=torch.float64)
        self._last: torch.Tensor | None = None
        self.steps = 0

    @classmethod
    def for_dataset(cls, dataset: Any, temperature: float = 0.04) -> HarmfulPairMonitor:
        """A monitor for ``dataset.train`` using its ``harmful`` marks."""
        marked: frozenset[str] = dataset.marks.get("harmful", frozenset())
        if not marked:
            raise UserInputError(
                f"the harmful_pairs callback needs a dataset that marks harmful images; "
                f"{dataset.name!r} has none (use --dataset synthetic)"
            )
        flags = torch.tensor([s.path in marked for s in dataset.train], dtype=torch.bool)
        return cls(flags, temperature)

    def observe(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor], step: int) -> None:
        """Measure one batch from the model's training outputs and the loader's batch."""
        features = outputs["features"]
        if isinstance(features, (list, tuple)):
            features = features[0]  # MGN: the global branch
        flags = self.harmful[batch["index"].cpu()]
        values = harmful_fraction_tensors(features, batch["pid"], flags, self.temperature)
        stacked = torch.stack([values[k] for k in KEYS]).to(torch.float64)
        self._sums = self._sums.to(stacked.device) + stacked
        self._last = stacked
        self.steps += 1

    def last_values(self) -> dict[str, float]:
        """The last batch's fractions, keyed ``harmful/<loss>`` for the logs (a host read)."""
        if self._last is None:
            return {}
        return {f"harmful/{k}": v for k, v in zip(KEYS, self._last.tolist(), strict=True)}

    def summary(self) -> dict[str, float]:
        """Mean fraction per loss over the batches seen so far, and the batch count."""
        sums = self._sums.tolist()
        out: dict[str, float] = {k: v / max(self.steps, 1) for k, v in zip(KEYS, sums, strict=True)}
        out["batches"] = self.steps
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(zip(KEYS, self._sums.tolist(), strict=True)), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = torch.tensor([float(state["sums"][k]) for k in KEYS], dtype=torch.float64)
        self.steps = int(state["steps"])
