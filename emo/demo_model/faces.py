"""Talking-face frames drawn from one portrait: identities, a mouth that opens, blinks and small head motion.

An identity is the built-in demo portrait, procedurally altered (colours of skin, hair, clothes and background,
face shape, position and scale in the frame, mirroring, glasses, lip colour and size), with its own mouth
painted out. A frame of that identity draws the mouth at a given openness (lips around a dark cavity whose height,
and so whose area, is proportional to the openness; closed = the lips alone), closes the eyelids by a blink amount,
and moves the head (a feathered head region shifted, rotated and scaled about its centre; the background stays).

Everything is a function of a seed: the same seed draws the same identity on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

Point = tuple[float, float]

# Landmarks of the demo portrait (emo/assets/portrait.jpg, 512x512), read off the image.
PORTRAIT_EYES: tuple[Point, Point] = ((203.0, 101.0), (246.0, 103.0))
PORTRAIT_MOUTH: Point = (223.0, 146.0)
PORTRAIT_MOUTH_ERASE = (27, 12)  # half-axes of the painted-out mouth
PORTRAIT_HEAD: tuple[Point, Point] = ((224.0, 110.0), (80.0, 100.0))  # centre, half-axes of the moving region
PORTRAIT_FACE: tuple[Point, Point] = ((224.0, 122.0), (44.0, 58.0))  # centre, half-axes of the skin region
EYE_AXES = (9.0, 5.0)
CAVITY_HALF_HEIGHT = 7.0  # pixels of the 512² portrait at openness 1, before the identity's scale
LIP_THICKNESS = 3.5


@dataclass(frozen=True)
class Pose:
    """Head pose relative to the identity's rest pose: shift in pixels, rotation in degrees, scale factor."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Identity:
    seed: int
    image: np.ndarray  # (S, S, 3) uint8, mouth painted out
    original: np.ndarray  # (S, S, 3) uint8, the same alterations with the portrait's own mouth kept
    eyes: tuple[Point, Point]
    mouth: Point
    scale: float  # the portrait's scale in this identity (mouth and eyes are drawn at it)
    angle: float  # the portrait's rotation in degrees
    mouth_width: float  # half-width of the mouth in pixels
    lip_colour: tuple[int, int, int]
    skin_colour: tuple[int, int, int]
    head: tuple[Point, Point]  # centre, half-axes (already scaled)

    def frame(self, openness: float = 0.0, blink: float = 0.0, pose: Pose = Pose(), own_mouth: bool = False
              ) -> np.ndarray:
        """The full (S, S, 3) uint8 image: the mouth open by `openness` in [0, 1] (or the portrait's own mouth),
        the eyes closed by `blink` in [0, 1], the head at `pose`."""
        import cv2

        canvas = (self.original if own_mouth else self.image).copy()
        for eye in self.eyes:
            draw_eyelid(canvas, eye, blink, self.scale, self.angle, self.skin_colour)
        if not own_mouth:
            draw_mouth(canvas, self.mouth, openness, self.mouth_width, self.scale, self.angle, self.lip_colour)
        if pose == Pose():
            return canvas
        (cx, cy), _ = self.head
        m = cv2.getRotationMatrix2D((cx, cy), pose.angle, pose.scale)
        m[:, 2] += (pose.dx, pose.dy)
        size = (canvas.shape[1], canvas.shape[0])
        moved = cv2.warpAffine(canvas, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(self.head_mask(), m, size, flags=cv2.INTER_LINEAR)[..., None]
        static = self.image if not own_mouth else self.original
        return (moved * mask + static * (1 - mask)).round().astype(np.uint8)

    def head_mask(self) -> np.ndarray:
        return _head_mask(self.seed, self.image.shape[0], self.head)


@lru_cache(maxsize=64)
def _head_mask(seed: int, size: int, head: tuple[Point, Point]) -> np.ndarray:
    """A feathered ellipse (S, S) float32 in [0, 1] covering the head (hair, face, neck)."""
    import cv2

    (cx, cy), (ax, ay) = head
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (round(cx), round(cy)), (round(ax), round(ay)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 6)


def draw_mouth(canvas: np.ndarray, centre: Point, openness: float, half_width: float, scale: float, angle: float,
               lip_colour: tuple[int, int, int]) -> None:
    """Lips around a dark cavity of half-height openness · CAVITY_HALF_HEIGHT · scale (area ∝ openness)."""
    import cv2

    o = float(np.clip(openness, 0.0, 1.0))
    shift = 4  # draw with sub-pixel precision (coordinates in 1/16 pixel)
    c = (round(centre[0] * 16), round(centre[1] * 16))
    cavity = o * CAVITY_HALF_HEIGHT * scale
    lips = (round(half_width * 16), round((cavity + LIP_THICKNESS * scale) * 16))
    cv2.ellipse(canvas, c, lips, -angle, 0, 360, lip_colour, -1, cv2.LINE_AA, shift)
    dark = tuple(int(v * 0.35) for v in lip_colour)  # the line where the lips meet
    cv2.line(canvas, (round((centre[0] - half_width * 0.9) * 16), c[1]), (round((centre[0] + half_width * 0.9) * 16),
             c[1]), dark, 1, cv2.LINE_AA, shift)
    if cavity > 0.05:
        axes = (round(half_width * 0.85 * 16), round(cavity * 16))
        cv2.ellipse(canvas, c, axes, -angle, 0, 360, (28, 8, 10), -1, cv2.LINE_AA, shift)


def draw_eyelid(canvas: np.ndarray, centre: Point, blink: float, scale: float, angle: float,
                skin: tuple[int, int, int]) -> None:
    """Cover the eye with skin from the top down to `blink` of its height; a closed eye keeps a lash line."""
    import cv2

    b = float(np.clip(blink, 0.0, 1.0))
    if b < 0.05:
        return
    ax, ay = EYE_AXES[0] * scale, EYE_AXES[1] * scale
    lid = np.zeros(canvas.shape[:2], np.uint8)
    c = (round(centre[0] * 16), round(centre[1] * 16))
    cv2.ellipse(lid, c, (round(ax * 16), round(ay * 16)), -angle, 0, 360, 255, -1, cv2.LINE_AA, 4)
    ys = np.arange(canvas.shape[0], dtype=np.float32)[:, None]
    covered = (ys < centre[1] - ay + 2 * ay * b).astype(np.float32)
    alpha = (lid.astype(np.float32) / 255 * covered)[..., None]
    canvas[:] = (canvas * (1 - alpha) + np.array(skin, np.float32) * alpha).round().astype(np.uint8)
    if b > 0.7:
        y = centre[1] - ay + 2 * ay * b
        cv2.line(canvas, (round((centre[0] - ax) * 16), round(y * 16)), (round((centre[0] + ax) * 16), round(y * 16)),
                 (60, 40, 35), 1, cv2.LINE_AA, 4)


@lru_cache(maxsize=1)
def portrait() -> np.ndarray:
    """The demo portrait (512, 512, 3) uint8."""
    from PIL import Image

    with resources.files("emo").joinpath("assets/portrait.jpg").open("rb") as f:
        return np.array(Image.open(f).convert("RGB"))


@lru_cache(maxsize=1)
def portrait_without_mouth() -> np.ndarray:
    import cv2

    image = portrait().copy()
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(mask, tuple(round(v) for v in PORTRAIT_MOUTH), PORTRAIT_MOUTH_ERASE, 0, 0, 360, 255, -1)
    return cv2.inpaint(image, mask, 9, cv2.INPAINT_TELEA)


def _ellipse_mask(size: int, centre: Point, axes: Point, blur: float) -> np.ndarray:
    import cv2

    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), (round(axes[0]), round(axes[1])), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), blur)[..., None]


def _recolour(image: np.ndarray, hue: float, saturation: float, brightness: float) -> np.ndarray:
    """Rotate the chroma of float RGB (…, 3) in [0, 255] by `hue` radians in YIQ space, scale it and the luma."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    yiq = image @ to_yiq.T
    c, s = np.cos(hue), np.sin(hue)
    i, q = yiq[..., 1].copy(), yiq[..., 2].copy()
    yiq[..., 1], yiq[..., 2] = (c * i - s * q) * saturation, (s * i + c * q) * saturation
    yiq[..., 0] *= brightness
    return yiq @ np.linalg.inv(to_yiq).T


def _stretch_face(image: np.ndarray, centre: Point, axes: Point, kx: float, ky: float) -> np.ndarray:
    """Widen (k > 1) or narrow the head region about its centre, fading to no change outside it."""
    import cv2

    size = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    w = _ellipse_mask(size, centre, (axes[0] * 1.3, axes[1] * 1.2), 18)[..., 0]
    map_x = xs + w * (xs - centre[0]) * (1 / kx - 1)
    map_y = ys + w * (ys - centre[1]) * (1 / ky - 1)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_identity(seed: int) -> Identity:
    """Identity `seed`; seed 0 is the demo portrait itself (its colours, shape and place kept)."""
    import cv2

    rng = np.random.default_rng([seed, 0x1D])
    size = portrait().shape[0]
    plain = seed == 0
    layers = [portrait_without_mouth().astype(np.float32), portrait().astype(np.float32)]
    (hx, hy), (hax, hay) = PORTRAIT_HEAD
    (fx, fy), (fax, fay) = PORTRAIT_FACE
    if not plain:
        head = _ellipse_mask(size, (hx, hy), (hax * 0.9, hay * 0.9), 8)
        face = _ellipse_mask(size, (fx, fy), (fax, fay), 6)
        hair = np.clip(head - face, 0, 1)
        ys = np.arange(size, dtype=np.float32)[:, None, None]
        body = np.clip((ys - 175) / 20, 0, 1) * (1 - head)
        rest = np.clip(1 - head - body, 0, 1)
        regions = [  # (mask, hue, saturation, brightness)
            (face, rng.uniform(-0.25, 0.25), rng.uniform(0.6, 1.3), rng.uniform(0.65, 1.15)),
            (hair, rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 1.6), rng.uniform(0.35, 1.35)),
            (body, rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 1.4), rng.uniform(0.5, 1.3)),
            (rest, rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 1.6), rng.uniform(0.55, 1.25)),
        ]
        weight = sum(m for m, *_ in regions)
        layers = [sum(m * _recolour(img, *p) for m, *p in regions) / np.maximum(weight, 1e-6) for img in layers]
        kx, ky = rng.uniform(0.85, 1.18), rng.uniform(0.92, 1.08)
        layers = [_stretch_face(np.clip(img, 0, 255), (fx, fy), (fax, fay), kx, ky) for img in layers]
    else:
        kx = ky = 1.0
    # Place the portrait in the frame: scale, rotation, shift, mirror.
    scale = 1.0 if plain else rng.uniform(0.8, 1.2)
    angle = 0.0 if plain else rng.uniform(-6, 6)
    flip = False if plain else bool(rng.random() < 0.5)
    shift = (0.0, 0.0) if plain else (rng.uniform(-40, 40), rng.uniform(-25, 35))
    m = cv2.getRotationMatrix2D((fx, fy), angle, scale)
    m[:, 2] += shift
    if flip:
        m = np.array([[-1, 0, size - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    layers = [cv2.warpAffine(np.clip(img, 0, 255).astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT) for img in layers]

    def place(p: Point, stretched: bool = True) -> Point:
        x, y = p
        if stretched:  # the face stretch moved points inside the head region
            x, y = fx + (x - fx) * kx, fy + (y - fy) * ky
        v = m @ np.array([x, y, 1.0])
        return float(v[0]), float(v[1])

    eyes = tuple(sorted((place(e) for e in PORTRAIT_EYES), key=lambda p: p[0]))
    mouth = place(PORTRAIT_MOUTH)
    head_centre = place((hx, hy), stretched=False)
    head_axes = (hax * scale * kx, hay * scale)
    image, original = (np.clip(img, 0, 255).round().astype(np.uint8) for img in layers)
    skin = _skin_colour(image, mouth, eyes)
    if not plain and rng.random() < 0.3:
        _draw_glasses(image, original, eyes, scale, rng)
    lip_base = np.array([168, 78, 82], np.float32)
    lip = tuple(int(v) for v in np.clip(lip_base * rng.uniform(0.75, 1.15, 3), 0, 255)) if not plain else \
        (168, 78, 82)
    half_width = (17.0 if plain else rng.uniform(14, 20)) * scale * kx
    return Identity(seed, image, original, eyes, mouth, scale, -angle if flip else angle, half_width, lip, skin,
                    (head_centre, head_axes))


def _skin_colour(image: np.ndarray, mouth: Point, eyes: tuple[Point, Point]) -> tuple[int, int, int]:
    """The median colour of the cheeks (between the eyes' and the mouth's height, beside the nose)."""
    patches = []
    for ex, ey in eyes:
        x, y = round(ex), round((ey + mouth[1]) / 2)
        patches.append(image[y - 3:y + 4, x - 3:x + 4].reshape(-1, 3))
    return tuple(int(v) for v in np.median(np.concatenate(patches), axis=0))


def _draw_glasses(image: np.ndarray, original: np.ndarray, eyes: tuple[Point, Point], scale: float,
                  rng: np.random.Generator) -> None:
    import cv2

    colour = tuple(int(v) for v in rng.integers(10, 120, 3))
    r = round(rng.uniform(11, 14) * scale)
    for canvas in (image, original):
        for ex, ey in eyes:
            cv2.circle(canvas, (round(ex), round(ey)), r, colour, 2, cv2.LINE_AA)
        (x0, y0), (x1, y1) = eyes
        cv2.line(canvas, (round(x0 + r), round(y0)), (round(x1 - r), round(y1)), colour, 2, cv2.LINE_AA)
