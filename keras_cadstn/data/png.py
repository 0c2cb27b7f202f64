"""Reading depth PNGs with errors that name the file."""
from __future__ import annotations

import os

import numpy as np

from keras_cadstn.errors import DataError


def read_png(path: str, shape: tuple, dtype) -> np.ndarray:
    """Decode a PNG exactly as stored; check its shape and dtype."""
    import cv2

    if not os.path.isfile(path):
        raise DataError(f"{path}: depth image not found")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: not a readable PNG (corrupt or truncated file)")
    if image.shape != shape or image.dtype != dtype:
        raise DataError(f"{path}: image is {image.shape} {image.dtype}, expected {shape} "
                        f"{np.dtype(dtype).name}")
    return image


def write_png_atomic(path: str, image: np.ndarray) -> None:
    """Encode to memory, write to a temporary name, then rename: no half-written PNG survives."""
    import cv2

    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)
