"""Drawing the synthetic pedestrians: identities made of attributes, cameras made of nuisances.

An identity is a combination of learnable cues: clothing colours and pattern, trouser / shorts
/ skirt, shoes, hair, skin, body proportions and a carried item. A camera is a set of
nuisances: colour cast and brightness, background, blur, noise, typical scale and the walking
directions it sees. Each image adds its own jitter, a viewpoint (front, back, left, right) and
sometimes an occluder.

A *cue-free* image is drawn so that it shares no visual cue with the other images of its
identity: back view, a long hooded coat of a colour the identity never wears, no carried item,
legs hidden behind an obstacle. Pairs with such an image are the "harmful" positive pairs of
the Sparse Pairwise paper's analysis.

Everything is drawn with PIL primitives and numpy array arithmetic, a few hundred microseconds
per 128×64 image.

Over 500 lines on purpose: one drawing procedure (attributes, cameras, body parts, occluders)
whose parts share the same canvas conventions; it is data generation, off every hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Colour = tuple[int, int, int]

TOP_COLOURS: dict[str, Colour] = {
    "red": (200, 35, 35),
    "blue": (35, 70, 200),
    "green": (35, 150, 55),
    "yellow": (230, 205, 45),
    "white": (235, 235, 232),
    "black": (28, 28, 30),
    "grey": (128, 128, 128),
    "orange": (240, 130, 25),
    "purple": (125, 45, 165),
    "pink": (240, 145, 185),
    "navy": (22, 32, 92),
    "cyan": (45, 190, 205),
}
BOTTOM_COLOURS: dict[str, Colour] = {
    "denim": (55, 75, 125),
    "black": (30, 30, 32),
    "grey": (115, 115, 115),
    "khaki": (185, 165, 115),
    "white": (228, 228, 222),
    "brown": (112, 72, 42),
    "olive": (70, 90, 40),
    "maroon": (120, 25, 40),
}
SHOE_COLOURS: dict[str, Colour] = {
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "brown": (100, 60, 30),
    "red": (190, 30, 30),
    "blue": (40, 60, 170),
}
HAIR_COLOURS: dict[str, Colour] = {
    "black": (20, 18, 18),
    "brown": (90, 55, 30),
    "blond": (215, 185, 110),
    "grey": (170, 170, 170),
    "auburn": (140, 50, 25),
}
SKIN_TONES: tuple[Colour, ...] = (
    (245, 215, 190),
    (225, 185, 150),
    (195, 145, 105),
    (150, 100, 70),
    (100, 70, 50),
)
PATTERNS = ("solid", "horizontal_stripes", "vertical_stripes", "checks", "logo")
BOTTOM_STYLES = ("trousers", "shorts", "skirt")
ITEMS = ("none", "backpack", "shoulder_bag", "hat", "scarf")
VIEWS = ("front", "back", "left", "right")


@dataclass(frozen=True)
class PersonIdentity:
    """The appearance of one synthetic person (names index the colour tables above)."""

    top: str
    pattern: str
    pattern_colour: str
    long_sleeves: bool
    bottom: str
    bottom_style: str
    shoes: str
    hair: str
    long_hair: bool
    skin: int
    height: float  # relative body height, 0.86..1.0
    build: float  # relative body width, 0.8..1.2
    item: str
    item_colour: str
    bag_side: int  # -1: bag on the person's right, +1: on the left

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CameraConditions:
    """The nuisances of one synthetic camera."""

    gains: tuple[float, float, float]  # per-channel colour cast
    brightness: float
    contrast: float
    blur: float  # Gaussian blur radius in pixels at 128 px height
    noise: float  # Gaussian noise standard deviation, 0..255 scale
    wall: Colour
    ground: Colour
    horizon: float  # fraction of the height where the ground starts
    clutter: int  # background objects
    scale: float  # mean person height as a fraction of the image height
    view_weights: tuple[float, float, float, float]  # front, back, left, right

    def to_dict(self) -> dict:
        return asdict(self)


def random_identities(count: int, rng: np.random.Generator) -> list[PersonIdentity]:
    """``count`` identities whose main cues (top colour, pattern, bottom colour, item) differ.

    Raises ``ValueError`` above the number of distinct combinations (12·5·8·5 = 2,400).
    """
    tops, bottoms = list(TOP_COLOURS), list(BOTTOM_COLOURS)
    combos = len(tops) * len(PATTERNS) * len(bottoms) * len(ITEMS)
    if count > combos:
        raise ValueError(f"at most {combos} distinct synthetic identities, asked for {count}")
    keys = rng.choice(combos, size=count, replace=False)
    identities = []
    for key in keys.tolist():
        key, top = divmod(key, len(tops))
        key, pattern = divmod(key, len(PATTERNS))
        item, bottom = divmod(key, len(bottoms))
        others = [c for c in tops if c != tops[top]]
        identities.append(
            PersonIdentity(
                top=tops[top],
                pattern=PATTERNS[pattern],
                pattern_colour=others[int(rng.integers(len(others)))],
                long_sleeves=bool(rng.random() < 0.5),
                bottom=bottoms[bottom],
                bottom_style=BOTTOM_STYLES[int(rng.choice(3, p=[0.6, 0.25, 0.15]))],
                shoes=list(SHOE_COLOURS)[int(rng.integers(len(SHOE_COLOURS)))],
                hair=list(HAIR_COLOURS)[int(rng.integers(len(HAIR_COLOURS)))],
                long_hair=bool(rng.random() < 0.35),
                skin=int(rng.integers(len(SKIN_TONES))),
                height=float(rng.uniform(0.86, 1.0)),
                build=float(rng.uniform(0.8, 1.2)),
                item=ITEMS[item],
                item_colour=tops[int(rng.integers(len(tops)))],
                bag_side=int(rng.choice([-1, 1])),
            )
        )
    return identities


def _muted(rng: np.random.Generator, low: int, high: int) -> Colour:
    """A greyish colour: a random grey level with a small tint (walls, pavements)."""
    grey = rng.integers(low, high)
    return tuple(int(v) for v in np.clip(grey + rng.integers(-25, 26, size=3), 0, 255))  # type: ignore[return-value]


def random_cameras(count: int, rng: np.random.Generator) -> list[CameraConditions]:
    """``count`` cameras with different colour casts, light, backgrounds, blur and viewpoints."""
    cameras = []
    for _ in range(count):
        views = rng.dirichlet(np.full(4, 0.8))
        cameras.append(
            CameraConditions(
                gains=tuple(float(g) for g in rng.uniform(0.78, 1.22, size=3)),
                brightness=float(rng.uniform(0.7, 1.2)),
                contrast=float(rng.uniform(0.8, 1.1)),
                blur=float(rng.uniform(0.0, 1.0)),
                noise=float(rng.uniform(2.0, 7.0)),
                wall=_muted(rng, 70, 200),
                ground=_muted(rng, 50, 150),
                horizon=float(rng.uniform(0.55, 0.8)),
                clutter=int(rng.integers(2, 8)),
                scale=float(rng.uniform(0.74, 0.9)),
                view_weights=tuple(float(v) for v in 0.2 / 4 + 0.8 * views),
            )
        )
    return cameras


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


class _Canvas:
    """Drawing helpers in person coordinates: ``x`` in units from the body's centre line,
    ``y`` in units from the top of the head, 100 units = the person's height."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, unit: float):
        self.draw, self.cx, self.top, self.unit = draw, cx, top, unit

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + x * self.unit, self.top + y * self.unit

    def quad(self, corners: list[tuple[float, float]], colour: Colour) -> None:
        self.draw.polygon([self.point(x, y) for x, y in corners], fill=colour)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        self.quad([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        (a, b), (c, d) = self.point(x0, y0), self.point(x1, y1)
        self.draw.ellipse([min(a, c), min(b, d), max(a, c), max(b, d)], fill=colour)

    def line(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, width: float):
        self.draw.line(
            [self.point(x0, y0), self.point(x1, y1)],
            fill=colour,
            width=max(1, round(width * self.unit)),
        )


# Body landmarks, in units of the person's height from the top of the head.
_HEAD_BOTTOM, _SHOULDER, _WAIST, _KNEE, _ANKLE = 14.0, 16.0, 47.0, 72.0, 95.0


def _torso_pattern(
    canvas: _Canvas, person: PersonIdentity, half: tuple[float, float], view: str
) -> None:
    """Pattern cells in fractional torso coordinates, mapped bilinearly into the torso quad."""
    top_half, waist_half = half
    colour = TOP_COLOURS[person.pattern_colour]

    def cell(fx0: float, fy0: float, fx1: float, fy1: float) -> None:
        def at(fx: float, fy: float) -> tuple[float, float]:
            w = top_half + (waist_half - top_half) * fy
            return -w + 2 * w * fx, _SHOULDER + (_WAIST - _SHOULDER) * fy

        canvas.quad([at(fx0, fy0), at(fx1, fy0), at(fx1, fy1), at(fx0, fy1)], colour)

    pattern = person.pattern
    if pattern == "horizontal_stripes":
        for k in range(5):
            cell(0, (2 * k + 0.5) / 10, 1, (2 * k + 1.5) / 10)
    elif pattern == "vertical_stripes" and view in ("front", "back"):
        for k in range(4):
            cell((2 * k + 0.5) / 8, 0, (2 * k + 1.5) / 8, 1)
    elif pattern == "vertical_stripes":
        cell(0.3, 0, 0.7, 1)
    elif pattern == "checks":
        for i in range(4):
            for j in range(6):
                if (i + j) % 2 == 0:
                    cell(i / 4, j / 6, (i + 1) / 4, (j + 1) / 6)
    elif pattern == "logo" and view == "front":
        # Visible from the front only: a cue that disappears in back and side views.
        canvas.ellipse(-5.0, 22.0, 5.0, 32.0, colour)
        canvas.rect(-2.0, 32.0, 2.0, 38.0, colour)


def draw_person(
    draw: ImageDraw.ImageDraw,
    person: PersonIdentity,
    view: str,
    cx: float,
    top: float,
    height: float,
    cue_free_coat: Colour | None = None,
) -> None:
    """Draw ``person`` seen from ``view`` with the head top at ``(cx, top)``, ``height`` pixels
    tall. ``cue_free_coat`` draws the cue-free variant: a hooded coat of that colour and no
    item."""
    canvas = _Canvas(draw, cx, top, height / 100.0)
    side = view in ("left", "right")
    facing = -1.0 if view == "left" else 1.0  # +1: facing the image's right
    build = person.build
    half = (13.0 * build, 11.0 * build) if not side else (8.0 * build, 7.5 * build)
    skin = SKIN_TONES[person.skin]
    hair = HAIR_COLOURS[person.hair]
    top_colour = TOP_COLOURS[person.top]
    bottom = BOTTOM_COLOURS[person.bottom]
    shoes = SHOE_COLOURS[person.shoes]
    item_colour = TOP_COLOURS[person.item_colour]
    coat = cue_free_coat

    # Legs and shoes (behind everything else).
    if side:
        stride = 6.0
        legs = [(-stride * facing, 0.9), (stride * facing, 1.0)]
    else:
        legs = [(-4.6 * build, 1.0), (4.6 * build, 1.0)]
    leg_half = 4.0 * build if not side else 3.6 * build
    for foot_x, tone in legs:
        hip_x = 0.0 if side else foot_x * 0.9
        lower = _shade(bottom, tone) if person.bottom_style == "trousers" else _shade(skin, tone)
        if coat is not None:
            lower = (55, 55, 60)  # hidden behind the obstacle anyway
        canvas.quad(
            [
                (hip_x - leg_half, _WAIST),
                (hip_x + leg_half, _WAIST),
                (foot_x + leg_half * 0.8, _ANKLE),
                (foot_x - leg_half * 0.8, _ANKLE),
            ],
            lower,
        )
        toe = 3.0 * facing if side else 0.0
        canvas.ellipse(
            foot_x - 3.5 + min(toe, 0), _ANKLE - 1, foot_x + 3.5 + max(toe, 0), 100.0, shoes
        )
    if coat is not None:
        pass  # under the coat
    elif person.bottom_style == "shorts":
        canvas.quad(
            [(-half[1], _WAIST), (half[1], _WAIST), (half[1] + 1, 61.0), (-half[1] - 1, 61.0)],
            bottom,
        )
    elif person.bottom_style == "skirt":
        canvas.quad(
            [(-half[1], _WAIST), (half[1], _WAIST), (half[1] + 5, 68.0), (-half[1] - 5, 68.0)],
            bottom,
        )
    else:
        canvas.rect(-half[1], _WAIST, half[1], _WAIST + 4.0, bottom)

    # Backpack seen from the side sits behind the body: draw it before the torso.
    if coat is None and person.item == "backpack" and side:
        canvas.rect(
            -facing * half[0] - facing * 6.0,
            18.0,
            -facing * half[0] + facing * 1.0,
            44.0,
            item_colour,
        )

    # Arms behind the torso in side view; beside it in front / back view.
    sleeve = coat or top_colour
    arm_half = 2.6 * build
    arm_x = [0.0] if side else [-(half[0] + arm_half * 0.8), half[0] + arm_half * 0.8]
    for x in arm_x:
        swing = 2.5 * facing if side else 1.5 * np.sign(x)
        canvas.quad(
            [
                (x - arm_half, _SHOULDER + 1),
                (x + arm_half, _SHOULDER + 1),
                (x + swing + arm_half, 50.0),
                (x + swing - arm_half, 50.0),
            ],
            sleeve if (person.long_sleeves or coat) else skin,
        )
        if not person.long_sleeves and coat is None:
            canvas.quad(
                [
                    (x - arm_half, _SHOULDER + 1),
                    (x + arm_half, _SHOULDER + 1),
                    (x + swing * 0.4 + arm_half, 29.0),
                    (x + swing * 0.4 - arm_half, 29.0),
                ],
                top_colour,
            )
        canvas.ellipse(x + swing - 2.2, 49.0, x + swing + 2.2, 54.0, skin)

    # Torso and its pattern.
    canvas.quad(
        [(-half[0], _SHOULDER), (half[0], _SHOULDER), (half[1], _WAIST), (-half[1], _WAIST)],
        coat or top_colour,
    )
    if coat is None:
        _torso_pattern(canvas, person, half, view)
    else:
        # A long coat over torso, hips and thighs, hiding clothes and proportions.
        canvas.quad([(-14.0, _SHOULDER), (14.0, _SHOULDER), (16.0, 80.0), (-16.0, 80.0)], coat)
        canvas.line(0.0, _SHOULDER + 2, 0.0, 80.0, _shade(coat, 0.7), 0.8)

    # Neck, head and hair.
    canvas.rect(-2.5, _HEAD_BOTTOM - 2, 2.5, _SHOULDER + 1, skin if coat is None else coat)
    head_half = 6.0 if not side else 5.5
    show_face = view != "back"
    canvas.ellipse(-head_half, 0.0, head_half, _HEAD_BOTTOM, skin if show_face else hair)
    if coat is not None:
        canvas.ellipse(-head_half - 1.0, -1.0, head_half + 1.0, _HEAD_BOTTOM + 1.0, coat)
    elif view == "front":
        canvas.ellipse(-head_half, -0.5, head_half, 6.0, hair)
        if person.long_hair:
            canvas.rect(-head_half - 1.0, 3.0, -head_half + 1.5, 24.0, hair)
            canvas.rect(head_half - 1.5, 3.0, head_half + 1.0, 24.0, hair)
    elif view == "back":
        if person.long_hair:
            canvas.rect(-head_half, 6.0, head_half, 26.0, hair)
    else:
        canvas.ellipse(-head_half, -0.5, head_half, 7.0, hair)
        canvas.rect(
            -facing * head_half, 2.0, -facing * 1.0, 10.0 if not person.long_hair else 25.0, hair
        )

    if coat is not None:
        return
    # Carried items.
    item = person.item
    if item == "hat":
        canvas.ellipse(-head_half - 0.5, -2.0, head_half + 0.5, 5.0, item_colour)
        brim = 3.0 * facing if side else 0.0
        canvas.rect(
            -head_half - 2.0 + min(brim, 0), 3.5, head_half + 2.0 + max(brim, 0), 5.5, item_colour
        )
    elif item == "scarf":
        canvas.rect(-6.0, _HEAD_BOTTOM - 1, 6.0, _SHOULDER + 4, item_colour)
        if view == "front":
            canvas.rect(1.0, _SHOULDER + 2, 4.5, 34.0, item_colour)
        elif side:
            canvas.rect(facing * 2.0 - 1.5, _SHOULDER + 2, facing * 2.0 + 1.5, 30.0, item_colour)
    elif item == "backpack":
        if view == "back":
            canvas.rect(-9.0 * build, 19.0, 9.0 * build, 44.0, item_colour)
            canvas.rect(-7.0 * build, 35.0, 7.0 * build, 37.0, _shade(item_colour, 0.6))
        elif view == "front":
            canvas.rect(-8.0 * build, _SHOULDER, -5.5 * build, 36.0, item_colour)
            canvas.rect(5.5 * build, _SHOULDER, 8.0 * build, 36.0, item_colour)
    elif item == "shoulder_bag":
        # The bag hangs on the person's bag_side; mirrored between front and back views.
        sign = person.bag_side * (1.0 if view == "back" else -1.0)
        if not side:
            x = sign * (half[0] + 4.0)
            canvas.line(
                -sign * half[0] * 0.7, _SHOULDER, sign * half[1] * 0.8, 42.0, item_colour, 1.2
            )
            canvas.rect(x - 4.5, 38.0, x + 4.5, 50.0, item_colour)
        elif (view == "left") == (person.bag_side > 0):
            canvas.rect(-5.0, 38.0, 5.0, 50.0, item_colour)
            canvas.line(0.0, _SHOULDER, 0.0, 38.0, item_colour, 1.2)


def draw_background(
    size: tuple[int, int], camera: CameraConditions, rng: np.random.Generator
) -> Image.Image:
    """A wall / ground scene with random clutter in the camera's palette, ``size`` = (H, W)."""
    height, width = size
    jitter = rng.uniform(0.85, 1.15, size=(2, 3))
    wall = np.asarray(camera.wall, dtype=np.float32) * jitter[0]
    ground = np.asarray(camera.ground, dtype=np.float32) * jitter[1]
    horizon = int(height * (camera.horizon + rng.uniform(-0.05, 0.05)))
    rows = np.linspace(0.85, 1.1, height, dtype=np.float32)[:, None, None]
    array = np.empty((height, width, 3), dtype=np.float32)
    array[:horizon] = wall
    array[horizon:] = ground
    array *= rows
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(camera.clutter + int(rng.integers(-1, 3))):
        x0 = rng.uniform(-0.2, 1.0) * width
        y0 = rng.uniform(0.0, camera.horizon) * height
        w = rng.uniform(0.1, 0.5) * width
        h = rng.uniform(0.05, 0.45) * height
        if rng.random() < 0.2:  # a vivid object (car, sign, poster) that can confuse colour cues
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        else:
            colour = tuple(int(v) for v in np.clip(wall * rng.uniform(0.6, 1.4), 0, 255))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    return image


def draw_occluder(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    rng: np.random.Generator,
    kind: str,
    low_top: float | None = None,
) -> None:
    """An obstacle in front of the person: ``"pole"``, ``"low"`` (car, bench; its top at
    ``low_top`` pixels, random if None) or ``"passer"``."""
    height, width = size
    colour = tuple(int(v) for v in rng.integers(20, 230, size=3))
    if kind == "pole":
        x = rng.uniform(0.15, 0.85) * width
        w = rng.uniform(0.06, 0.16) * width
        draw.rectangle([x - w / 2, 0, x + w / 2, height], fill=colour)
    elif kind == "low":
        y = rng.uniform(0.55, 0.8) * height if low_top is None else low_top
        draw.rectangle([-1, y, width, height], fill=colour)
        draw.rectangle([-1, y, width, y + 0.04 * height], fill=_shade(colour, 1.3))
    else:
        left = rng.random() < 0.5
        w = rng.uniform(0.25, 0.45) * width
        x0, x1 = (-1, w) if left else (width - w, width + 1)
        draw.rectangle([x0, 0.2 * height, x1, height], fill=colour)
        draw.ellipse(
            [x0 + 0.1 * w, 0.05 * height, x1 - 0.1 * w, 0.25 * height], fill=_shade(colour, 0.8)
        )


def apply_camera(
    image: Image.Image, camera: CameraConditions, rng: np.random.Generator
) -> Image.Image:
    """Blur, colour cast, brightness / contrast and sensor noise of ``camera`` with jitter."""
    scale = image.height / 128.0
    radius = max(0.0, (camera.blur + rng.uniform(-0.25, 0.35)) * scale)
    if radius > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    array = np.asarray(image, dtype=np.float32)
    gains = np.asarray(camera.gains, dtype=np.float32) * rng.uniform(0.95, 1.05, size=3)
    brightness = camera.brightness * rng.uniform(0.9, 1.1)
    array = array * (gains * brightness).astype(np.float32)
    array = (array - 128.0) * camera.contrast + 128.0
    array += rng.normal(0.0, camera.noise, size=array.shape).astype(np.float32)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class RenderedImage:
    """One synthetic image and what was drawn."""

    image: Image.Image
    view: str
    occluder: str  # "none", "pole", "low" or "passer"
    cue_free: bool


def render_image(
    person: PersonIdentity,
    camera: CameraConditions,
    size: tuple[int, int],
    rng: np.random.Generator,
    view: str,
    occlusion_p: float,
    cue_free: bool,
) -> RenderedImage:
    """Render ``person`` seen by ``camera`` as an RGB image of ``size`` = (H, W)."""
    height, width = size
    image = draw_background(size, camera, rng)
    draw = ImageDraw.Draw(image)
    if cue_free:
        view = "back"
        # A coat colour far from every colour the identity wears.
        worn = np.asarray(
            [
                TOP_COLOURS[person.top],
                BOTTOM_COLOURS[person.bottom],
                TOP_COLOURS[person.item_colour],
            ],
            dtype=np.float32,
        )
        options = np.asarray(list(TOP_COLOURS.values()), dtype=np.float32)
        distance = np.abs(options[:, None, :] - worn[None]).sum(-1).min(1)
        candidates = np.flatnonzero(distance >= np.median(distance))
        coat: Colour | None = tuple(int(v) for v in options[int(rng.choice(candidates))])
    else:
        coat = None
    person_height = height * min(0.97, camera.scale * person.height * rng.uniform(0.9, 1.1))
    feet = height * rng.uniform(0.96, 0.995)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    draw_person(draw, person, view, cx, feet - person_height, person_height, coat)
    occluder = "none"
    if cue_free:
        occluder = "low"
        # Up to the hem of the coat: legs and shoes are hidden too.
        top = feet - person_height
        draw_occluder(draw, size, rng, "low", low_top=top + person_height * rng.uniform(0.72, 0.78))
    elif rng.random() < occlusion_p:
        occluder = ("pole", "low", "passer")[int(rng.integers(3))]
        draw_occluder(draw, size, rng, occluder)
    return RenderedImage(apply_camera(image, camera, rng), view, occluder, cue_free)
