"""Reading depth PNGs with errors that name the file."""
from __future__ import annotations

import os

import cv2
import numpy as np

from keras_cadstn import fileio
from keras_cadstn.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: str, shape: tuple, dtype) -> np.ndarray:
    """Decode a PNG exactly as stored; check that it is a PNG (signature, bit depth), its shape
    and dtype: a JPEG renamed .png, or an 8-bit visualisation, is not depth."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: depth image not found")
    with open(path, "rb") as f:
        head = f.read(33)  # signature (8) + IHDR chunk (length, type, 13 bytes of data)
    if head[:8] != PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file (no PNG signature; a JPEG or other image renamed .png?)")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise DataError(f"{path}: not a readable PNG (corrupt or truncated file: no IHDR header)")
    bit_depth = head[24]
    expected_bits = np.dtype(dtype).itemsize * 8
    if bit_depth != expected_bits:
        raise DataError(f"{path}: PNG of {bit_depth}-bit samples, expected {expected_bits}-bit "
                        f"({np.dtype(dtype).name} depth)")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: not a readable PNG (corrupt or truncated file)")
    if image.shape != shape or image.dtype != dtype:
        raise DataError(f"{path}: image is {image.shape} {image.dtype}, expected {shape} "
                        f"{np.dtype(dtype).name}")
    return image


def write_png_atomic(path: str, image: np.ndarray) -> None:
    """Encode to memory, write to a temporary name, then rename: no half-written PNG survives."""
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    fileio.write_bytes(path, buf.tobytes())
