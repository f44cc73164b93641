"""The augmentation recipes (SimCLR, SupCon, InfoMin) and a recipe's `augment`
entry to its layer."""

import keras

from supcon_tf.augment.layers import RandomApply, RandomResizedCrop, RandomRotate90
from supcon_tf.augment.randaugment import RandAugment


def _check_shape(image_shape):
    try:
        height, width, channels = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError("`image_shape` must be (height, width, channels). "
                         f"Received: image_shape={image_shape!r}") from None
    if channels not in (1, 3) or height < 1 or width < 1:
        raise ValueError("`image_shape` must be (height, width, 1 or 3). "
                         f"Received: image_shape={image_shape!r}")
    return height, width, channels


def _seed(seed, offset):
    return None if seed is None else seed + offset


def _color(channels, brightness, contrast, saturation, hue, seed):
    """Colour jitter; on one channel only brightness and contrast exist."""
    if channels == 3:
        return keras.layers.RandomColorJitter(
            value_range=(0, 255), brightness_factor=brightness,
            contrast_factor=contrast, saturation_factor=saturation,
            hue_factor=hue, seed=seed)
    return keras.Sequential([
        keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=_seed(seed, 1)),
    ])


# Keras's brightness factor is at most 1 and the simclr recipe uses 0.8 * s.
MAX_COLOR_STRENGTH = 1.25


def _crop_flip_color(shape, crop_scale, jitter, seed):
    """The recipes' first layers: resized crop, horizontal flip and, unless
    `jitter` is None, colour jitter `(b, c, s, h)` with p=0.8."""
    height, width, channels = shape
    layers = [RandomResizedCrop(height, width, scale=crop_scale, seed=seed),
              keras.layers.RandomFlip("horizontal", seed=_seed(seed, 1))]
    if jitter is not None:
        layers.append(RandomApply(_color(channels, *jitter, _seed(seed, 2)),
                                  rate=0.8, seed=_seed(seed, 3)))
    return layers


def _blur(shape, seed):
    """SimCLR's Gaussian blur with p=0.5 (kernel a tenth of the side), for
    images of 64 pixels or more; none below."""
    side = min(shape[:2])
    if side < 64:
        return []
    return [RandomApply(keras.layers.RandomGaussianBlur(
        factor=1.0, kernel_size=max(3, (side // 10) | 1), sigma=(0.1, 2.0),
        seed=_seed(seed, 5)), rate=0.5, seed=_seed(seed, 6))]


def simclr(image_shape, strength=1.0, crop_scale=(0.08, 1.0), seed=None):
    """SimCLR's augmentation: resized crop, flip, colour distortion (p=0.8),
    grayscale (p=0.2), and Gaussian blur (p=0.5) for images of 64 pixels or more.

    Colour jitter uses Keras's layers with factors `(0.8, 0.8, 0.8, 0.2) *
    strength`; on single-channel images only brightness and contrast apply and
    grayscale is skipped.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        strength: Colour distortion strength s in [0, 1.25] (at 1.25 the
            brightness shift spans the whole value range). Defaults to 1.0.
        crop_scale: Area range of the resized crop. Defaults to (0.08, 1.0).
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    height, width, channels = _check_shape(image_shape)
    if (isinstance(strength, bool) or not isinstance(strength, (int, float))
            or not 0 <= strength <= MAX_COLOR_STRENGTH):
        raise ValueError(f"`strength` must be a number in [0, {MAX_COLOR_STRENGTH}] (the "
                         f"brightness factor 0.8 * strength is at most 1 in Keras's colour "
                         f"layers). Received: strength={strength!r}")
    s = float(strength)
    jitter = (0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5)) if s > 0 else None
    layers = _crop_flip_color((height, width, channels), crop_scale, jitter, seed)
    if channels == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    layers += _blur((height, width), seed)
    return keras.Sequential(layers, name="simclr_augment")


def supcon(image_shape, crop_scale=(0.2, 1.0), seed=None):
    """The SupCon paper's CIFAR recipe: resized crop with scale (0.2, 1),
    horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale
    with p=0.2. On single-channel images colour jitter is brightness and
    contrast only, and grayscale is skipped.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        crop_scale: Area range of the resized crop. Defaults to (0.2, 1.0).
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    shape = _check_shape(image_shape)
    layers = _crop_flip_color(shape, crop_scale, (0.4, 0.4, 0.4, 0.1), seed)
    if shape[2] == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    return keras.Sequential(layers, name="supcon_augment")


def infomin(image_shape, crop_scale=(0.2, 1.0), magnitude=10.0, fill_value=128.0, seed=None):
    """InfoMin's augmentation (Tian et al., NeurIPS 2020; PyContrast's
    "RandAug" / aug "D"): resized crop, flip, colour jitter (0.8, 0.8, 0.8,
    0.2) with p=0.8, Gaussian blur (p=0.5) for images of 64 pixels or more,
    RandAugment `rand-n2-m{magnitude}-mstd0.5` drawn per image
    (`RandAugment`), grayscale with p=0.2.

    On single-channel images colour jitter is brightness and contrast only and
    grayscale is skipped; blur is skipped below 64 pixels, as in `simclr`.

    Args:
        image_shape: `(height, width, channels)`, channels 1 or 3.
        crop_scale: Area range of the resized crop. Defaults to (0.2, 1.0)
            (the paper's with a queue; 0.08 with a memory bank).
        magnitude: RandAugment's mean magnitude in [0, 10]. Defaults to 10.
        fill_value: RandAugment's fill for pixels moved in from outside.
            Defaults to 128.
        seed: Integer seed. Defaults to None.

    Returns:
        A `keras.Sequential` mapping images in [0, 255] to augmented images.
    """
    shape = _check_shape(image_shape)
    layers = _crop_flip_color(shape, crop_scale, (0.8, 0.8, 0.8, 0.2), seed) + _blur(shape, seed)
    layers.append(RandAugment(2, magnitude=magnitude, magnitude_std=0.5,
                              fill_value=fill_value, seed=_seed(seed, 7)))
    if shape[2] == 3:
        layers.append(keras.layers.RandomGrayscale(0.2, seed=_seed(seed, 4)))
    return keras.Sequential(layers, name="infomin_augment")


RECIPES = {"supcon": supcon, "simclr": simclr, "infomin": infomin}


def from_spec(spec, image_shape, seed=None, **overrides):
    """The augmentation of a recipe's `augment` entry (`supcon_tf.methods`):
    `{"recipe": "supcon" | "simclr" | "infomin", "crop_min_scale": float or
    None, "color_strength": float or None, "magnitude": float or None,
    "rotate90": bool}` (None keeps the recipe's default; `color_strength` is
    the simclr recipe's, `magnitude` the infomin recipe's RandAugment
    magnitude; `rotate90` adds `RandomRotate90` last); `overrides` go to the
    recipe function as they are."""
    name = spec.get("recipe", "supcon")
    if name not in RECIPES:
        raise ValueError(f"The augmentation recipe must be one of {sorted(RECIPES)}. "
                         f"Received: recipe={name!r}")
    args = {}
    if spec.get("crop_min_scale") is not None:
        args["crop_scale"] = (spec["crop_min_scale"], 1.0)
    for key, arg, owner in (("color_strength", "strength", "simclr"),
                            ("magnitude", "magnitude", "infomin")):
        if spec.get(key) is not None:
            if name != owner:
                raise ValueError(f"`{key}` needs the {owner!r} recipe. "
                                 f"Received: recipe={name!r}")
            args[arg] = spec[key]
    layer = RECIPES[name](image_shape, seed=seed, **{**args, **overrides})
    if spec.get("rotate90"):
        layer.add(RandomRotate90(seed=_seed(seed, 8), name="rotate90"))
    return layer
