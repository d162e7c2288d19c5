"""Reading one image a person hands us: checked, bounded, and turned into 8-bit RGB.

``load_image`` accepts a path, bytes or a binary file object and either returns an RGB
``PIL.Image`` or raises :class:`ImageError` (a ``ValueError``) whose message says what was
wrong and what to do. It never decodes more than it has to:

- the file size is checked before anything is read (``max_bytes``);
- the declared width x height is checked from the header, before any pixel is decoded
  (``max_pixels``), so a decompression bomb or a 20,000 x 20,000 px image costs nothing;
- Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``) is turned into the same message;
- a truncated or corrupt file is refused instead of being padded with grey.

Modes are mapped to what a person would see: 16-bit and 32-bit greyscale are scaled (not
clipped) to 8 bits, float images by their range, CMYK and YCbCr are converted, palette
images keep their colours, and transparency is laid over white. Animated files give their
first frame; EXIF orientation is applied.
"""
from __future__ import annotations

import io
import logging
import os
import re
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)
Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]
FORMATS_HINT = "upload a PNG, JPEG, WebP or GIF picture"
DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message says why and what to do."""


def _size_of(source: Source) -> int | None:
    if isinstance(source, (bytes, bytearray)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.path.getsize(source)
        except FileNotFoundError:
            raise ImageError(f"no file at {os.fspath(source)!r}: upload the image again") from None
        except OSError as e:
            log.info("could not read %s: %r", os.fspath(source), e)
            raise ImageError("could not read the file: upload it again") from None
    try:
        pos = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(pos)
        return end - pos
    except (AttributeError, OSError):
        return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB as a person would see the picture (see the module docstring)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "I;32", "F"):
        a = np.asarray(im, dtype=np.float64)
        finite = a[np.isfinite(a)]
        if mode == "F":
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if 0.0 <= lo and hi <= 1.0:
                lo, hi = 0.0, 1.0
        else:
            lo, hi = 0.0, (255.0 if finite.size and finite.max() <= 255 else 65535.0)
            if finite.size and finite.max() > 65535:
                lo, hi = float(finite.min()), float(finite.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        a = np.nan_to_num((a - lo) * scale, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im.copy()
    return im.convert("RGB")


def load_image(source: Source, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A checked 8-bit RGB image from a path, bytes or a binary file, or an :class:`ImageError`.

    ``max_bytes`` bounds the file size and ``max_pixels`` the declared width x height (both
    checked before decoding; None: no bound of ours, Pillow's bomb guard still applies).
    """
    size = _size_of(source)
    if size is not None and size == 0:
        raise ImageError(f"the file is empty: {FORMATS_HINT}")
    if max_bytes is not None and size is not None and size > max_bytes:
        raise ImageError(f"the file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB: "
                         "upload a smaller image")
    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise ImageError(f"the image declares {w} x {h} pixels: {FORMATS_HINT}")
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(f"the image is {w:,} x {h:,} pixels; the limit is {max_pixels:,} pixels: "
                                     "resize it and upload it again")
                im.seek(0)
                im.load()
                try:
                    im = ImageOps.exif_transpose(im) or im
                except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
                    pass
                return _to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "more pixels than this server decodes"
        limit = f"; the limit is {max_pixels:,} pixels" if max_pixels is not None else ""
        raise ImageError(f"the image declares {size}{limit} (a decompression bomb?): "
                         "resize it and upload it again") from None
    except FileNotFoundError:
        raise ImageError(f"no file at {os.fspath(source)!r}: upload the image again") from None
    except MemoryError:
        raise ImageError("the image is too large to decode here: resize it and upload it again") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for bad files
        what = "truncated" if "truncated" in str(e).lower() else "not a readable image"
        log.info("image refused as %s: %r", what, e)       # the decoder's own words stay in the log
        raise ImageError(f"the file is {what}: {FORMATS_HINT}") from None
