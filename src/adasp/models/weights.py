"""Pretrained weights into a backbone: from a local file or ImageNet downloads, never unpickling.

Files: ``.safetensors``, or anything ``torch.load`` reads (``.pth``, ``.pt``, ``.tar``,
``.bin``, ``.ckpt``), always with ``weights_only=True``, so a file holding Python objects
is refused instead of executed. The state dict may be wrapped under ``"state_dict"`` or
``"model"`` (training checkpoints), carry DataParallel's ``module.`` prefix, or be a whole
re-identification model whose backbone keys start with ``backbone.``.

Layouts: torchvision's ResNet names and the IBN-Net release's IBN-a names load as they are;
MGN and timm backbones map them onto their own names (``remap_state_dict``); MobileNetV2
renames weights in another implementation's names by position (``state_dict_renames``).

Every load returns a :class:`LoadReport` of missing and unexpected keys and logs a one-line
summary. ``num_batches_tracked`` buffers missing from old files are not reported: they do
not affect the network.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from adasp.errors import MissingPathError, UserInputError

log = logging.getLogger(__name__)

#: Keys that wrap a state dict inside a training checkpoint, tried in this order.
WRAPPER_KEYS = ("state_dict", "model")
#: Key prefixes added by wrappers (DataParallel, a whole re-identification model).
WRAPPER_PREFIXES = ("module.", "backbone.")


@dataclass(frozen=True)
class LoadReport:
    """Outcome of loading pretrained weights into a backbone.

    Attributes:
        source: the file read (for ``"imagenet"``, the cached download), or
            ``"imagenet:timm:<name>"`` for timm's pretrained weights.
        loaded: number of tensors copied into the backbone.
        missing: backbone keys the file did not provide (left at their initial values).
        unexpected: file keys the backbone has no place for (e.g. ``fc.weight``).
        renamed: ``(file key, backbone key)`` pairs the backbone renamed before loading
            (MobileNetV2 weights in another implementation's names, mapped by position).
        dropped: head keys of a whole adasp model file not loaded because their shape
            differs (a classifier over other identities).
    """

    source: str
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: what was loaded, and the missing and unexpected keys (abbreviated)."""

        def keys(names: tuple[str, ...]) -> str:
            shown = ", ".join(names[:6])
            return f"{len(names)}" + (
                f" ({shown}{', ...' if len(names) > 6 else ''})" if names else ""
            )

        renamed = ""
        if self.renamed:
            first = self.renamed[0]
            renamed = f"; renamed {len(self.renamed)} by position ({first[0]} -> {first[1]}, ...)"
        dropped = ""
        if self.dropped:
            dropped = (
                f"; dropped {keys(self.dropped)} (shape differs: a classifier over other "
                "identities starts anew)"
            )
        return (
            f"loaded {self.loaded} tensors from {self.source}; missing {keys(self.missing)}; "
            f"unexpected {keys(self.unexpected)}{renamed}{dropped}"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the tensors of a weights file as a flat ``{name: tensor}`` dict on the CPU.

    Raises:
        MissingPathError: the file does not exist.
        UserInputError: the file is a folder, unreadable, holds Python objects other than
            tensors and plain containers (refused, not executed), or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingPathError(
            f"pretrained weights file not found: {path}. Pass the path of a .pth/.pt/.tar or "
            ".safetensors file (e.g. resnet50-0676ba61.pth), 'imagenet' to download, or None."
        )
    if not path.is_file():
        raise UserInputError(f"pretrained weights must be a file, but {path} is a folder")
    if path.suffix == ".safetensors":
        obj: Any = _read_safetensors(path)
    else:
        obj = _read_torch(path)
    return _unwrap(obj, path)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise UserInputError(
            f"could not read {path} as a safetensors file: {type(error).__name__}: {error}"
        ) from error


def _read_torch(path: Path) -> Any:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names a refused class in a torch.save file ("Unsupported
        # global: GLOBAL x"), but a plain pickle.dump file fails earlier ("Unsupported operand
        # N", the wording of torch 2.6-2.14), as a file that is no pickle at all does: read
        # the stream's opcodes (never executing them) to tell which it is.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        name = found.group(1) if found else pickled_global(path)
        if name is None:
            raise UserInputError(
                f"could not read {path} as a PyTorch weights file (not a checkpoint, or corrupted)"
            ) from error
        if not name:
            raise UserInputError(
                f"could not read {path} as a PyTorch weights file: it is a Python pickle of "
                "plain values without tensors (pickle.dump, not torch.save)"
            ) from error
        what = (
            "it holds Python objects other than tensors"
            if found
            else "it is a plain Python pickle (pickle.dump, not torch.save) holding Python objects"
        )
        raise UserInputError(
            f"refused to load {path}: {what} ({name}) and was not loaded, for safety: "
            "unpickling them could run arbitrary code. Where you trust the file, load it and "
            "save only the state dict (torch.save(model.state_dict(), 'weights.pth')), or "
            "convert it to .safetensors."
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise UserInputError(
            f"could not read {path} as a PyTorch weights file (truncated or not a "
            f"checkpoint?): {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error


#: Pickle opcodes that import a global (a class or function) by name.
_GLOBAL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})


def pickled_global(path: str | os.PathLike) -> str | None:
    """The first class or function a pickle file would import, read without unpickling.

    ``path`` may be a plain pickle or a ``torch.save`` zip archive (its ``data.pkl`` is read).
    Returns ``"module.name"`` (``"a class"`` where the name comes from the memo), ``""`` for a
    pickle of plain values only, and None when the file is not a pickle.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                inner = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if inner is None:
                    return None
                data = archive.read(inner)
        else:
            data = Path(path).read_bytes()
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in _GLOBAL_OPCODES:
                if isinstance(arg, str):  # GLOBAL and INST: "module name"
                    return arg.replace(" ", ".")
                return ".".join(strings[-2:]) if len(strings) >= 2 else "a class"
            if isinstance(arg, str):
                strings.append(arg)
        return ""
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, EOFError):
        return None


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise UserInputError(
            f"{path} holds a {type(obj).__name__}, not a state dict of named tensors"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise UserInputError(
            f"{path} holds no tensors (keys: {', '.join(map(str, list(obj)[:8]))}); expected "
            "a state dict, possibly under 'state_dict' or 'model'"
        )
    return tensors


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DataParallel's ``module.`` from every key that has it; then, if some keys start
    with ``backbone.`` (a whole re-identification model), keep those without the prefix plus
    the others unchanged (they end up reported as unexpected)."""
    out = dict(state_dict)
    for prefix in WRAPPER_PREFIXES:
        if any(key.startswith(prefix) for key in out):
            out = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in out.items()}
    return out


def load_state_into(
    backbone: nn.Module, state_dict: Mapping[str, Tensor], source: str
) -> LoadReport:
    """Copy ``state_dict`` into ``backbone`` by name and report what did not match.

    The state dict goes through wrapper-prefix stripping, the backbone's
    ``state_dict_renames`` (file key -> backbone key, reported in ``LoadReport.renamed``) and
    its ``remap_state_dict`` (if it has them) first.

    Raises:
        UserInputError: a tensor's shape differs from the backbone's (the keys are named), or
            no key of the file matches the backbone (wrong file for this architecture).
    """
    state = strip_wrapper_prefixes(state_dict)
    renames = getattr(backbone, "state_dict_renames", None)
    renamed = renames(state) if renames is not None else {}
    if renamed:
        state = {renamed.get(k, k): v for k, v in state.items()}
    remap = getattr(backbone, "remap_state_dict", None)
    if remap is not None:
        state = remap(state)
    expected = backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in expected}
    wrong_shape = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in matched.items()
        if v.shape != expected[k].shape
    ]
    if wrong_shape:
        raise UserInputError(
            f"{len(wrong_shape)} tensors in {source} do not fit the backbone "
            f"{type(backbone).__name__}: {'; '.join(wrong_shape[:8])}"
            f"{'; ...' if len(wrong_shape) > 8 else ''}. Is it the weights of another "
            "architecture (e.g. ResNet-18 weights for a ResNet-50)?"
        )
    if not matched:
        raise UserInputError(
            f"none of the {len(state)} tensors in {source} matches a parameter of the backbone "
            f"{type(backbone).__name__} (file keys like {', '.join(list(state)[:4])}; backbone "
            f"keys like {', '.join(list(expected)[:4])}): wrong file for this architecture?"
        )
    backbone.load_state_dict(matched, strict=False)
    missing = tuple(
        k for k in expected if k not in matched and not k.endswith("num_batches_tracked")
    )
    unexpected = tuple(k for k in state if k not in expected)
    report = LoadReport(source, len(matched), missing, unexpected, tuple(renamed.items()))
    log.log(logging.WARNING if missing else logging.INFO, "%s", report.summary())
    return report


def download_weights(url: str) -> Path:
    """The file at ``url`` in torch's hub cache (``torch.hub.get_dir()/checkpoints``),
    downloaded there first if absent: the same place torchvision keeps its weights.

    Raises:
        UserInputError: the download failed (offline?): download the file yourself and pass
            its path, or put it in the cache folder.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / Path(urlparse(url).path).name
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # download_url_to_file writes a temporary file and renames it when complete.
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except (OSError, RuntimeError) as error:
        raise UserInputError(
            f"could not download ImageNet weights from {url} ({type(error).__name__}: {error}). "
            f"Offline? Download that file on a machine with internet access and pass its path "
            f"as model.pretrained=<path> (pretrained=<path> in Python), or copy it to {target}."
        ) from error
    return target


def load_pretrained(backbone: nn.Module, pretrained: str | os.PathLike) -> LoadReport:
    """Load ``pretrained`` into ``backbone``: ``"imagenet"`` or a weights file path.

    ``"imagenet"`` uses the backbone's own source: torchvision's (ResNets, MobileNetV2) or
    IBN-Net's (IBN-a, MGN) release file, downloaded once into torch's hub cache, or timm's
    download (timm backbones). Where the download fails, a backbone with an
    ``offline_imagenet_file()`` (MobileNetV2: the file of the ``pretrained`` extra) loads that.

    Returns:
        The :class:`LoadReport`; a one-line summary is also logged (warning level when keys
        are missing).
    """
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        if hasattr(backbone, "imagenet_state_dict"):
            source = f"imagenet:timm:{getattr(backbone, 'name', type(backbone).__name__)}"
            return load_state_into(backbone, backbone.imagenet_state_dict(), source)
        url = getattr(backbone, "imagenet_url", None)
        if not url:
            raise UserInputError(
                f"no ImageNet weights are published for {type(backbone).__name__}; "
                "set model.pretrained=<weights file> or model.pretrained=null (Python: pretrained=None)"
            )
        path = _imagenet_file(backbone, url)
        return load_state_into(backbone, read_state_dict(path), str(path))
    return load_state_into(backbone, read_state_dict(pretrained), str(pretrained))


def _imagenet_file(backbone: nn.Module, url: str) -> Path:
    """The cached or downloaded file at ``url``; else the backbone's offline file, if any."""
    try:
        return download_weights(url)
    except UserInputError as download_error:
        offline = getattr(backbone, "offline_imagenet_file", None)
        if offline is None:
            raise
        try:
            path = offline()
        except UserInputError as offline_error:
            raise UserInputError(f"{download_error} Offline: {offline_error}") from offline_error
        log.warning("could not download %s; using the offline ImageNet weights %s", url, path)
        return path


def load_head_too(head: nn.Module, source: str | os.PathLike, report: LoadReport) -> LoadReport:
    """After :func:`load_pretrained` read a whole adasp model file (its ``head.*`` keys came
    out as unexpected), load its head as well: every ``head.*`` tensor whose name and shape
    fit; those whose shape differs (a classifier over another number of identities) are
    dropped. Returns the report of both loads (also logged)."""
    state = {k: v for k, v in read_state_dict(source).items() if k.startswith("head.")}
    expected = head.state_dict()
    fits = {k[5:]: v for k, v in state.items() if expected.get(k[5:], v).shape == v.shape}
    fits = {k: v for k, v in fits.items() if k in expected}
    dropped = tuple(k for k in state if k[5:] in expected and k[5:] not in fits)
    head.load_state_dict(fits, strict=False)
    combined = LoadReport(
        report.source,
        report.loaded + len(fits),
        report.missing,
        tuple(k for k in report.unexpected if k not in state),
        report.renamed,
        dropped,
    )
    log.info("%s", combined.summary())
    return combined
