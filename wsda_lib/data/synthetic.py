"""The embedded two-domain benchmark: procedural street scenes rendered two ways.

One scene grammar (a road towards a vanishing point, sidewalks, buildings under a sky, trees,
fences, poles, cars and people, drawn far to near) is rendered twice:

* source, "game": clean, saturated colours, even lighting, sharp edges, no sensor noise;
* target, "real": a greyer, overcast palette, photo-like texture contrast, a lighting gradient
  and cast shadows, exposure and gamma changes, blur, sensor noise and vignetting.

The two domains share their content: the same shapes and the same texture fields (brick
courses, leaves, asphalt grain, sidewalk tiles). What differs is the style and the statistics,
as between GTA5 and Cityscapes:

* appearance: palette, saturation, lighting, optics and sensor (see `Rendering`);
* labels: class presence rates, object counts and layout priors (see `SceneStatistics`): the
  source streets are built-up and busy with cars; the target streets are greener, with more
  people, fewer cars, and many images that lack some classes, so image-level labels carry
  information.

A textureless target (textures the source never shows) was avoided on purpose: a measured
prototype found that such a gap is not one that feature alignment can close, unlike the
style gap of GTA5 -> Cityscapes.

Everything is deterministic: image i of a split is drawn from its own generator seeded by
(seed, split, i), so results do not depend on how the work is chunked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from wsda_lib.core.config import check_range
from wsda_lib.data.classes import EMBEDDED

# Bump when the painters change the images that given parameters produce. It keys the disk
# cache and the runs, with a fingerprint of the domains' parameters (`fingerprint`).
GENERATOR_VERSION = 2

ROAD, SIDEWALK, BUILDING, FENCE, POLE, VEGETATION, TERRAIN, SKY, PERSON, CAR = range(10)
assert EMBEDDED.names[CAR] == "car" and EMBEDDED.names[ROAD] == "road"


@dataclass(frozen=True)
class SceneStatistics:
    """A domain's label distribution: what appears, how often, how many and where."""

    presence: dict[str, float]            # probability that an optional class is in an image
    cars: tuple[int, int]                 # count range when cars are present
    persons: tuple[int, int]
    poles: tuple[int, int]
    trees: tuple[int, int]
    horizon: tuple[float, float]          # horizon row, as a fraction of the height
    building_height: tuple[float, float]  # facade height above the horizon, fraction of height
    building_gap: float                   # chance that a facade slot is left open
    road_half_width: tuple[float, float]  # half-width of the road at the bottom, fraction of W
    # outer sidewalk edge, as a multiple of the road's half-width (when sidewalks are present)
    sidewalk_factor: tuple[float, float] = (1.25, 1.6)
    pole_width: float = 1.0               # multiplies a pole's width (and its sign's size)
    person_height: float = 1.0            # multiplies a pedestrian's height (and width)


@dataclass(frozen=True)
class Rendering:
    """A domain's appearance: palette, lighting, optics and sensor."""

    palette: dict[str, tuple[float, float, float]]  # mean RGB in [0, 1] per region class
    colour_jitter: float       # per-image, per-class relative colour noise (std)
    texture_contrast: float    # how strongly the shared texture fields modulate colour
    saturation: tuple[float, float]
    exposure: tuple[float, float]
    gamma: tuple[float, float]
    light_gradient: float      # max brightness change across the image from a side light
    shadow_prob: float         # chance of a cast shadow across the ground
    blur_sigma: tuple[float, float]
    noise_std: tuple[float, float]
    vignette: float            # brightness loss at the corners


@dataclass(frozen=True)
class Domain:
    name: str
    scene: SceneStatistics
    rendering: Rendering


V1_SOURCE = Domain(
    "source",
    SceneStatistics(
        presence={"sidewalk": 0.95, "building": 0.95, "fence": 0.6, "pole": 0.85,
                  "vegetation": 0.55, "terrain": 0.3, "person": 0.5, "car": 0.9},
        cars=(1, 4), persons=(1, 3), poles=(1, 3), trees=(1, 2),
        horizon=(0.38, 0.5), building_height=(0.2, 0.45), building_gap=0.15,
        road_half_width=(0.35, 0.5),
    ),
    Rendering(
        palette={"road": (0.30, 0.30, 0.34), "sidewalk": (0.78, 0.62, 0.70),
                 "building": (0.66, 0.42, 0.32), "fence": (0.72, 0.66, 0.38),
                 "pole": (0.86, 0.80, 0.22), "vegetation": (0.16, 0.66, 0.18),
                 "terrain": (0.58, 0.80, 0.30), "sky": (0.32, 0.60, 0.98)},
        colour_jitter=0.08, texture_contrast=0.12, saturation=(1.1, 1.3), exposure=(0.95, 1.05),
        gamma=(1.0, 1.0), light_gradient=0.0, shadow_prob=0.0, blur_sigma=(0.0, 0.0),
        noise_std=(0.0, 0.0), vignette=0.0,
    ),
)

V1_TARGET = Domain(
    "target",
    SceneStatistics(
        presence={"sidewalk": 0.8, "building": 0.7, "fence": 0.45, "pole": 0.65,
                  "vegetation": 0.9, "terrain": 0.6, "person": 0.75, "car": 0.6},
        cars=(1, 3), persons=(1, 5), poles=(1, 2), trees=(1, 4),
        horizon=(0.33, 0.55), building_height=(0.15, 0.4), building_gap=0.3,
        road_half_width=(0.25, 0.45),
    ),
    Rendering(
        palette={"road": (0.44, 0.42, 0.40), "sidewalk": (0.58, 0.55, 0.53),
                 "building": (0.56, 0.55, 0.53), "fence": (0.46, 0.43, 0.38),
                 "pole": (0.38, 0.38, 0.38), "vegetation": (0.30, 0.38, 0.20),
                 "terrain": (0.50, 0.47, 0.30), "sky": (0.80, 0.84, 0.88)},
        colour_jitter=0.12, texture_contrast=0.3, saturation=(0.6, 0.9), exposure=(0.75, 1.25),
        gamma=(0.85, 1.2), light_gradient=0.35, shadow_prob=0.5, blur_sigma=(0.4, 1.0),
        noise_std=(0.015, 0.05), vignette=0.25,
    ),
)


# The calibration of the shift (wsda_lib/experiments/calibration.py, docs/method.md §14). Each
# variant is the first benchmark (V1_*) with dotted fields changed,
# "target.rendering.palette.road" or "source.scene.pole_width"; the variants were tried in
# this order, and the record of each one's source-only and oracle endpoints is
# figures/benchmark_calibration.json. The benchmark is the variant CALIBRATED.
_T = "target.rendering."
_V2_PALETTE = {  # the target's colours keep the source's hues, greyer and darker
    _T + "palette": {"road": (0.40, 0.39, 0.41), "sidewalk": (0.62, 0.54, 0.58),
                     "building": (0.58, 0.45, 0.38), "fence": (0.60, 0.56, 0.40),
                     "pole": (0.66, 0.62, 0.32), "vegetation": (0.22, 0.50, 0.18),
                     "terrain": (0.45, 0.58, 0.28), "sky": (0.52, 0.66, 0.88)}}
VARIANTS: dict[str, tuple[str, dict]] = {
    "v1": ("the first benchmark, tuned until alignment closed the gap", {}),
    "v2": ("target colours keep the source's hues, greyer and darker: most of v1's target "
           "pixels look like the source's only grey class, road", _V2_PALETTE),
    "v3": ("v2 with v1's saturation and exposure ranges narrowed", {
        **_V2_PALETTE, _T + "saturation": (0.75, 0.95), _T + "exposure": (0.85, 1.15)}),
    "v4": ("v3 with terrain's colour near vegetation's, sidewalk's near road's", {
        **_V2_PALETTE, _T + "saturation": (0.75, 0.95), _T + "exposure": (0.85, 1.15),
        _T + "palette.terrain": (0.32, 0.50, 0.22), _T + "palette.sidewalk": (0.50, 0.46, 0.48)}),
    "v5": ("v3 with the saturation gap to the source halved", {
        **_V2_PALETTE, _T + "saturation": (0.9, 1.1), _T + "exposure": (0.85, 1.15)}),
    "v6": ("v5 with v1's grey fence and narrower sidewalks (thin classes stay hard)", {
        **_V2_PALETTE, _T + "saturation": (0.9, 1.1), _T + "exposure": (0.85, 1.15),
        _T + "palette.fence": (0.46, 0.43, 0.38),
        "target.scene.sidewalk_factor": (1.1, 1.35)}),
    "v7": ("v6 with less blur", {
        **_V2_PALETTE, _T + "saturation": (0.9, 1.1), _T + "exposure": (0.85, 1.15),
        _T + "palette.fence": (0.46, 0.43, 0.38), _T + "blur_sigma": (0.2, 0.6),
        "target.scene.sidewalk_factor": (1.1, 1.35)}),
}
_V6 = VARIANTS["v6"][1]
VARIANTS.update({
    "v8": ("v6 with weaker texture contrast and sensor noise: v6's textured target ground "
           "is taken for people", {**_V6, _T + "texture_contrast": 0.2,
                                   _T + "noise_std": (0.01, 0.03)}),
    "v9": ("v6 with the source's texture contrast", {**_V6, _T + "texture_contrast": 0.12}),
})
_V8 = VARIANTS["v8"][1]
_S = "target.scene."
_CITY_LAYOUT = {  # class areas nearer Cityscapes': more road and building, less terrain and sky
    _S + "presence": {"sidewalk": 0.8, "building": 0.9, "fence": 0.45, "pole": 0.65,
                      "vegetation": 0.85, "terrain": 0.35, "person": 0.75, "car": 0.6},
    _S + "building_height": (0.25, 0.5), _S + "building_gap": 0.15,
    _S + "road_half_width": (0.35, 0.5)}
VARIANTS.update({
    "v10": ("v8 with class areas nearer Cityscapes': v8's target is 17 % terrain and 23 % "
            "sky, 17 % road and 8.5 % building", {**_V8, **_CITY_LAYOUT}),
})
_V10 = VARIANTS["v10"][1]
VARIANTS.update({
    "v11": ("v10 with terrain greener (nearer vegetation) and sidewalk nearer road, the "
            "look-alikes of Cityscapes", {**_V10, _T + "palette.terrain": (0.38, 0.52, 0.25),
                                          _T + "palette.sidewalk": (0.55, 0.49, 0.52)}),
    "v12": ("v11 with larger pedestrians", {**_V10, _T + "palette.terrain": (0.38, 0.52, 0.25),
                                            _T + "palette.sidewalk": (0.55, 0.49, 0.52),
                                            _S + "person_height": 1.4}),
})
_V11 = VARIANTS["v11"][1]
VARIANTS.update({
    "v13": ("v11 with terrain greener still", {**_V11, _T + "palette.terrain": (0.32, 0.48, 0.22)}),
    "v14": ("v13 with less sensor noise", {**_V11, _T + "palette.terrain": (0.32, 0.48, 0.22),
                                                 _T + "noise_std": (0.005, 0.02)}),
})

# The first variant that meets every target of the calibration (calibration.TARGETS).
CALIBRATED = "v11"


def _changed(domain: Domain, path: list[str], value) -> Domain:
    """`domain` with the field at `path` (["rendering", "palette", "road"]) set to `value`."""
    head, *rest = path
    if isinstance(domain, dict):
        if head not in domain:
            raise KeyError(f"no entry {head!r}; expected one of {sorted(domain)}")
        return {**domain, head: _changed(domain[head], rest, value) if rest else value}
    if head not in {f.name for f in dataclasses.fields(domain)}:
        raise KeyError(f"{type(domain).__name__} has no field {head!r}")
    new = _changed(getattr(domain, head), rest, value) if rest else value
    return dataclasses.replace(domain, **{head: new})


def domains(variant: str = CALIBRATED) -> dict[str, Domain]:
    """The two domains of a calibration variant (VARIANTS), by name: {"source", "target"}.
    Raises KeyError naming an unknown variant or field."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown benchmark variant {variant!r}; expected one of "
                       f"{list(VARIANTS)}")
    out = {"source": V1_SOURCE, "target": V1_TARGET}
    for dotted, value in VARIANTS[variant][1].items():
        name, *path = dotted.split(".")
        out[name] = _changed(out[name], path, value)
    return out


def fingerprint(doms: dict[str, Domain]) -> str:
    """A short hash of both domains' parameters and GENERATOR_VERSION: what keys the cached
    images and the runs trained on them."""
    spec = {"version": GENERATOR_VERSION,
            **{k: dataclasses.asdict(d) for k, d in sorted(doms.items())}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


DOMAINS = domains()
SOURCE, TARGET = DOMAINS["source"], DOMAINS["target"]


# ---------------------------------------------------------------------------------------------
# Shared content: texture fields, the same for both domains.

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]):
    """Value noise: a coarse Gaussian grid bilinearly upsampled to `shape`, std ~1."""
    grid = rng.standard_normal((cells[0] + 2, cells[1] + 2))
    ys = np.linspace(0, cells[0], shape[0])
    xs = np.linspace(0, cells[1], shape[1])
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


@dataclass
class _Textures:
    """Texture fields twice the image size; each image crops a random window of each."""

    fields: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def make(cls, height: int, width: int) -> _Textures:
        rng = np.random.default_rng(12345)  # content is fixed: both domains share it
        h2, w2 = 2 * height, 2 * width
        fine = lambda: _smooth_noise(rng, (h2, w2), (h2 // 2, w2 // 2))  # noqa: E731
        medium = lambda: _smooth_noise(rng, (h2, w2), (h2 // 6, w2 // 6))  # noqa: E731
        coarse = lambda: _smooth_noise(rng, (h2, w2), (4, 8))  # noqa: E731
        yy, xx = np.mgrid[0:h2, 0:w2]
        courses = np.where((yy % 4 == 0) | ((xx + 4 * ((yy // 4) % 2)) % 8 == 0), -1.5, 0.3)
        tiles = np.where((yy % 6 == 0) | (xx % 10 == 0), -1.2, 0.2)
        return cls({
            "road": 0.8 * fine() + 0.5 * coarse(),
            "sidewalk": tiles + 0.5 * fine(),
            "building": courses + 0.5 * medium(),
            "fence": np.where(xx % 3 == 0, -1.5, 0.5) + 0.3 * fine(),
            "pole": 0.3 * fine(),
            "vegetation": 1.2 * fine() + 0.8 * medium(),
            "terrain": 0.9 * fine() + 0.7 * medium(),
            "sky": 0.8 * coarse(),
            "object": 0.4 * fine(),
        })

    def crop(self, rng: np.random.Generator, name: str, height: int, width: int) -> np.ndarray:
        f = self.fields[name]
        y, x = rng.integers(0, f.shape[0] - height + 1), rng.integers(0, f.shape[1] - width + 1)
        return f[y:y + height, x:x + width]


# ---------------------------------------------------------------------------------------------
# One scene: the label map and the albedo are painted together, far to near.

class _Canvas:
    def __init__(self, height: int, width: int):
        self.label = np.full((height, width), SKY, np.uint8)
        self.albedo = np.zeros((height, width, 3), np.float64)
        self.yy, self.xx = np.mgrid[0:height, 0:width]

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray):
        """Set `mask` to class `cls`; `colour` is an RGB triple or an (H, W, 3) image."""
        self.label[mask] = cls
        self.albedo[mask] = colour if np.ndim(colour) == 1 else colour[mask]


def _perturb(rng, rgb, jitter):
    """An RGB colour with relative Gaussian jitter, clipped to [0.02, 1]; draws 3 normals."""
    return np.clip(np.asarray(rgb) * (1 + jitter * rng.standard_normal(3)), 0.02, 1.0)


@dataclass
class _Scene:
    """What the painters share: the generator, the domain, the textures and the canvas."""

    rng: np.random.Generator
    domain: Domain
    textures: _Textures
    canvas: _Canvas
    present: dict[str, bool]  # optional class -> whether this image has it

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the canvas."""
        return self.canvas.label.shape

    def region(self, name: str) -> np.ndarray:
        """An (H, W, 3) colour image of a region class: jittered palette colour times texture."""
        rd = self.domain.rendering
        colour = _perturb(self.rng, rd.palette[name], rd.colour_jitter)
        tex = self.textures.crop(self.rng, name, *self.shape)[..., None]
        return colour * (1 + rd.texture_contrast * tex)


@dataclass(frozen=True)
class _Ground:
    """The road's perspective; a depth runs from 0 at the horizon to 1 at the bottom row."""

    height: int
    horizon: int
    x_vanish: float         # road centre at the horizon
    x_bottom: float         # road centre at the bottom row
    road_half: float        # half-width of the road at the bottom row
    sidewalk_factor: float  # outer sidewalk edge, as a multiple of the road's half-width

    def centre(self, depth):
        """x of the road's centre at a depth (a number or an array)."""
        return self.x_vanish + (self.x_bottom - self.x_vanish) * depth

    def kerb_x(self, depth: float, side: int) -> float:
        """x of the sidewalk's outer edge at a depth (0..1), on the left (-1) or right (+1)."""
        return self.centre(depth) + side * (self.road_half * depth + 1) * self.sidewalk_factor

    def row(self, depth: float) -> int:
        """The image row at a depth (0..1)."""
        return int(self.horizon + depth * (self.height - self.horizon))


def _paint_sky(scene: _Scene):
    """Fill the whole canvas with sky; everything else is painted over it."""
    scene.canvas.paint(np.ones(scene.shape, bool), SKY, scene.region("sky"))


def _paint_buildings(scene: _Scene, horizon: int):
    """A row of facades standing on the horizon, with random gaps, widths and heights."""
    rng, sc, cv = scene.rng, scene.domain.scene, scene.canvas
    H, W = scene.shape
    facade = scene.region("building")
    x = 0
    while x < W:
        w = int(W * rng.uniform(0.1, 0.28)) + 2
        if rng.random() >= sc.building_gap:
            top = max(0, horizon - int(H * rng.uniform(*sc.building_height)))
            shade = rng.uniform(0.8, 1.15)
            m = (cv.yy >= top) & (cv.yy < horizon + 2) & (cv.xx >= x) & (cv.xx < x + w)
            cv.paint(m, BUILDING, facade * shade)
        x += w


def _lay_out_ground(scene: _Scene, horizon: int) -> _Ground:
    """Draw the road's perspective: centre line, width and sidewalk width."""
    rng, W = scene.rng, scene.shape[1]
    x_vanish = W * rng.uniform(0.4, 0.6)
    x_bottom = W * rng.uniform(0.4, 0.6)
    road_half = W * rng.uniform(*scene.domain.scene.road_half_width)
    sidewalk_factor = (rng.uniform(*scene.domain.scene.sidewalk_factor)
                       if scene.present["sidewalk"] else 1.0)
    return _Ground(scene.shape[0], horizon, x_vanish, x_bottom, road_half, sidewalk_factor)


def _paint_ground(scene: _Scene, ground: _Ground):
    """Roadside, sidewalks and the road, which narrows linearly towards the vanishing point."""
    cv, present, horizon = scene.canvas, scene.present, ground.horizon
    yy, xx = cv.yy, cv.xx
    d = np.clip((yy - horizon) / max(ground.height - horizon, 1), 0, 1)  # depth of each pixel
    centre = ground.centre(d)
    half = ground.road_half * d + 1
    on_ground = yy >= horizon
    off = np.abs(xx - centre)
    roadside_cls = TERRAIN if present["terrain"] else (SIDEWALK if present["sidewalk"] else ROAD)
    cv.paint(on_ground, roadside_cls, scene.region(EMBEDDED.names[roadside_cls]))
    if present["sidewalk"]:
        cv.paint(on_ground & (off < half * ground.sidewalk_factor), SIDEWALK,
                 scene.region("sidewalk"))
    road = scene.region("road")
    lane = (np.abs(xx - centre) < 0.6 + 0.8 * d) & ((yy - horizon) % 8 < 4)  # dashed centre line
    road[lane] = np.clip(road[lane] + 0.45, 0, 1)
    cv.paint(on_ground & (off < half), ROAD, road)


def _paint_fence(scene: _Scene, ground: _Ground):
    """A fence along the outer edge of one sidewalk, over a random stretch of depths."""
    rng, cv = scene.rng, scene.canvas
    H, W = scene.shape
    side = rng.choice([-1, 1])
    d0, d1 = sorted(rng.uniform(0.05, 0.9, 2))
    colour = scene.region("fence")
    m = np.zeros((H, W), bool)
    for depth in np.linspace(d0, d1, 40):
        xk, yb = int(ground.kerb_x(depth, side)), ground.row(depth)
        height_px = int(3 + 0.45 * H * depth)
        m[max(0, yb - height_px):yb, max(0, xk - 2 - int(4 * depth)):max(0, xk + 2)] = True
    cv.paint(m & (cv.xx < W), FENCE, colour)


def _place_objects(scene: _Scene) -> list[tuple[str, float, int]]:
    """Standing objects as (kind, depth, side), sorted far to near."""
    rng, sc, present = scene.rng, scene.domain.scene, scene.present
    objects = []
    if present["vegetation"]:
        for _ in range(rng.integers(sc.trees[0], sc.trees[1] + 1)):
            objects.append(("tree", rng.uniform(0.0, 0.6), rng.choice([-1, 1])))
    if present["pole"]:
        for _ in range(rng.integers(sc.poles[0], sc.poles[1] + 1)):
            objects.append(("pole", rng.uniform(0.1, 0.9), rng.choice([-1, 1])))
    if present["person"]:
        for _ in range(rng.integers(sc.persons[0], sc.persons[1] + 1)):
            objects.append(("person", rng.uniform(0.15, 0.95), rng.choice([-1, 1])))
    if present["car"]:
        for _ in range(rng.integers(sc.cars[0], sc.cars[1] + 1)):
            objects.append(("car", rng.uniform(0.15, 0.95), 0))
    objects.sort(key=lambda o: o[1])
    return objects


def _paint_tree(scene: _Scene, ground: _Ground, depth: float, side: int, leaves: np.ndarray):
    """A round crown on a thin trunk, just outside the sidewalk."""
    rng, cv, H = scene.rng, scene.canvas, scene.shape[0]
    yy, xx, yb = cv.yy, cv.xx, ground.row(depth)
    xk = ground.kerb_x(depth, side) + side * rng.uniform(0, 6)
    r = 3 + 0.22 * H * (0.3 + depth) * rng.uniform(0.8, 1.3)
    cy = yb - 1.6 * r
    m = ((yy - cy) / r) ** 2 + ((xx - xk) / (1.3 * r)) ** 2 < 1
    m |= (np.abs(xx - xk) < 1 + depth * 2) & (yy <= yb) & (yy >= cy)
    cv.paint(m, VEGETATION, leaves)


def _paint_pole(scene: _Scene, ground: _Ground, depth: float, side: int, obj_tex: np.ndarray):
    """A pole on the kerb, sometimes carrying a sign at its top."""
    rng, cv, rd, H = scene.rng, scene.canvas, scene.domain.rendering, scene.shape[0]
    yy, xx, yb = cv.yy, cv.xx, ground.row(depth)
    xk = ground.kerb_x(depth, side)
    half_w = (1.2 + 1.5 * depth) * scene.domain.scene.pole_width
    top = yb - int(H * (0.35 + 0.45 * depth))
    m = (np.abs(xx - xk) < half_w) & (yy >= top) & (yy <= yb)
    sign = rng.random() < 0.5
    if sign:
        s = (2 + 4 * depth) * scene.domain.scene.pole_width
        m |= (np.abs(xx - xk - side * s) < s) & (yy >= top) & (yy < top + 1.5 * s)
    cv.paint(m, POLE, _perturb(rng, rd.palette["pole"], rd.colour_jitter)
             * (1 + rd.texture_contrast * obj_tex))


def _paint_person(scene: _Scene, ground: _Ground, depth: float, side: int, obj_tex: np.ndarray):
    """A pedestrian (head, shirt, trousers) on or near the sidewalk."""
    rng, cv, rd = scene.rng, scene.canvas, scene.domain.rendering
    (H, W), yy, xx, yb = scene.shape, cv.yy, cv.xx, ground.row(depth)
    xk = ground.kerb_x(depth, side) - side * rng.uniform(0, 0.3) * W * depth
    ph = (8 + 0.4 * H * depth) * scene.domain.scene.person_height
    pw = 0.32 * ph
    shirt = _perturb(rng, rng.uniform(0.1, 0.9, 3), 0.0)
    trousers = _perturb(rng, rng.uniform(0.05, 0.5, 3), 0.0)
    colour = np.broadcast_to(trousers, (H, W, 3)).copy()
    torso = (yy >= yb - 0.8 * ph) & (yy < yb - 0.45 * ph) & (np.abs(xx - xk) < pw / 2)
    colour[torso] = shirt
    legs = (yy >= yb - 0.45 * ph) & (yy <= yb) & (np.abs(xx - xk) < pw / 2.5)
    hr = 0.11 * ph
    head = ((yy - (yb - 0.8 * ph - hr)) ** 2 + (xx - xk) ** 2) < (hr + 0.5) ** 2
    colour[head] = (0.85, 0.65, 0.5)
    cv.paint(torso | legs | head, PERSON, colour * (1 + rd.texture_contrast * obj_tex))


def _paint_car(scene: _Scene, ground: _Ground, depth: float, side: int, obj_tex: np.ndarray):
    """A car (body, windowed cabin, wheels) on the road, seen from behind; `side` is unused."""
    rng, cv, rd = scene.rng, scene.canvas, scene.domain.rendering
    (H, W), yy, xx, yb = scene.shape, cv.yy, cv.xx, ground.row(depth)
    xc = ground.centre(depth) + rng.uniform(-0.6, 0.6) * ground.road_half * depth
    cw = W * (0.06 + 0.28 * depth) + 4
    ch = 0.45 * cw
    body = (np.abs(xx - xc) < cw / 2) & (yy <= yb) & (yy > yb - 0.6 * ch)
    cabin = (np.abs(xx - xc) < cw * 0.32) & (yy <= yb - 0.6 * ch) & (yy > yb - ch)
    paint = _perturb(rng, rng.uniform(0.05, 0.95, 3), 0.0)
    colour = np.broadcast_to(paint, (H, W, 3)).copy()
    colour[cabin] = paint * 0.35 + 0.15  # windows
    wheels = body & (yy > yb - 0.18 * ch) & (np.abs(np.abs(xx - xc) - cw * 0.3) < cw * 0.1)
    colour[wheels] = 0.06
    cv.paint(body | cabin, CAR, colour * (1 + 0.5 * rd.texture_contrast * obj_tex))


_OBJECT_PAINTERS = {"tree": _paint_tree, "pole": _paint_pole, "person": _paint_person,
                    "car": _paint_car}


def _paint_objects(scene: _Scene, ground: _Ground, objects: list[tuple[str, float, int]]):
    """Paint the standing objects in order, so that nearer ones occlude farther ones."""
    leaves = scene.region("vegetation")  # drawn even without trees: it keeps the stream fixed
    obj_tex = scene.textures.crop(scene.rng, "object", *scene.shape)[..., None]
    for kind, depth, side in objects:
        texture = leaves if kind == "tree" else obj_tex
        _OBJECT_PAINTERS[kind](scene, ground, depth, side, texture)


def _draw_scene(rng: np.random.Generator, domain: Domain, textures: _Textures,
                height: int, width: int) -> _Canvas:
    """Paint one scene's label map and albedo, far to near, from the generator `rng`.

    The painters consume `rng` in a fixed order; changing it changes every image (bump
    GENERATOR_VERSION then).
    """
    present = {c: rng.random() < p for c, p in domain.scene.presence.items()}
    scene = _Scene(rng, domain, textures, _Canvas(height, width), present)
    _paint_sky(scene)
    horizon = int(height * rng.uniform(*domain.scene.horizon))
    if present["building"]:
        _paint_buildings(scene, horizon)
    ground = _lay_out_ground(scene, horizon)
    _paint_ground(scene, ground)
    if present["fence"]:
        _paint_fence(scene, ground)
    _paint_objects(scene, ground, _place_objects(scene))
    return scene.canvas


# ---------------------------------------------------------------------------------------------
# Optics and sensor: applied to the whole image after the scene is painted.

def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.2:
        return img
    radius = max(1, int(round(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="edge")
        n = img.shape[axis]
        out = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def _render(rng: np.random.Generator, cv: _Canvas, rendering: Rendering) -> np.ndarray:
    rd = rendering
    img = cv.albedo.copy()
    H, W = cv.label.shape
    yy, xx = cv.yy, cv.xx
    if rd.light_gradient > 0:
        direction = rng.uniform(-1, 1)
        img *= (1 + rd.light_gradient * direction * (xx / W - 0.5))[..., None]
    if rng.random() < rd.shadow_prob:
        # A building's shadow falls diagonally across the ground.
        x0, slope = rng.uniform(0, W), rng.uniform(-1.5, 1.5)
        shadow = (xx < x0 + slope * (yy - H / 2)) & (cv.label != SKY)
        img[shadow] *= rng.uniform(0.45, 0.7)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + rng.uniform(*rd.saturation) * (img - gray)
    img = np.clip(img * rng.uniform(*rd.exposure), 0, 1) ** rng.uniform(*rd.gamma)
    img = _gaussian_blur(img, rng.uniform(*rd.blur_sigma))
    if rd.vignette > 0:
        r2 = ((yy / H - 0.5) ** 2 + (xx / W - 0.5) ** 2) / 0.5
        img *= (1 - rd.vignette * r2)[..., None]
    noise = rng.uniform(*rd.noise_std)
    if noise > 0:
        img = img + noise * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


SPLITS = {  # split name -> (domain, stream id that keeps splits disjoint)
    "source_train": ("source", 0),
    "source_val": ("source", 1),
    "target_train": ("target", 2),
    "target_val": ("target", 3),
    "target_test": ("target", 4),
}


def generate_image(domain: str | Domain, seed: int, split_id: int, index: int,
                   height: int = 64, width: int = 128, textures: _Textures | None = None):
    """One image and its label map: (H, W, 3) uint8 and (H, W) uint8 class indices."""
    dom = DOMAINS[domain] if isinstance(domain, str) else domain
    textures = textures or _Textures.make(height, width)
    rng = np.random.default_rng([seed, split_id, index])
    cv = _draw_scene(rng, dom, textures, height, width)
    return _render(rng, cv, dom.rendering), cv.label


def generate_split(split: str, n: int, seed: int, height: int = 64, width: int = 128,
                   doms: dict[str, Domain] | None = None):
    """Images (N, H, W, 3) uint8 and labels (N, H, W) uint8 of a split of the benchmark;
    `doms` ({"source", "target"}, see `domains`) defaults to the calibrated benchmark."""
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if n < 0:
        raise ValueError(f"generate_split: need n >= 0 images, got n={n}")
    check_range("data.height", height), check_range("data.width", width)
    domain, split_id = SPLITS[split]
    domain = (doms or DOMAINS)[domain]
    textures = _Textures.make(height, width)
    images = np.empty((n, height, width, 3), np.uint8)
    labels = np.empty((n, height, width), np.uint8)
    for i in range(n):
        images[i], labels[i] = generate_image(domain, seed, split_id, i, height, width, textures)
    return images, labels
