"""Image decoding that refuses what it cannot decode completely.

``cv2.imread`` returns a half-grey picture for a JPEG cut short (a truncated download or
copy): libjpeg only prints "Premature end of JPEG file". Evaluating or caching such a picture
would change results silently, so :func:`read_image_bgr` reads the file's bytes, checks that
the encoded stream is complete (:func:`truncation_reason`), and only then decodes them.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


class ImageReadError(Exception):
    """An image could not be read or decoded completely."""


REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
REDUCED_GRAY_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def truncation_reason(data: bytes) -> str | None:
    """Why an encoded JPEG / PNG is incomplete, or None when it is complete (or another format).

    JPEG: an end-of-image marker must follow the first start-of-scan marker (inside the
    entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so 0xFFD9 there is
    the real end; thumbnails in the EXIF header come before the first scan). PNG: the IEND
    chunk must be present.
    """
    if data.startswith(_JPEG_SOI):
        sos = data.find(_JPEG_SOS)
        if sos < 0:
            return "truncated JPEG (no image data)"
        if data.find(_JPEG_EOI, sos + 2) < 0:
            return "truncated JPEG (no end-of-image marker)"
    elif data.startswith(_PNG_MAGIC) and data.rfind(b"IEND") < 0:
        return "truncated PNG (no IEND chunk)"
    return None


def read_image_bgr(path: str | os.PathLike, reduction: int = 1, gray: bool = False) -> np.ndarray:
    """Decode an image file completely: (H, W, 3) uint8 BGR, or (H, W) with ``gray``.

    ``reduction`` 2, 4 or 8 decodes at 1/reduction size (``cv2.IMREAD_REDUCED_*``: JPEGs are
    scaled in the DCT domain). Raises ImageReadError naming the file when it is missing,
    empty, truncated or not decodable.
    """
    flags = (REDUCED_GRAY_FLAGS if gray else REDUCED_FLAGS)[reduction]
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    reason = truncation_reason(data.tobytes())
    if reason is not None:
        raise ImageReadError(f"{path}: {reason}")
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error as exc:  # pragma: no cover - depends on the codec
        raise ImageReadError(f"{path}: {exc}") from exc
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a decodable image")
    return img


def reduced_coords(points, reduction: int) -> np.ndarray:
    """(..., 2) source pixel coords -> coords in the 1/reduction decode (``read_image_bgr``):
    reduced pixel i covers source pixels [r i, r i + r), so its centre is r i + (r - 1) / 2."""
    return (np.asarray(points, np.float64) + 0.5) / reduction - 0.5
