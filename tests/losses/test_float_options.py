"""Every float option of every loss refuses non-numbers and non-finite values, naming itself."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from adasp.losses import (
    AdaSPLoss,
    CircleLoss,
    CrossEntropyLabelSmooth,
    EPLoss,
    MultiSimilarityLoss,
    SupConLoss,
    TripletLoss,
    sparse_pairwise_loss,
    sparse_pairwise_stats,
)
from adasp.utils.checks import check_float

LOSS_CLASSES = [
    AdaSPLoss,
    CircleLoss,
    CrossEntropyLabelSmooth,
    EPLoss,
    MultiSimilarityLoss,
    SupConLoss,
    TripletLoss,
]

#: (loss class, option) for every constructor argument whose default is a float.
FLOAT_OPTIONS = [
    (cls, name)
    for cls in LOSS_CLASSES
    for name, parameter in inspect.signature(cls).parameters.items()
    if isinstance(parameter.default, float)
]


def test_every_loss_has_float_options_listed():
    names = {(cls.__name__, name) for cls, name in FLOAT_OPTIONS}
    assert ("AdaSPLoss", "temperature") in names and ("MultiSimilarityLoss", "scale_neg") in names
    assert len(FLOAT_OPTIONS) == 11


@pytest.mark.parametrize(
    "bad", ["abc", "0.1", None, True, [0.1], float("inf"), -math.inf, math.nan]
)
@pytest.mark.parametrize(("cls", "name"), FLOAT_OPTIONS, ids=lambda v: getattr(v, "__name__", v))
def test_bad_float_option_is_a_value_error_naming_it(cls, name, bad):
    with pytest.raises(ValueError, match=rf"^{name} must be .*a finite number.*, got "):
        cls(**{name: bad})


@pytest.mark.parametrize(("cls", "name"), FLOAT_OPTIONS, ids=lambda v: getattr(v, "__name__", v))
def test_numpy_and_tensor_scalars_are_accepted_as_floats(cls, name):
    default = inspect.signature(cls).parameters[name].default
    for value in (np.float32(default), torch.tensor(default), int(default) or default):
        loss = cls(**{name: value})
        assert type(getattr(loss, name)) is float
        assert getattr(loss, name) == pytest.approx(float(value))


def test_message_names_the_allowed_range():
    with pytest.raises(ValueError, match=r"temperature must be > 0 \(a finite number\), got 'abc'"):
        AdaSPLoss(temperature="abc")
    with pytest.raises(ValueError, match=r"temperature must be > 0 \(a finite number\), got inf"):
        AdaSPLoss(temperature=float("inf"))
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\) \(a finite number\)"):
        CrossEntropyLabelSmooth(epsilon=math.nan)
    with pytest.raises(ValueError, match=r"margin must be >= 0 .*0 selects the soft margin"):
        TripletLoss(margin=-0.1)
    # Unbounded options still refuse non-finite values.
    with pytest.raises(ValueError, match=r"^threshold must be a finite number, got inf$"):
        MultiSimilarityLoss(threshold=math.inf)


def test_functional_forms_check_the_temperature_too():
    features, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sparse_pairwise_loss(features, labels, temperature=math.inf)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sparse_pairwise_stats(features, labels, temperature="0.04")


def test_check_float_ranges():
    assert check_float("x", 1, 0, 1) == 1.0
    assert check_float("x", 0, 0) == 0.0
    with pytest.raises(ValueError, match=r"x must be in \(0, 1\]"):
        check_float("x", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match=r"x must be < 2"):
        check_float("x", 2, high=2, high_open=True)
    with pytest.raises(KeyError):
        check_float("x", "y", error=KeyError)
