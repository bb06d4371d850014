"""EXIF orientation (1-8) applied to a decoded HxW[xC] array, as a viewer shows it."""

from __future__ import annotations

import cv2
import numpy as np


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image turned upright: what Pillow's `ImageOps.exif_transpose` does."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.flip(image, -1)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(image), -1)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image
