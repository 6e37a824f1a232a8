"""`adasp convert`: fast-reid and torchreid models give the peers' own embeddings.

Each peer model is built by the peer's own code (tests/peers.py fetches fast-reid 1.4.0 and
torchreid 0.2.5 from the package index; skipped offline), with random weights and non-trivial
BatchNorm statistics, saved in the peer's checkpoint format, converted, loaded the way
``adasp extract`` loads a model file, and compared on real pedestrian crops with the peer's
own preprocessing and inference: cosine >= 0.9999 on every image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adasp.errors import UserInputError
from tests import peers

MIN_COSINE = 0.9999
SIZE = (128, 64)

TORCHREID_ARCHS = [
    "osnet_x1_0",
    "osnet_x0_75",
    "osnet_x0_5",
    "osnet_x0_25",
    "osnet_ibn_x1_0",
    "osnet_ain_x1_0",
    "osnet_ain_x0_75",
    "osnet_ain_x0_5",
    "osnet_ain_x0_25",
    "resnet50",
    "resnet50_fc512",
    "mobilenetv2_x1_0",
    "mobilenetv2_x1_4",
]

#: fast-reid configs: its BoT, AGW and SBS recipes' model options, and the other depths and
#: poolings.
FASTREID_CASES = {
    "bot-r50": {"MODEL.HEADS.NECK_FEAT": "before", "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool"},
    "agw-r50-nl": {
        "MODEL.BACKBONE.WITH_NL": True,
        "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPoolingP",
    },
    "sbs-r50-ibn": {
        "MODEL.BACKBONE.WITH_IBN": True,
        "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPoolingP",
        "MODEL.HEADS.NECK_FEAT": "after",
        "MODEL.HEADS.CLS_LAYER": "CircleSoftmax",
    },
    "r18-avgmax-emb128": {
        "MODEL.BACKBONE.DEPTH": "18x",
        "MODEL.BACKBONE.FEAT_DIM": 512,
        "MODEL.HEADS.POOL_LAYER": "AdaptiveAvgMaxPool",
        "MODEL.HEADS.EMBEDDING_DIM": 128,
    },
    "r34-ibn-gem-no-bnneck-stride2": {
        "MODEL.BACKBONE.DEPTH": "34x",
        "MODEL.BACKBONE.WITH_IBN": True,
        "MODEL.BACKBONE.FEAT_DIM": 512,
        "MODEL.BACKBONE.LAST_STRIDE": 2,
        "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPooling",
        "MODEL.HEADS.WITH_BNNECK": False,
        "MODEL.HEADS.EMBEDDING_DIM": 64,
    },
    "r101-ibn-nl-max": {
        "MODEL.BACKBONE.DEPTH": "101x",
        "MODEL.BACKBONE.WITH_IBN": True,
        "MODEL.BACKBONE.WITH_NL": True,
        "MODEL.HEADS.POOL_LAYER": "GlobalMaxPool",
        "MODEL.HEADS.SCALE": 4,
    },
    "mgn-r50-ibn-gemp": {
        "MODEL.META_ARCHITECTURE": "MGN",
        "MODEL.BACKBONE.WITH_IBN": True,
        "MODEL.HEADS.EMBEDDING_DIM": 256,
        "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPoolingP",
        "MODEL.HEADS.NECK_FEAT": "after",
        "INPUT.SIZE_TEST": [192, 64],
    },
    "mgn-r50-max-stride2": {
        "MODEL.META_ARCHITECTURE": "MGN",
        "MODEL.BACKBONE.LAST_STRIDE": 2,
        "MODEL.HEADS.EMBEDDING_DIM": 128,
        "MODEL.HEADS.POOL_LAYER": "GlobalMaxPool",
        "INPUT.SIZE_TEST": [96, 48],
    },
}


@pytest.fixture(scope="module")
def peer_code(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    folder = cache.mkdir("adasp-peers") if cache else tmp_path_factory.mktemp("adasp-peers")
    root = peers.peer_root(Path(folder))
    peers.import_peers(root)
    return root


@pytest.fixture(scope="module")
def images(pku_subset_module) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in peers.crops(pku_subset_module, 8)]


@pytest.fixture(scope="module")
def pku_subset_module() -> Path:
    from tests.conftest import SHARED_SUBSET

    if not SHARED_SUBSET.is_dir():
        pytest.skip(f"real data subset not found at {SHARED_SUBSET}; these tests need it")
    return SHARED_SUBSET


def adasp_embeddings(model_file: Path, images: list[Image.Image]) -> np.ndarray:
    """Embeddings from a model file, loaded as ``adasp extract`` loads it."""
    from adasp.engine.inference import (
        build_inference_model,
        inference_preprocessing,
        resolve_run_config,
    )

    config, checkpoint = resolve_run_config(None, str(model_file), [])
    model = build_inference_model(config, checkpoint, torch.device("cpu"), model_file)
    transform = inference_preprocessing(config, checkpoint).transform()
    with torch.inference_mode():
        return model(torch.stack([transform(i) for i in images])).numpy()


def write(conversion, path: Path) -> Path:
    from adasp.engine.model_conversion import write_converted_model

    write_converted_model(conversion, path)
    return path


def torchreid_reference(arch: str, images: list[Image.Image]) -> tuple[torch.nn.Module, np.ndarray]:
    import torchvision.transforms as T

    torch.manual_seed(0)
    model = peers.torchreid_model(arch)
    peers.randomize_norms(model)
    # torchreid's test transform (its build_transforms: Resize, ToTensor, Normalize).
    transform = T.Compose(
        [T.Resize(SIZE), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    with torch.inference_mode():
        return model, model(torch.stack([transform(i) for i in images])).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("arch", TORCHREID_ARCHS)
def test_torchreid_models_convert_exactly(peer_code, images, tmp_path, arch):
    from adasp.models.convert_torchreid import convert_torchreid

    model, expected = torchreid_reference(arch, images)
    weights = tmp_path / "model.pth.tar-60"
    # torchreid's save_checkpoint format, from a DataParallel model.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 60, "rank1": 0.5}, weights)
    converted = write(convert_torchreid(arch, weights, SIZE), tmp_path / "model.pt")
    cosine = peers.cosines(expected, adasp_embeddings(converted, images))
    print(f"torchreid {arch}: min cosine {cosine.min():.7f}")
    assert cosine.min() >= MIN_COSINE


def fastreid_reference(case: dict, images: list[Image.Image], tmp_path: Path):
    from fastreid.config import get_cfg
    from fastreid.data.transforms import build_transforms
    from fastreid.modeling.meta_arch import build_model

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = 7
    cfg.INPUT.SIZE_TEST = list(SIZE)
    for key, value in case.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    peers.randomize_norms(model)
    with torch.no_grad():
        for module in model.modules():
            p = getattr(module, "p", None)
            if isinstance(p, torch.nn.Parameter):
                p.fill_(2.5)  # a learned GeM exponent
            if type(module).__name__ == "Non_local":
                module.W[1].weight.fill_(0.5)  # non-local blocks that act
        for name, value in model.named_parameters():
            if name.endswith("bn3.weight"):
                value.mul_(0.3)  # residual branches that keep a 33-block ResNet-101 finite
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    weights = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 100}, weights)  # Checkpointer's
    transform = build_transforms(cfg, is_train=False)
    with torch.inference_mode():
        expected = model(torch.stack([transform(i) for i in images])).numpy()
    return config, weights, expected


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FASTREID_CASES))
def test_fastreid_models_convert_exactly(peer_code, images, tmp_path, name):
    from adasp.models.convert_fastreid import convert_fastreid

    config, weights, expected = fastreid_reference(FASTREID_CASES[name], images, tmp_path)
    converted = write(convert_fastreid(config, weights), tmp_path / "model.pt")
    cosine = peers.cosines(expected, adasp_embeddings(converted, images))
    print(f"fast-reid {name}: min cosine {cosine.min():.7f}")
    assert cosine.min() >= MIN_COSINE


@pytest.mark.slow
def test_convert_command_then_extract_and_fine_tune(peer_code, pku_subset_module, tmp_path, capsys):
    from adasp.cli import main
    from adasp.evaluation import load_embeddings
    from adasp.models import build_model

    images = [
        Image.open(p).convert("RGB") for p in sorted((pku_subset_module / "query").rglob("*.png"))
    ]
    model, expected = torchreid_reference("osnet_x0_25", images)
    weights = tmp_path / "osnet.pth"
    torch.save(model.state_dict(), weights)  # a plain state dict
    out = tmp_path / "osnet.pt"
    assert main(["convert", "--from", "torchreid", "--arch", "osnet_x0_25", "--weights",
                 str(weights), "--output", str(out), "--image-size", "128", "64"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "classifier dropped" in printed and "dropped classifier.weight" in printed
    npz = tmp_path / "q.npz"
    assert main(["extract", "--checkpoint", str(out), "--folder", str(pku_subset_module / "query"),
                 "--output", str(npz), "--device", "cpu"]) == 0  # fmt: skip
    saved = load_embeddings(npz)
    # Compared resolved: extract records real paths, the subset may sit behind a link.
    queries = sorted((pku_subset_module / "query").rglob("*.png"))
    order = {p.resolve(): i for i, p in enumerate(queries)}
    rows = [order[Path(p).resolve()] for p in saved.paths]
    assert peers.cosines(expected[rows], saved.features).min() >= MIN_COSINE

    # Fine-tuning from it: backbone and neck kept, a new classifier for 5 identities.
    tuned = build_model(
        "osnet_x0_25",
        5,
        pretrained=out,
        embedding_dim=512,
        neck_activation="relu",
    )
    report = tuned.pretrained_report
    assert report.missing == () and report.unexpected == ()
    assert tuned.head.neck.reduction.weight.abs().sum() > 0


def test_a_whole_model_file_fine_tunes_dropping_a_classifier_that_does_not_fit(tmp_path):
    from adasp.models import build_model

    torch.manual_seed(0)
    trained = build_model("resnet18", 7, embedding_dim=16)
    torch.save({"format": "adasp-model-1", "model": trained.state_dict()}, tmp_path / "m.pt")
    same = build_model("resnet18", 7, embedding_dim=16, pretrained=tmp_path / "m.pt")
    assert torch.equal(same.head.neck.classifier.weight, trained.head.neck.classifier.weight)
    other = build_model("resnet18", 3, embedding_dim=16, pretrained=tmp_path / "m.pt")
    report = other.pretrained_report
    assert report.dropped == ("head.neck.classifier.weight",)
    assert "dropped 1 (head.neck.classifier.weight)" in report.summary()
    assert torch.equal(other.head.neck.reduction.weight, trained.head.neck.reduction.weight)


def test_unsupported_fastreid_option_is_named_with_its_value(tmp_path):
    from adasp.models.convert_fastreid import convert_fastreid

    config = tmp_path / "config.yaml"
    config.write_text("MODEL:\n  BACKBONE:\n    NAME: build_resnest_backbone\n")
    with pytest.raises(UserInputError, match=r"MODEL.BACKBONE.NAME='build_resnest_backbone'"):
        convert_fastreid(config, tmp_path / "none.pth")
    config.write_text("_BASE_: base.yaml\nMODEL:\n  HEADS:\n    POOL_LAYER: ClipGlobalAvgPool\n")
    (tmp_path / "base.yaml").write_text("MODEL:\n  META_ARCHITECTURE: Baseline\n")
    with pytest.raises(UserInputError, match=r"MODEL.HEADS.POOL_LAYER='ClipGlobalAvgPool'"):
        convert_fastreid(config, tmp_path / "none.pth")


def test_leftover_missing_and_misshapen_keys_are_refused_by_name(tmp_path):
    from adasp.models import build_backbone
    from adasp.models.conversion import build_converted_model
    from adasp.models.convert_torchreid import convert_torchreid

    # adasp's own OSNet keys (the renamer leaves them as they are) in a DataParallel file.
    net = build_backbone("osnet_x0_25")
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(UserInputError, match=r"no fc.0.weight"):
        convert_torchreid("osnet_x0_25", tmp_path / "w.pth")
    with pytest.raises(UserInputError, match=r"unsupported torchreid architecture --arch hacnn"):
        convert_torchreid("hacnn", tmp_path / "w.pth")

    fc = {"fc.0.weight": torch.randn(512, 128), "fc.0.bias": torch.zeros(512)}
    fc |= {f"fc.1.{k}": v for k, v in torch.nn.BatchNorm1d(512).state_dict().items()}
    torch.save({**state, **fc, "extra.weight": torch.ones(1)}, tmp_path / "w.pth")
    conversion = convert_torchreid("osnet_x0_25", tmp_path / "w.pth")
    with pytest.raises(UserInputError, match=r"no place in the adasp model: backbone.extra.weight"):
        build_converted_model(conversion)
    conversion.state_dict.pop("backbone.extra.weight")
    # Keys already in adasp's layout pass through the renamer: the model is complete.
    assert build_converted_model(conversion).embedding_dim == 512
    conversion.state_dict.pop("backbone.final.conv.weight")
    with pytest.raises(UserInputError, match=r"does not provide: backbone.final.conv.weight"):
        build_converted_model(conversion)
    conversion.state_dict["backbone.final.conv.weight"] = torch.ones(1, 1, 1, 1)
    with pytest.raises(UserInputError, match=r"shapes differ: backbone.final.conv.weight"):
        build_converted_model(conversion)


def test_mgn_with_stripes_adasp_would_cut_otherwise_is_refused(tmp_path):
    from adasp.models.convert_fastreid import convert_fastreid

    config = tmp_path / "config.yaml"
    config.write_text(
        "MODEL:\n  META_ARCHITECTURE: MGN\n  HEADS:\n    EMBEDDING_DIM: 256\n"
        "INPUT:\n  SIZE_TEST: [256, 128]\n"
    )
    with pytest.raises(UserInputError, match=r"height 256: .* a multiple of 96 \(e.g. 384\)"):
        convert_fastreid(config, tmp_path / "none.pth")
    config.write_text("MODEL:\n  META_ARCHITECTURE: MGN\n  BACKBONE:\n    DEPTH: 101x\n")
    with pytest.raises(UserInputError, match=r"MODEL.BACKBONE.DEPTH='101x'"):
        convert_fastreid(config, tmp_path / "none.pth")


@pytest.mark.slow
def test_the_printed_overrides_fine_tune_a_converted_model(peer_code, tmp_path, capsys):
    import json
    import shlex

    from adasp.cli import main
    from tests.engine.conftest import tiny_overrides

    torch.manual_seed(0)
    model = peers.torchreid_model("osnet_x0_25")
    peers.randomize_norms(model)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    out = tmp_path / "osnet.pt"
    assert main(["convert", "--from", "torchreid", "--arch", "osnet_x0_25", "--weights",
                 str(tmp_path / "w.pth"), "--output", str(out)]) == 0  # fmt: skip
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fine-tune"))
    overrides = shlex.split(line.split(":", 1)[1])
    assert "model.neck_activation=relu" in overrides and f"model.pretrained={out}" in overrides
    run = tmp_path / "run"
    args = ["train", "--config", "quickstart", "--output", str(run), "--no-progress"]
    tiny = [o for o in tiny_overrides(tmp_path / "data") if not o.startswith("model.")]
    assert main([*args, *tiny, "schedule.epochs=1", *overrides]) == 0
    assert json.loads((run / "metrics.json").read_text())["mAP"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["osnet_x0_5", "osnet_ain_x0_25", "osnet_ibn_x1_0"])
def test_torchreid_osnet_files_load_as_pretrained_backbones(peer_code, tmp_path, arch):
    from adasp.models import build_model

    torch.manual_seed(0)
    model = peers.torchreid_model(arch)
    peers.randomize_norms(model)
    torch.save(model.state_dict(), tmp_path / "imagenet.pth")
    ours = build_model(arch, 0, pretrained=tmp_path / "imagenet.pth").eval()
    report = ours.pretrained_report
    assert report.missing == ()
    assert {k.split(".")[0] for k in report.unexpected} == {"fc", "classifier"}
    x = torch.randn(2, 3, 64, 32)
    with torch.inference_mode():
        assert torch.allclose(ours.backbone(x), model.featuremaps(x), atol=1e-5)
