"""The P×K identity batch sampler, deterministic, resumable and DDP-aware."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from adasp.errors import UserInputError
from adasp.utils.distributed import ProcessRanks


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserInputError(f"PKSampler: {name} must be a positive integer, got {value!r}")
    return int(value)


class PKSampler(Sampler[list[int]]):
    """Batches of P identities × K instances (a batch sampler: yields lists of dataset indices).

    By default an epoch is one pass over the identities: they are shuffled and grouped P per
    global batch (an incomplete last group is dropped). ``batches_per_epoch`` sets another
    length (e.g. ``len(dataset) // batch_size``, the "epoch" of fast-reid and torchreid, so that
    their recipes' epoch counts mean the same amount of training): the epoch then chains as
    many such passes ("rounds") as needed, each with a fresh shuffle of identities and images.
    Each identity contributes K instances per appearance, drawn without replacement when it
    has at least K images; otherwise all its images are used and the rest is drawn with
    replacement. The draw depends only on ``(seed, epoch)``.

    Under ``torch.distributed`` each global batch is split by whole identities: rank ``r``
    yields the ``r``-th block of ``P / world_size`` identities (``batch_size // world_size``
    indices), so ranks see disjoint identities, all ranks yield the same number of batches,
    and the union over ranks is the global P×K batch. The global batch sequence does not
    depend on the world size, so a run may resume on a different number of GPUs.

    Args:
        pids: identity of every dataset index (length ``N``).
        batch_size: global batch size ``P × K`` (summed over ranks).
        num_instances: ``K``, instances per identity.
        seed: base seed of the shuffles.
        rank, world_size: this process's place; default to ``torch.distributed``'s when it is
            initialised, else 0 and 1.
        batches_per_epoch: batches in an epoch; ``None``: one pass over the identities.

    Example:
        >>> sampler = PKSampler([s.pid for s in dataset.train], batch_size=64, num_instances=8)
        >>> for epoch in range(epochs):
        ...     sampler.set_epoch(epoch)
        ...     for indices in sampler: ...
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        batches_per_epoch: int | None = None,
    ) -> None:
        labels = np.asarray(pids)
        if labels.ndim != 1 or labels.size == 0:
            raise UserInputError(
                f"PKSampler: pids must be a non-empty 1-D sequence, got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserInputError(f"PKSampler: pids must be integers, got dtype {labels.dtype}")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.num_instances = _positive_int(num_instances, "num_instances")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserInputError(f"PKSampler: seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        current = ProcessRanks.current()
        default_rank, default_world = current.rank, current.world_size
        self.world_size = _positive_int(
            default_world if world_size is None else world_size, "world_size"
        )
        self.rank = default_rank if rank is None else rank
        if not isinstance(self.rank, (int, np.integer)) or not 0 <= self.rank < self.world_size:
            raise UserInputError(
                f"PKSampler: rank must be in 0..{self.world_size - 1}, got {self.rank!r}"
            )
        if self.batch_size % self.num_instances:
            raise UserInputError(
                f"PKSampler: batch_size {self.batch_size} is not divisible by num_instances "
                f"{self.num_instances}; use a multiple of {self.num_instances}, e.g. "
                f"{max(1, self.batch_size // self.num_instances) * self.num_instances}"
            )
        self.num_identities_per_batch = self.batch_size // self.num_instances
        if self.num_identities_per_batch % self.world_size:
            raise UserInputError(
                f"PKSampler: P = batch_size / num_instances = {self.num_identities_per_batch} "
                f"identities per batch cannot be split by whole identities over "
                f"{self.world_size} processes; make P a multiple of {self.world_size} (e.g. "
                f"batch_size {self.world_size * self.num_instances * max(1, self.num_identities_per_batch // self.world_size)})"
            )
        _, identity, counts = np.unique(labels, return_inverse=True, return_counts=True)
        self.num_samples = int(labels.size)
        self.num_identities = int(counts.size)
        if self.num_identities < self.num_identities_per_batch:
            raise UserInputError(
                f"PKSampler: the data has {self.num_identities} identities but a batch needs "
                f"P = {self.num_identities_per_batch} (batch_size {self.batch_size} / "
                f"num_instances {self.num_instances}); lower batch_size to at most "
                f"{self.num_identities * self.num_instances}"
            )
        # Dataset indices grouped by identity (identities in sorted-label order), with each
        # identity's offset into that array and its image count.
        self._grouped = np.argsort(identity, kind="stable")
        self._group_of_grouped = identity[self._grouped]
        self._counts = counts
        self._offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.batches_per_epoch = (
            None
            if batches_per_epoch is None
            else _positive_int(batches_per_epoch, "batches_per_epoch")
        )
        self.epoch = 0
        self._start_batch = 0

    @property
    def local_batch_size(self) -> int:
        """Indices per batch on this rank: ``batch_size // world_size``."""
        return self.batch_size // self.world_size

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        return self.num_identities // self.num_identities_per_batch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle the next ``iter()`` yields.

        Setting the epoch restored by :meth:`load_state_dict` keeps the resume position;
        setting another epoch starts it from its first batch.
        """
        if epoch != self.epoch:
            self._start_batch = 0
        self.epoch = int(epoch)

    def global_batches(self, epoch: int) -> np.ndarray:
        """Every global batch of ``epoch``: an ``int64`` array ``(len(self), P, K)`` of indices."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        p, k = self.num_identities_per_batch, self.num_instances
        per_round = self.num_identities // p
        rounds = -(-len(self) // per_round)  # ceil: passes over the identities this epoch needs
        chosen = np.concatenate([self._round(rng, per_round) for _ in range(rounds)])
        return chosen[: len(self)].reshape(len(self), p, k).astype(np.int64)

    def _round(self, rng: np.random.Generator, num_batches: int) -> np.ndarray:
        """One pass over the identities: ``num_batches`` batches of P distinct identities."""
        p, k = self.num_identities_per_batch, self.num_instances
        identities = rng.permutation(self.num_identities)[: num_batches * p]
        # Shuffle every identity's images at once: sort by (identity, random key).
        keys = rng.random(self.num_samples)
        shuffled = self._grouped[np.lexsort((keys, self._group_of_grouped))]
        counts = self._counts[identities][:, None]
        column = np.arange(k)[None, :]
        # Columns beyond an identity's image count are drawn with replacement.
        extra = np.floor(rng.random((identities.size, k)) * counts).astype(np.int64)
        position = np.where(column < counts, column, extra)
        return shuffled[self._offsets[identities][:, None] + position].reshape(num_batches, p, k)

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start_batch = self._start_batch, 0
        per_rank = self.num_identities_per_batch // self.world_size
        batches = self.global_batches(self.epoch)
        local = batches[:, self.rank * per_rank : (self.rank + 1) * per_rank, :]
        local = local.reshape(len(self), per_rank * self.num_instances)
        for batch in local[start:]:
            yield batch.tolist()

    def state_dict(self, batches_consumed: int) -> dict[str, int]:
        """The position after ``batches_consumed`` batches of the current epoch.

        The caller counts consumed batches itself: a ``DataLoader`` draws batches from the
        sampler ahead of the training step, so the sampler cannot know what was consumed.
        """
        if not 0 <= batches_consumed <= len(self):
            raise UserInputError(
                f"PKSampler: batches_consumed must be in 0..{len(self)} (batches per epoch), "
                f"got {batches_consumed}"
            )
        return {
            "epoch": self.epoch,
            "batches_consumed": int(batches_consumed),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_instances": self.num_instances,
            "num_samples": self.num_samples,
            "num_identities": self.num_identities,
            "batches_per_epoch": len(self),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a :meth:`state_dict`: the next ``iter()`` continues from its batch."""
        current = self.state_dict(0)
        for key in ("seed", "batch_size", "num_instances", "num_samples", "num_identities",
                    "batches_per_epoch"):  # fmt: skip
            if state.get(key) != current[key]:
                raise UserInputError(
                    f"PKSampler: cannot resume: the saved {key} is {state.get(key)!r} but this "
                    f"sampler has {current[key]!r}; resume with the same data and "
                    f"sampler settings"
                )
        batches = int(state["batches_consumed"])
        if not 0 <= batches <= len(self):
            raise UserInputError(
                f"PKSampler: saved batches_consumed {batches} is outside 0..{len(self)}"
            )
        self.epoch = int(state["epoch"])
        self._start_batch = batches
