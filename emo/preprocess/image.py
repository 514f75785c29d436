"""Image decoding: any common format, EXIF orientation applied, alpha composited on white, always RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def load_image(path: str | Path) -> np.ndarray:
    """-> (H, W, 3) uint8 RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image {path} is corrupt or truncated ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    rgb = np.asarray(im.convert("RGB"))
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise InputError(f"image {path} is too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb
