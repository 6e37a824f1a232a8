"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def native_cpu_convolutions():
    """Run CPU convolutions without oneDNN in these tests.

    oneDNN compiles a kernel for each new convolution shape on first use, which at these tiny
    inputs costs several times the forward pass itself (seconds for a ResNet-152); the native
    kernels compute the same function without that warm-up. Users' runs keep oneDNN.
    """
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
