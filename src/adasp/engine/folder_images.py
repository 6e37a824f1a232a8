"""The images under a folder as samples, for embedding arbitrary crops (``adasp extract``)."""

from __future__ import annotations

from pathlib import Path

from adasp.errors import MissingPathError, UserInputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def folder_samples(folder: str | Path) -> list:
    """Every image under ``folder`` (sorted), as ``Sample(path, pid, camid)``.

    The identity is the name of the image's parent folder when it is an integer (else -1); the
    camera is the integer before the first ``_`` of the file name (else 0).
    """
    from adasp.data import Sample

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise MissingPathError(f"folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    samples = []
    for path in paths:
        parent = path.parent.name
        pid = int(parent) if path.parent != root and parent.lstrip("-").isdigit() else -1
        head = path.stem.split("_", 1)[0]
        camid = int(head) if "_" in path.stem and head.isdigit() else 0
        samples.append(Sample(str(path), pid, camid))
    return samples
