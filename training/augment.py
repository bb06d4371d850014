"""`--augment`: the seed notes' augmentations as Keras preprocessing layers.

They run in the training input pipeline only (validation, export and inference never see
them), on float copies of the uint8 batches, which go back to uint8 for the model.
"""

from __future__ import annotations

from typing import Any

# (layer, arguments): flips, random crop as translation + zoom, rotation, brightness,
# contrast and hue, the list of the notes' tf.image / ImageDataGenerator examples.
AUGMENTATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("RandomFlip", {"mode": "horizontal"}),
    ("RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1}),
    ("RandomRotation", {"factor": 0.05}),
    ("RandomZoom", {"height_factor": 0.15}),
    ("RandomBrightness", {"factor": 0.2, "value_range": (0, 255)}),
    ("RandomContrast", {"factor": 0.2}),
    ("RandomHue", {"factor": 0.05, "value_range": (0, 255)}),  # 3 channels only
)


def augmenter(channels: int, seed: int) -> Any:
    """A keras.Sequential of the augmentations for `channels`-channel images."""
    import keras

    steps = [
        getattr(keras.layers, name)(**args, seed=seed + i, name=f"augment_{name}")
        for i, (name, args) in enumerate(AUGMENTATIONS)
        if channels == 3 or name != "RandomHue"
    ]
    return keras.Sequential(steps, name="augment")


def augment_batches(ds: Any, channels: int, seed: int) -> Any:
    """Map a batched (uint8 images, targets) tf.data.Dataset through the augmentations."""
    import tensorflow as tf

    layer = augmenter(channels, seed)

    def apply(images: Any, targets: Any) -> tuple[Any, Any]:
        x = layer(tf.cast(images, tf.float32), training=True)
        return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), targets

    return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
