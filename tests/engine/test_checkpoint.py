"""Checkpoint files: atomic, weights_only, RNG round trip."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from adasp.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from adasp.errors import MissingPathError, UserInputError


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_arbitrary_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(UserInputError, match="refused for safety"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(MissingPathError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": torch.ones(2)})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"a": Unsaveable()})
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
