"""The embedded default dataset: deterministic synthetic pedestrians in Market-1501 naming.

``generate_synthetic_dataset(folder)`` writes ``bounding_box_train/``, ``bounding_box_test/``
and ``query/`` (names ``PPPP_cCs1_FFFFFF_00.jpg``), plus:

- ``harmful.txt``: the images drawn *cue-free* (sharing no visual cue with the other images of
  their identity), one path relative to the folder per line;
- ``images.csv``: per image its split, identity, camera, viewpoint, occluder and harmful flag;
- ``identities.json``: the attributes of every identity and the conditions of every camera;
- ``synthetic.json``: the generator version and options, written last.

Identities are split half for training, half for test (disjoint). Each identity is seen by 2 to
4 cameras; each camera sees it mostly walking one way (a dominant viewpoint), as in real
tracklets, so matching across cameras means matching across viewpoints. Test identities give
one query per camera (never a cue-free image, and only where a gallery image of the identity
from another camera exists); the rest is gallery.

The same arguments always write the same bytes: every image draws from its own random stream
seeded by ``(seed, identity, image)``.

``build_dataset("synthetic", root=cache_folder, **options)`` generates into
``cache_folder/<key of the options>`` on first use (into a temporary folder renamed into place,
so an interrupted generation never leaves a half dataset) and loads it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adasp.data.assemble import assemble_dataset
from adasp.data.market import read_market_splits
from adasp.data.sample import ReIDDataset
from adasp.data.synthetic_render import (
    VIEWS,
    CameraConditions,
    PersonIdentity,
    random_cameras,
    random_identities,
    render_image,
)
from adasp.errors import UserInputError

#: Bumped whenever the drawing changes, so cached datasets of older versions are not reused.
GENERATOR_VERSION = 1

MANIFEST_FILE = "synthetic.json"
HARMFUL_FILE = "harmful.txt"
#: The name of the cue-free images' set in ``ReIDDataset.marks``.
HARMFUL_MARK = "harmful"
IMAGES_FILE = "images.csv"
IDENTITIES_FILE = "identities.json"
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JPEG_QUALITY = 90

SYNTHETIC_LAYOUT = """\
  CACHE/                                      (any folder; created if missing)
    <key of the options>/                     (generated on first use)
      bounding_box_train/ bounding_box_test/ query/   (Market-1501 naming)
      harmful.txt  images.csv  identities.json  synthetic.json"""


@dataclass(frozen=True)
class SyntheticOptions:
    """The size and difficulty of a synthetic dataset (see :func:`generate_synthetic_dataset`)."""

    num_identities: int = 100
    images_per_identity: int = 32
    num_cameras: int = 6
    image_size: tuple[int, int] = (128, 64)
    harmful_fraction: float = 0.05
    occlusion_p: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise UserInputError(f"synthetic: {name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise UserInputError(f"synthetic: {name} must be in {low}..{high}, got {value}")

        integer("num_identities", 4, 2400)
        integer("images_per_identity", 4, 1000)
        integer("num_cameras", 2, 20)
        integer("seed", 0, 2**63 - 1)
        size = self.image_size
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or any(
                isinstance(s, bool) or not isinstance(s, int) or not 32 <= s <= 1024 for s in size
            )
        ):
            raise UserInputError(
                f"synthetic: image_size must be (height, width), integers in 32..1024, got {size!r}"
            )
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        for name, high in (("harmful_fraction", 0.5), ("occlusion_p", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserInputError(f"synthetic: {name} must be a number, got {value!r}")
            if not 0.0 <= value <= high:
                raise UserInputError(f"synthetic: {name} must be in [0, {high}], got {value}")
            object.__setattr__(self, name, float(value))

    def key(self) -> str:
        """The cache sub-folder name: every option and the generator version."""
        h, w = self.image_size
        return (
            f"synthetic-v{GENERATOR_VERSION}-ids{self.num_identities}-"
            f"img{self.images_per_identity}-cam{self.num_cameras}-{h}x{w}-"
            f"harm{self.harmful_fraction:g}-occ{self.occlusion_p:g}-seed{self.seed}"
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data


@dataclass(frozen=True)
class PlannedImage:
    """One image to render: who, where, how."""

    split: str
    pid: int
    index: int  # the identity's image number
    camera: int  # 0-based
    view: str
    cue_free: bool

    @property
    def file_name(self) -> str:
        return f"{self.pid:04d}_c{self.camera + 1}s1_{self.index:06d}_00.jpg"

    @property
    def relative_path(self) -> str:
        return f"{SPLIT_FOLDERS[self.split]}/{self.file_name}"


def plan_synthetic_dataset(
    options: SyntheticOptions,
) -> tuple[list[PersonIdentity], list[CameraConditions], list[PlannedImage]]:
    """The identities, cameras and every image to draw, without drawing anything."""
    rng = np.random.default_rng([options.seed, 0])
    identities = random_identities(options.num_identities, rng)
    cameras = random_cameras(options.num_cameras, rng)
    train_pids = set(
        (rng.permutation(options.num_identities)[: options.num_identities // 2] + 1).tolist()
    )
    planned: list[PlannedImage] = []
    mean = options.images_per_identity
    for pid in range(1, options.num_identities + 1):
        r = np.random.default_rng([options.seed, 1, pid])
        seen_by = np.sort(
            r.choice(
                options.num_cameras,
                size=int(r.integers(2, min(options.num_cameras, 4) + 1)),
                replace=False,
            )
        )
        count = max(2 * seen_by.size, int(r.integers(round(0.6 * mean), round(1.4 * mean) + 1)))
        # The first image of each camera is guaranteed (and never cue-free: it may be a query).
        camera_of = np.concatenate([seen_by, r.choice(seen_by, size=count - seen_by.size)])
        dominant = {
            int(c): int(
                r.choice(4, p=np.asarray(cameras[c].view_weights) / sum(cameras[c].view_weights))
            )
            for c in seen_by
        }
        cue_free = r.random(count) < options.harmful_fraction
        cue_free[: seen_by.size] = False
        views = []
        for k in range(count):
            c = int(camera_of[k])
            weights = np.asarray(cameras[c].view_weights)
            views.append(
                dominant[c] if r.random() < 0.6 else int(r.choice(4, p=weights / weights.sum()))
            )
        if pid in train_pids:
            splits = ["train"] * count
        else:
            splits = ["gallery"] * count
            for k in range(seen_by.size):
                # A query needs a gallery image of its identity from another camera.
                others = [j for j in range(seen_by.size, count) if camera_of[j] != camera_of[k]]
                if others:
                    splits[k] = "query"
        planned += [
            PlannedImage(splits[k], pid, k, int(camera_of[k]), VIEWS[views[k]], bool(cue_free[k]))
            for k in range(count)
        ]
    return identities, cameras, planned


def _write_dataset(folder: Path, options: SyntheticOptions) -> None:
    identities, cameras, planned = plan_synthetic_dataset(options)
    for sub in SPLIT_FOLDERS.values():
        (folder / sub).mkdir(parents=True)
    rows = []
    for image in planned:
        rng = np.random.default_rng([options.seed, 2, image.pid, image.index])
        rendered = render_image(
            identities[image.pid - 1],
            cameras[image.camera],
            options.image_size,
            rng,
            image.view,
            options.occlusion_p,
            image.cue_free,
        )
        rendered.image.save(folder / image.relative_path, format="JPEG", quality=JPEG_QUALITY)
        rows.append(
            [
                image.relative_path,
                image.split,
                image.pid,
                image.camera,
                rendered.view,
                rendered.occluder,
                int(image.cue_free),
            ]
        )
    harmful = [row[0] for row in rows if row[-1]]
    (folder / HARMFUL_FILE).write_text("".join(f"{p}\n" for p in harmful), encoding="utf-8")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["path", "split", "pid", "camid", "view", "occluder", "harmful"])
    writer.writerows(rows)
    (folder / IMAGES_FILE).write_text(table.getvalue(), encoding="utf-8")
    description = {
        "identities": {str(pid): p.to_dict() for pid, p in enumerate(identities, start=1)},
        "cameras": [c.to_dict() for c in cameras],
    }
    (folder / IDENTITIES_FILE).write_text(
        json.dumps(description, indent=1) + "\n", encoding="utf-8"
    )
    counts = {split: sum(1 for image in planned if image.split == split) for split in SPLIT_FOLDERS}
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "options": options.to_dict(),
        "images": counts,
        "harmful": len(harmful),
    }
    # Written last: its presence marks a complete dataset.
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary folders of ``target`` left by killed generations on this machine."""
    prefix = f".{target.name}.tmp-"
    for entry in target.parent.glob(f"{prefix}*"):
        owner = entry.name[len(prefix) :].split("-")[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(entry, ignore_errors=True)


def read_manifest(folder: Path) -> dict | None:
    """The ``synthetic.json`` of a complete synthetic dataset folder, else None."""
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def generate_synthetic_dataset(
    root: str | os.PathLike,
    num_identities: int = 100,
    images_per_identity: int = 32,
    num_cameras: int = 6,
    image_size: Sequence[int] = (128, 64),
    harmful_fraction: float = 0.05,
    occlusion_p: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write a synthetic ReID dataset into the folder ``root`` and return it.

    Args:
        root: the dataset folder to create (must not exist, or be empty). If it already holds
            a complete dataset generated with the same options, it is returned as it is.
        num_identities: identities in all (half train, half test), 4..2400.
        images_per_identity: mean images per identity (each draws uniformly from 0.6× to 1.4×).
        num_cameras: cameras, 2..20; each identity is seen by 2 to 4 of them.
        image_size: ``(height, width)`` in pixels.
        harmful_fraction: probability that an image is drawn cue-free and listed in
            ``harmful.txt``.
        occlusion_p: probability of an occluder (pole, low obstacle, passer-by) per image.
        seed: the random seed; the same arguments write byte-identical files.

    The folder appears atomically: the images are written into a temporary sibling folder that
    is renamed to ``root`` once complete.
    """
    options = SyntheticOptions(
        num_identities,
        images_per_identity,
        num_cameras,
        image_size,
        harmful_fraction,
        occlusion_p,
        seed,
    )
    target = Path(root).expanduser().absolute()
    manifest = read_manifest(target)
    if manifest is not None and manifest.get("generator_version") == GENERATOR_VERSION:
        if manifest.get("options") == options.to_dict():
            return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserInputError(
            f"synthetic: {target} already exists and is not a synthetic dataset of these "
            f"options; generate into a new or empty folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    temporary = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_dataset(temporary, options)
        try:
            if target.is_dir():
                target.rmdir()  # empty (checked above); rename cannot replace it portably
            os.rename(temporary, target)
        except OSError:
            # Another process finished the same dataset first: use theirs.
            if read_manifest(target) is None:
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(temporary)
    return target


def synthetic_dataset_folder(cache: str | os.PathLike, **options) -> Path:
    """The folder of the synthetic dataset of ``options`` under ``cache``, generated if missing."""
    parsed = SyntheticOptions(**options)
    folder = Path(cache).expanduser().absolute() / parsed.key()
    if read_manifest(folder) is None:
        generate_synthetic_dataset(folder, **asdict(parsed))
    return folder


def load_synthetic(
    root: str | os.PathLike,
    *,
    num_identities: int = 100,
    images_per_identity: int = 32,
    num_cameras: int = 6,
    image_size: Sequence[int] = (128, 64),
    harmful_fraction: float = 0.05,
    occlusion_p: float = 0.2,
    seed: int = 0,
    verify_images: bool = False,
    skip_unreadable: bool = False,
) -> ReIDDataset:
    """The synthetic dataset of these options, generated under the cache folder ``root`` on
    first use (``root`` may also be a generated dataset folder itself, if its options match).

    ``marks["harmful"]`` holds the absolute paths listed in ``harmful.txt``.
    """
    options = SyntheticOptions(
        num_identities,
        images_per_identity,
        num_cameras,
        image_size,
        harmful_fraction,
        occlusion_p,
        seed,
    )
    base = Path(root).expanduser().absolute()
    if base.exists() and not base.is_dir():
        raise UserInputError(f"synthetic: the cache folder {base} is a file; pass a folder")
    own = read_manifest(base)
    if own is not None:
        if (
            own.get("options") != options.to_dict()
            or own.get("generator_version") != GENERATOR_VERSION
        ):
            raise UserInputError(
                f"synthetic: {base} holds a synthetic dataset generated with {own.get('options')} "
                f"(generator version {own.get('generator_version')}), not {options.to_dict()} "
                f"(version {GENERATOR_VERSION}); pass matching options or its parent cache folder"
            )
        folder = base
    else:
        folder = synthetic_dataset_folder(base, **asdict(options))
    folder = folder.resolve()
    train, query, gallery = read_market_splits(folder, "synthetic", SPLIT_FOLDERS)
    listed = (folder / HARMFUL_FILE).read_text(encoding="utf-8").split()
    harmful = frozenset(os.fspath(folder / relative) for relative in listed)
    return assemble_dataset(
        "synthetic",
        folder,
        train,
        query,
        gallery,
        marks={HARMFUL_MARK: harmful},
        options=options.to_dict(),
        verify_images=verify_images,
        skip_unreadable=skip_unreadable,
    )
