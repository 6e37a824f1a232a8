"""Models: ResNet / IBN-a / MGN / timm backbones, BNNeck heads, pretrained weights, export.

    >>> model = build_model("resnet50_ibn_a", num_classes=751, pretrained="imagenet")
    >>> model.train(); out = model(images)   # {"features": (B, 2048), "logits": (B, 751)}
    >>> model.eval(); emb = model(images)    # (B, 2048), not L2-normalised

See ``docs/models.md``.
"""

from adasp.models.export import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExportVerificationError,
    export_onnx,
    read_onnx_metadata,
    verify_onnx,
)
from adasp.models.head import BNNeck, GlobalHead, NeckOutput
from adasp.models.ibn import IBN
from adasp.models.mgn import MGNBackbone, MGNHead
from adasp.models.options import HeadOptions
from adasp.models.pooling import POOLINGS, AvgPool, GeMPool, MaxPool, build_pooling
from adasp.models.registry import BACKBONES, HEADS, build_backbone, build_model
from adasp.models.reid_model import ReIDModel
from adasp.models.resnet import ResNet
from adasp.models.speed import prepare_model, unwrap_model
from adasp.models.timm_backbone import TimmBackbone
from adasp.models.weights import LoadReport, load_pretrained, read_state_dict

__all__ = [
    "BACKBONES",
    "HEADS",
    "IBN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POOLINGS",
    "AvgPool",
    "BNNeck",
    "ExportVerificationError",
    "GeMPool",
    "GlobalHead",
    "HeadOptions",
    "LoadReport",
    "MGNBackbone",
    "MGNHead",
    "MaxPool",
    "NeckOutput",
    "ReIDModel",
    "ResNet",
    "TimmBackbone",
    "build_backbone",
    "build_model",
    "build_pooling",
    "export_onnx",
    "load_pretrained",
    "prepare_model",
    "read_onnx_metadata",
    "read_state_dict",
    "unwrap_model",
    "verify_onnx",
]
