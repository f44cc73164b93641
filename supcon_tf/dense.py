"""A dense downstream task for frozen encoders: segmentation masks derived
from a labelled image dataset, a probe on the encoder's feature map and
mean IoU.

The task (`segmentation_masks`): every pixel brighter than a fixed threshold
is labelled with its image's class (1 .. C), every other pixel is
background (0): C + 1 classes, derived deterministically from the images
and labels, with no annotation. On Fashion-MNIST (a dark background, one
object per image) the foreground is the garment's silhouette.

What it measures: whether each location of the feature map carries the
image's class and the object's extent, read by a linear map per location
(`dense_probe`: a 1 x 1 convolution, then bilinear upsampling to the image
size, trained with per-pixel cross-entropy on the frozen map). What it
cannot measure: parts, boundaries finer than the silhouette, or several
objects, and it rewards a global class read everywhere plus a brightness
mask: a perfect image classifier with a perfect threshold solves it. Use it
to compare encoders' spatial maps with each other (methods that contrast
locations against global contrast), not as a segmentation benchmark.
"""

import numpy as np
import tensorflow as tf
import keras

from supcon_tf._checks import check_int

THRESHOLD = 32   # out of 255: above it a pixel is the object's


def segmentation_masks(images, labels, threshold=THRESHOLD):
    """`[n, H, W]` int32 masks: the image's class + 1 where a pixel (any
    channel) is above `threshold`, 0 elsewhere.

    Args:
        images: `[n, H, W, C]` raw pixels in [0, 255].
        labels: `[n]` class ids >= 0.
        threshold: Pixel value above which a pixel is foreground. Defaults to
            `THRESHOLD` (32).

    Returns:
        A numpy int32 array `[n, H, W]`.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError("`images` must be [n, H, W, C] with one label each. Received: "
                         f"images.shape={images.shape}, labels.shape={labels.shape}")
    if not 0 <= threshold < 255:
        raise ValueError(f"`threshold` must be in [0, 255). Received: threshold={threshold!r}")
    foreground = images.max(axis=-1) > threshold
    return np.where(foreground, labels[:, None, None].astype(np.int32) + 1, 0).astype(np.int32)


def feature_map(encoder):
    """The encoder up to its last spatial feature map: a `keras.Model` from
    the same images to `[batch, h, w, channels]` (the input of its global
    pooling layer), sharing its weights.

    Raises:
        ValueError: no `GlobalAveragePooling2D` / `GlobalMaxPooling2D` layer
            at the top level of the (functional) encoder.
    """
    pools = [layer for layer in getattr(encoder, "layers", [])
             if isinstance(layer, (keras.layers.GlobalAveragePooling2D,
                                   keras.layers.GlobalMaxPooling2D))]
    if len(pools) != 1:
        raise ValueError("A dense probe needs the encoder's feature map: a functional encoder "
                         "with one global pooling layer at its top level (supcon_tf's "
                         f"ResNets). Received: {getattr(encoder, 'name', encoder)!r} with "
                         f"{len(pools)} such layers")
    # One input stays one tensor (not a list of one), so that calling the map
    # on a batch matches its structure as calling the encoder does.
    inputs = encoder.inputs[0] if len(encoder.inputs) == 1 else encoder.inputs
    return keras.Model(inputs, pools[0].input, name=f"{encoder.name}_feature_map")


def mean_iou(labels, predictions, num_classes):
    """Mean intersection over union over the classes that occur (in the
    labels or the predictions), and the per-class IoUs (NaN where a class
    occurs in neither).

    Returns:
        `(mean_iou, [num_classes] IoUs)`.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError("`labels` and `predictions` must have the same number of pixels. "
                         f"Received: {labels.shape} and {predictions.shape}")
    confusion = np.bincount(labels * num_classes + predictions,
                            minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return float(np.nanmean(iou)), iou


def dense_probe(encoder, train_images, train_masks, test_images, test_masks, num_classes,
                epochs=5, batch_size=256, lr=1e-2, seed=0):
    """Trains a 1 x 1 convolution on the frozen feature map of `encoder`
    (each channel standardised with the training maps' statistics;
    bilinearly upsampled logits, per-pixel cross-entropy, Adam) and scores
    it on the test masks.

    Args:
        encoder: An encoder with a feature map (`feature_map`), or a model
            that already returns `[batch, h, w, channels]`.
        train_images, test_images: `[n, H, W, C]` raw pixels.
        train_masks, test_masks: `[n, H, W]` int class ids (`segmentation_masks`).
        num_classes: Classes of the masks (the image classes + 1).
        epochs: Passes over the training images. Defaults to 5.
        batch_size: Defaults to 256.
        lr: Adam's learning rate. Defaults to 1e-2.
        seed: Initialisation and shuffling seed. Defaults to 0.

    Returns:
        A dict: `miou` (mean IoU on the test masks, in [0, 1]), `pixel_accuracy`,
        `iou` (per class), `feature_shape`.
    """
    check_int(num_classes, "num_classes", 2)
    check_int(epochs, "epochs", 1)
    features = encoder if len(encoder.outputs[0].shape) == 4 else feature_map(encoder)
    features.trainable = False
    height, width = np.asarray(train_masks).shape[1:3]
    keras.utils.set_random_seed(seed)
    # Standardised per channel (statistics of the training maps), as the
    # linear probe standardises embeddings: the probe's step size then does
    # not depend on the encoder's scale.
    standardise = keras.layers.Normalization(axis=-1)
    standardise.adapt(tf.data.Dataset.from_tensor_slices(np.asarray(train_images, np.float32))
                      .batch(batch_size).map(lambda x: features(x, training=False)))
    images = keras.Input(features.inputs[0].shape[1:])
    logits = keras.layers.Conv2D(num_classes, 1, name="probe")(
        standardise(features(images, training=False)))
    logits = keras.layers.Resizing(height, width, interpolation="bilinear")(logits)
    probe = keras.Model(images, logits)
    probe.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = (tf.data.Dataset.from_tensor_slices((np.asarray(train_images, np.float32),
                                                 np.asarray(train_masks, np.int32)))
             .shuffle(len(train_images), seed=seed).batch(batch_size))
    probe.fit(train, epochs=epochs, verbose=0, shuffle=False)   # shuffled above
    predicted = np.concatenate([
        np.argmax(probe.predict_on_batch(np.asarray(test_images[i:i + batch_size], np.float32)),
                  axis=-1) for i in range(0, len(test_images), batch_size)])
    miou, iou = mean_iou(test_masks, predicted, num_classes)
    # Read off a real batch: an encoder built for any image size has no
    # static map size.
    shape = features(np.asarray(test_images[:1], np.float32), training=False).shape[1:]
    return {"miou": miou, "pixel_accuracy": float(np.mean(predicted == np.asarray(test_masks))),
            "iou": iou.tolist(), "feature_shape": [int(d) for d in shape]}
