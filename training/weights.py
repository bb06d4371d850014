"""Pretrained weights for the base of `vgg16` and `resnet50`: `imagenet`, or a local file."""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

from cnnbench.training.errors import TrainError, first_line

ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications"
# keras.applications' no-top weight files: the base without its 1000-class head.
IMAGENET_FILES = {
    "vgg16": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
DOWNLOAD_TIMEOUT_S = 30


def imagenet_url(arch: str) -> str:
    return f"{ORIGIN}/{IMAGENET_FILES[arch]}"


def fetch_imagenet(arch: str) -> str:
    """The Keras cache's copy of the ImageNet weights, downloading it when missing."""
    import keras

    url = imagenet_url(arch)
    fname = os.path.basename(url)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib has no other timeout knob here
    try:
        return keras.utils.get_file(fname, url, cache_subdir="models")
    except Exception as e:  # urllib and Keras raise several types for a failed download
        reason = first_line(e).split(" -- ")[-1]
        raise TrainError(
            f"cannot download the ImageNet weights for {arch} ({reason}); without internet, "
            f"fetch {url} on a machine that has it and pass --weights /path/to/{fname}"
        ) from e
    finally:
        socket.setdefaulttimeout(previous)


def load_base_weights(base: Any, arch: str, weights: str | None) -> None:
    """Load `weights` ("imagenet", a file path, or None) into the base model `base`."""
    if weights is None:
        return
    if base.inputs[0].shape[-1] != 3:
        raise TrainError(f"pretrained weights for {arch} need --channels 3")
    path = fetch_imagenet(arch) if weights == "imagenet" else weights
    if not os.path.isfile(path):
        raise TrainError(
            f"weights file not found: {path}; pass --weights imagenet, none, or the path of "
            f"{os.path.basename(IMAGENET_FILES[arch])}"
        )
    try:
        with warnings.catch_warnings():  # a mismatched file warns per layer, then raises
            warnings.simplefilter("ignore", UserWarning)
            base.load_weights(path)
    except Exception as e:  # h5py and Keras raise many types for a mismatched file
        raise TrainError(
            f"cannot load {path} into the {arch} base: {first_line(e)}; it needs "
            f"keras.applications' no-top weights ({os.path.basename(IMAGENET_FILES[arch])}) "
            "or a .weights.h5 saved from this base"
        ) from e
