"""Pretrained weights: torchvision and IBN-Net layouts from local files, safety, clear errors.

Every file here is built locally from random weights in the published layouts; nothing is
downloaded.
"""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from adasp.errors import MissingPathError, UserInputError
from adasp.models import build_model, load_pretrained, read_state_dict
from adasp.models.resnet import resnet18


@pytest.fixture(scope="module")
def torchvision_resnet50():
    """A torchvision ResNet-50 state dict, as in resnet50-0676ba61.pth (random values)."""
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


def to_ibn_a_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rewrite a torchvision ResNet state dict into the IBN-Net release's IBN-a names:
    in stages 1-3, ``bn1`` splits into ``bn1.IN`` (first half, affine only) and ``bn1.BN``."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("layer1", "layer2", "layer3") and parts[2] == "bn1":
            half = state[".".join([*parts[:3], "weight"])].shape[0] // 2
            prefix, field = ".".join(parts[:3]), parts[3]
            if field in ("weight", "bias"):
                out[f"{prefix}.IN.{field}"] = value[:half].clone()
                out[f"{prefix}.BN.{field}"] = value[half:].clone()
            elif field == "num_batches_tracked":
                out[f"{prefix}.BN.{field}"] = value
            else:
                out[f"{prefix}.BN.{field}"] = value[half:].clone()
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_resnet50_file_loads_with_only_fc_unexpected(
    tmp_path, torchvision_resnet50, suffix, caplog
):
    path = tmp_path / f"resnet50-0676ba61{suffix}"
    if suffix == ".pth":
        torch.save(torchvision_resnet50, path)
    else:
        save_file(torchvision_resnet50, str(path))
    with caplog.at_level(logging.INFO, logger="adasp.models.weights"):
        model = build_model("resnet50", 10, pretrained=str(path))
    report = model.pretrained_report
    assert report.missing == ()
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert report.loaded == len(torchvision_resnet50) - 2
    torch.testing.assert_close(
        model.backbone.layer4[2].conv3.weight, torchvision_resnet50["layer4.2.conv3.weight"]
    )
    assert "unexpected 2 (fc." in caplog.text and str(path) in caplog.text


@pytest.mark.slow
def test_ibn_net_layout_file_loads(tmp_path, torchvision_resnet50):
    ibn = to_ibn_a_layout(torchvision_resnet50)
    assert "layer3.5.bn1.IN.weight" in ibn and "layer3.5.bn1.BN.running_mean" in ibn
    path = tmp_path / "resnet50_ibn_a-d9d0bb7b.pth"
    torch.save(ibn, path)
    model = build_model("resnet50_ibn_a", 10, pretrained=path)
    assert model.pretrained_report.missing == ()
    assert sorted(model.pretrained_report.unexpected) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(
        model.backbone.layer2[1].bn1.BN.running_var, ibn["layer2.1.bn1.BN.running_var"]
    )

    # The old release: a training checkpoint with DataParallel names under "state_dict".
    old = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in ibn.items()}}, old)
    report = build_model("resnet50_ibn_a", 10, pretrained=old).pretrained_report
    assert report.missing == () and sorted(report.unexpected) == ["fc.bias", "fc.weight"]


@pytest.mark.slow
def test_ibn_net_file_loads_into_every_mgn_branch(tmp_path, torchvision_resnet50):
    ibn = to_ibn_a_layout(torchvision_resnet50)
    path = tmp_path / "resnet50_ibn_a.safetensors"
    save_file(ibn, str(path))
    model = build_model("mgn", 0, pretrained=path)
    assert model.pretrained_report.missing == ()
    assert sorted(model.pretrained_report.unexpected) == ["fc.bias", "fc.weight"]
    for branch in model.backbone.branches:
        torch.testing.assert_close(branch.layer4[0].conv2.weight, ibn["layer4.0.conv2.weight"])
        torch.testing.assert_close(
            getattr(branch.layer3, "5").bn1.IN.bias, ibn["layer3.5.bn1.IN.bias"]
        )
    torch.testing.assert_close(
        model.backbone.stem.layer3[0].conv1.weight, ibn["layer3.0.conv1.weight"]
    )


def test_torchvision_weights_into_ibn_a_report_the_norm_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    report = build_model("resnet18_ibn_a", 0, pretrained=path).pretrained_report
    assert "layer1.0.bn1.IN.weight" in report.missing
    assert "layer1.0.bn1.weight" in report.unexpected and "fc.weight" in report.unexpected


class Payload:
    """Unpickling this creates a file: the test checks that it never happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Payload(marker)}, path)
    with pytest.raises(
        UserInputError, match=r"refused to load .*Python objects other than tensors"
    ):
        build_model("resnet18", 5, pretrained=path)
    assert not marker.exists()


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(MissingPathError, match=r"not found: .*nope\.pth.*'imagenet'"):
        build_model("resnet18", 5, pretrained=tmp_path / "nope.pth")
    with pytest.raises(UserInputError, match="is a folder"):
        read_state_dict(tmp_path)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=r"could not read .*broken\.pth"):
        read_state_dict(broken)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(UserInputError, match="as a safetensors file"):
        read_state_dict(broken)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(UserInputError, match="holds no tensors"):
        read_state_dict(empty)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(UserInputError, match="not a state dict"):
        read_state_dict(tensor)


@pytest.mark.slow
def test_wrong_architecture_is_an_error_naming_the_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(
        UserInputError, match=r"do not fit .*layer1\.0\.conv1\.weight \(file \(64, 64, 3, 3\)"
    ):
        build_model("resnet50", 5, pretrained=path)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(UserInputError, match="none of the 1 tensors"):
        build_model("resnet18", 5, pretrained=foreign)


def test_whole_reid_model_state_dict_loads_its_backbone(tmp_path):
    source = build_model("resnet18", 5)
    path = tmp_path / "reid.pth"
    torch.save({"model": source.state_dict()}, path)
    target = build_model("resnet18", 0, pretrained=path)
    assert target.pretrained_report.missing == ()
    assert all(k.startswith("head.") for k in target.pretrained_report.unexpected)
    torch.testing.assert_close(target.backbone.conv1.weight, source.backbone.conv1.weight)


@pytest.mark.slow
def test_imagenet_uses_the_hub_cache_and_explains_when_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(
        UserInputError, match=r"could not download .*resnet18-f37072fd\.pth.*pretrained=<path>"
    ):
        build_model("resnet18", 5, pretrained="imagenet")
    with pytest.raises(UserInputError, match=r"resnet50_ibn_a-d9d0bb7b\.pth"):
        build_model("mgn", 5, pretrained="imagenet")

    # A file already in the cache (where torchvision keeps it) is used without downloading.
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    torch.save(
        torchvision.models.resnet18(weights=None).state_dict(),
        tmp_path / "checkpoints" / "resnet18-f37072fd.pth",
    )
    report = load_pretrained(resnet18(), "imagenet")
    assert report.missing == () and sorted(report.unexpected) == ["fc.bias", "fc.weight"]


def test_timm_checkpoint_file_loads(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason="timm is an optional dependency")
    path = tmp_path / "model.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(path))
    model = build_model("timm:resnet18", 3, pretrained=path)
    assert model.pretrained_report.missing == ()
    assert sorted(model.pretrained_report.unexpected) == ["fc.bias", "fc.weight"]

    from adasp.models import timm_backbone

    def offline(name, pretrained, options):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained, options)

    real = timm_backbone._create
    monkeypatch.setattr(timm_backbone, "_create", offline)
    with pytest.raises(
        UserInputError, match=r"pretrained weights for 'resnet18'.*pretrained=<path>"
    ):
        build_model("timm:resnet18", 3, pretrained="imagenet")


def test_a_plain_pickle_file_is_refused_as_python_objects_not_as_corrupt(tmp_path):
    # pickle.dump (not torch.save): torch's weights-only loader fails with "Unsupported
    # operand", not "Unsupported global"; the message must still say what the file is.
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": torch.zeros(1), "extra": Payload(marker)}, handle)
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(UserInputError) as error:
        build_model("resnet18", 5, pretrained=path)
    message = str(error.value)
    assert message.startswith(f"refused to load {path}: it is a plain Python pickle")
    assert "holding Python objects (torch._utils._rebuild_tensor_v2)" in message
    assert "was not loaded, for safety" in message and "\n" not in message
    assert not marker.exists()
    # A torch.save file: the class is named by torch itself.
    saved = tmp_path / "saved.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Payload(marker)}, saved)
    with pytest.raises(
        UserInputError, match=r"other than tensors \((io|builtins)\.open\) and was not loaded"
    ):
        read_state_dict(saved)
    assert not marker.exists()


def test_plain_values_and_garbage_are_not_called_python_objects(tmp_path):
    import pickle

    plain = tmp_path / "values.pkl"
    plain.write_bytes(pickle.dumps({"a": 1, "b": [1.5, "x"]}, protocol=4))
    with pytest.raises(UserInputError, match="pickle of plain values without tensors"):
        read_state_dict(plain)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(UserInputError, match=r"not a checkpoint, or corrupted\)$"):
        read_state_dict(garbage)
