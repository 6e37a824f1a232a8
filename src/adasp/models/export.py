"""ONNX export of a model's inference embedding, and its check against PyTorch.

What the exported graph does (also written in the ONNX file's metadata, keys ``adasp.*``):

- input ``images``: float32 ``(N, 3, H, W)``, RGB, N dynamic (H, W fixed at export);
- with ``include_normalization=False`` (default) the input must already be normalised,
  ``(pixel/255 - mean) / std`` with the ImageNet mean/std, exactly as adasp's own data
  pipeline feeds the model; with ``include_normalization=True`` the graph does that itself and
  takes ``pixel/255`` in ``[0, 1]``. Normalise in one place only: check
  ``adasp.input_normalization`` ("outside" or "inside") in the metadata.
- output ``embeddings``: float32 ``(N, D)``, the eval-mode embedding; not L2-normalised unless
  exported with ``l2_normalize=True`` (metadata ``adasp.l2_normalized``).

The exporter is torch's ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript),
which runs offline.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adasp.errors import UserInputError
from adasp.utils.atomic import atomic_write_with
from adasp.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


#: Loggers of the exporter's graph passes, which log every rewrite at INFO level.
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Raise the exporter's loggers to WARNING for the export, then restore their levels."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class ExportVerificationError(RuntimeError):
    """The ONNX model's embeddings differ from PyTorch's by more than the tolerance."""


#: The oldest opset the exporter writes as asked (it writes 18 for anything older).
MIN_OPSET = 18


def check_opset(opset: int | None) -> int | None:
    """``opset`` if the exporter can write it, else a one-line error with the range.

    Raises:
        UserInputError: ``opset`` is outside ``MIN_OPSET`` .. the newest the installed onnx
            knows (the exporter would silently write another one).
    """
    if opset is None:
        return None
    try:
        import onnx
    except ImportError as error:
        raise UserInputError(
            f"ONNX export needs onnx and onnxscript: pip install 'adasp[onnx]' ({error})"
        ) from error
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UserInputError(
            f"--opset {opset} cannot be written: the exporter writes opsets {MIN_OPSET} to "
            f"{newest} (the installed onnx's newest); choose one in that range, or leave "
            "--opset out for the default"
        )
    return opset


class EmbeddingGraph(nn.Module):
    """What is exported: optional input normalisation, the model's eval forward, optional
    L2 normalisation. ``images (N, 3, H, W) -> embeddings (N, D)``."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.normalize_input = mean is not None
        if mean is not None and std is not None:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.l2_normalize = l2_normalize

    def forward(self, images: Tensor) -> Tensor:
        if self.normalize_input:
            images = (images - self.mean) / self.std
        embeddings = self.model(images)
        return F.normalize(embeddings, dim=1) if self.l2_normalize else embeddings


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(image_size)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size):
        raise UserInputError(f"image_size must be (height, width), each >= 16, got {image_size!r}")
    return size


def _check_stats(name: str, values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != 3 or (name == "std" and min(values) <= 0):
        raise UserInputError(
            f"{name} must be 3 numbers (R, G, B){', > 0' if name == 'std' else ''}"
        )
    return values


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: Sequence[int] = (256, 128),
    opset: int | None = None,
    dynamic_batch: bool = True,
    *,
    include_normalization: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    l2_normalize: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model``'s eval-mode embedding to an ONNX file, written atomically.

    Args:
        model: a :class:`adasp.models.ReIDModel` (or any module mapping images to
            ``(N, D)`` in eval mode); its train/eval mode is restored afterwards.
        path: the ``.onnx`` file to write (a temporary file, renamed when complete).
        image_size: ``(H, W)`` in pixels, fixed in the graph.
        opset: ONNX opset; None for the exporter's default (18 or newer).
        dynamic_batch: let the batch size N vary; otherwise fixed at 2.
        include_normalization: put ``(x - mean) / std`` in the graph, so that it takes RGB in
            ``[0, 1]``. Default False: feed it normalised images, like the PyTorch model.
        mean, std: the normalisation (ImageNet's by default); recorded in the metadata either
            way.
        normalization: shorthand for ``include_normalization=True`` with ``(mean, std)``.
        l2_normalize: L2-normalise the embeddings in the graph (then dot product = cosine).
        metadata: extra ``key -> value`` strings for the ONNX metadata (e.g. the config).

    Returns:
        The path written.

    Raises:
        UserInputError: bad ``image_size``/``mean``/``std``/``opset``, or onnx/onnxscript
            missing.
    """
    height, width = _check_image_size(image_size)
    check_opset(opset)
    if normalization is not None:
        include_normalization = True
        mean, std = normalization
    mean, std = _check_stats("mean", mean), _check_stats("std", std)
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise UserInputError(
            f"ONNX export needs onnx and onnxscript: pip install 'adasp[onnx]' ({error})"
        ) from error
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        device = _model_device(model)
        # The graph's own buffers (mean/std) must live where the model does.
        graph = (
            EmbeddingGraph(model, mean if include_normalization else None, std, l2_normalize)
            .to(device)
            .eval()
        )
        example = torch.zeros(2, 3, height, width, device=device)
        try:
            # One eager pass first: a clear error for an input size the model cannot take,
            # and lazily-set state (a timm backbone's output kind) is set before tracing.
            with torch.no_grad():
                out = graph(example)
        except RuntimeError as error:
            raise UserInputError(
                f"the model cannot run on {height}x{width} images: {error}. Export at the "
                "image size it was trained for (e.g. 256x128 for people, 256x256 for vehicles)"
            ) from error
        dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim("batch")}} if dynamic_batch else None
        with _quiet_exporter_logs():
            program = torch.onnx.export(
                graph,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    finally:
        model.train(was_training)
    proto = program.model_proto
    written = {entry.domain: entry.version for entry in proto.opset_import}.get("")
    if opset is not None and written != opset:
        raise UserInputError(
            f"--opset {opset} asked for, but the exporter produced opset {written}; nothing "
            "was written: choose another --opset or leave it out"
        )
    info = {
        "adasp.input": f"{INPUT_NAME}: float32 (N, 3, {height}, {width}) RGB",
        "adasp.input_normalization": "inside" if include_normalization else "outside",
        "adasp.input_range": (
            "[0, 1] (pixel / 255); the graph subtracts mean and divides by std"
            if include_normalization
            else "(pixel / 255 - mean) / std, normalised before the graph"
        ),
        "adasp.mean": json.dumps(mean),
        "adasp.std": json.dumps(std),
        "adasp.output": f"{OUTPUT_NAME}: float32 (N, {out.shape[1]})",
        "adasp.embedding_dim": str(out.shape[1]),
        "adasp.l2_normalized": "true" if l2_normalize else "false",
        "adasp.image_size": json.dumps([height, width]),
        "adasp.dynamic_batch": "true" if dynamic_batch else "false",
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    spec = getattr(model, "spec", None)
    if spec and "adasp.model" not in info:
        info["adasp.model"] = json.dumps(spec, default=str)
    del proto.metadata_props[:]
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_with(path, lambda handle: handle.write(proto.SerializeToString()))
    return path


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``key -> value`` metadata of an ONNX file (adasp's keys start with ``adasp.``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        from adasp.errors import MissingPathError

        raise MissingPathError(f"ONNX file not found: {path}")
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: Sequence[int] = (256, 128),
    batch_size: int = 2,
    atol: float = 1e-4,
    seed: int = 0,
    *,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> float:
    """Run the ONNX file with onnxruntime and ``model`` with PyTorch on the same random
    images; return the largest absolute difference of their embeddings.

    The reference applies what the file's metadata says the graph contains (input
    normalisation, L2 normalisation) and runs on the CPU in float32, like onnxruntime (a
    model on a GPU is copied). The random images are uniform in ``[0, 1]`` when the
    graph normalises its input and standard normal (already normalised) otherwise.

    Args:
        batch_size: images in the check; a size other than the export's (2) also checks
            the dynamic batch dimension.
        normalization: optional ``(mean, std)`` the caller expects inside the graph; an error
            if the file records otherwise. None: take the file's record as it is.

    Raises:
        ExportVerificationError: the difference exceeds ``atol``.
        UserInputError: onnxruntime missing, or a bad ``image_size``.
    """
    height, width = _check_image_size(image_size)
    try:
        import onnxruntime
    except ImportError as error:
        raise UserInputError(
            f"checking an ONNX export needs onnxruntime: pip install 'adasp[onnx]' ({error})"
        ) from error
    info = read_onnx_metadata(path)
    inside = info.get("adasp.input_normalization") == "inside"
    mean = json.loads(info["adasp.mean"]) if inside else None
    std = json.loads(info["adasp.std"]) if inside else None
    if normalization is not None and not (
        inside
        and torch.allclose(torch.tensor(mean), torch.tensor(normalization[0], dtype=torch.float))
        and torch.allclose(torch.tensor(std), torch.tensor(normalization[1], dtype=torch.float))
    ):
        recorded = f"inside with mean {mean}, std {std}" if inside else "outside the graph"
        raise UserInputError(
            f"{path} records its input normalisation as {recorded}, not inside with mean "
            f"{list(normalization[0])}, std {list(normalization[1])}: check the file"
        )
    reference = EmbeddingGraph(model, mean, std, info.get("adasp.l2_normalized") == "true")

    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, 3, height, width)
    images = (
        torch.rand(shape, generator=generator)
        if inside
        else torch.randn(shape, generator=generator)
    )
    if _model_device(model).type != "cpu":
        # onnxruntime runs on the CPU in float32; a GPU reference would differ by its own
        # rounding (TF32 convolutions), not by the export.
        reference = copy.deepcopy(reference).cpu()
    was_training = model.training
    model.eval()
    reference.eval()
    try:
        with torch.no_grad():
            expected = reference(images)
    finally:
        model.train(was_training)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    expected_np = expected.float().cpu().numpy()
    if actual.shape != expected_np.shape:
        raise ExportVerificationError(
            f"ONNX output shape {actual.shape} differs from PyTorch's {expected_np.shape}"
        )
    difference = float(abs(actual - expected_np).max())
    if not difference <= atol:
        raise ExportVerificationError(
            f"ONNX embeddings differ from PyTorch's by up to {difference:.3g} > atol {atol:g} "
            f"on {batch_size} random images of {height}x{width}"
        )
    return difference
