"""Image decoding: any common format, EXIF orientation applied, alpha composited on white, always RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit greyscale PNG / TIFF open as one of these


def _greyscale_16bit_to_8bit(im):
    """Scale 0..65535 to 0..255 (Pillow's own conversion clips, turning almost every pixel white). A 32-bit "I"
    image whose values all fit in 8 bits is kept as it is."""
    from PIL import Image

    values = np.asarray(im).astype(np.float64)
    if im.mode != "I" or values.max() > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")


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
    except Image.DecompressionBombError:
        raise InputError(f"image {path} is too large to decode safely (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels: "
                         f"a decompression bomb, or scale it down first)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"image {path} is corrupt or truncated ({reason})") from None
    if im.mode in SIXTEEN_BIT:
        im = _greyscale_16bit_to_8bit(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    rgb = np.asarray(im.convert("RGB"))
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise InputError(f"image {path} is too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb
