"""Export encoders as TensorFlow SavedModels that need nothing of supcon_tf.

    sct.export.export_encoder(model.encoder, "encoder_savedmodel", head=model.head)

    loaded = tf.saved_model.load("encoder_savedmodel")          # plain TensorFlow
    loaded.signatures["serving_default"](images=x)["embedding"]
    keras.layers.TFSMLayer("encoder_savedmodel", call_endpoint="serving_default")

Signatures (both return a dict of float32 tensors):

- `serving_default`: `images` float32 `[batch, H, W, C]`, raw pixel values
  (0-255 for the zoo's encoders; the preprocessing is inside the model);
- `serving_uint8`: the same for uint8 images.

Outputs: `embedding`, the L2-normalised encoder features; and `projection`,
the projection head's output as the head gives it, when a head is given
(L2-normalised for SupCon, SimCLR and MoCo's `ProjectionHead`; not for the
plain MLPs of BYOL, SimSiam, Barlow Twins and VICReg). The loaded
object is also callable (`loaded(x)`) with uint8 or float32 images.
"""

import ctypes
import json
import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

import keras

from supcon_tf import _backend
from supcon_tf.dense import feature_map as dense_feature_map
from supcon_tf.encoders import as_encoder

SIGNATURES = ("serving_default", "serving_uint8")


class _Exported(tf.Module):
    """What the SavedModel holds: the encoder, the optional head, and the
    serving functions."""

    def __init__(self, encoder, head, image_shape, feature_map=False):
        super().__init__(name="supcon_tf_encoder")
        self.encoder = encoder
        self.head = head
        self.image_shape = tf.constant(list(image_shape), tf.int32)
        # With the feature map: one pass giving the map and the pooled
        # features (a model sharing the encoder's layers).
        self.both = None
        if feature_map:
            spatial = dense_feature_map(encoder)
            self.both = keras.Model(encoder.inputs, [spatial.outputs[0], encoder.outputs[0]],
                                    name="feature_map_and_features")

    def outputs(self, images):
        images = tf.cast(images, tf.float32)
        if self.both is None:
            features = self.encoder(images, training=False)
            out = {}
        else:
            spatial, features = self.both(images, training=False)
            out = {"feature_map": tf.cast(spatial, tf.float32)}
        out["embedding"] = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
        if self.head is not None:
            out["projection"] = tf.cast(self.head(features, training=False), tf.float32)
        return out


def _check_path(path, overwrite):
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"`path` must be a folder path. Received: path={path!r}")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"`path` already exists; pass overwrite=True to replace it. "
                              f"Received: path={path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"`path` exists and is not a folder. Received: path={path!r}")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileExistsError(
            "`path` is a folder but not a SavedModel (no saved_model.pb): overwrite=True "
            f"replaces only an earlier export. Received: path={path!r}")
    return path


def _recover_and_clean(path):
    """Finishes what a killed export left: if `path` is missing but a complete
    earlier export was moved aside (`.NAME.old-*`), puts it back; then removes
    the hidden temporary folders of killed exports of `path`."""
    parent, base = os.path.dirname(path), os.path.basename(path)
    olds = sorted(glob.glob(os.path.join(parent, f".{glob.escape(base)}.old-*")),
                  key=os.path.getmtime)
    if not os.path.exists(path):
        for old in reversed(olds):
            if os.path.isfile(os.path.join(old, "saved_model.pb")):
                os.rename(old, path)
                break
    for leftover in glob.glob(os.path.join(parent, f".{glob.escape(base)}.tmp-*")) + [
            o for o in olds if os.path.exists(o)]:
        shutil.rmtree(leftover, ignore_errors=True)


_RENAME_EXCHANGE = 2


def _exchange(a, b):
    """Atomically swaps the folders `a` and `b` (Linux renameat2), or returns
    False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _umask_mode():
    """The mode a new folder gets from the process umask (0777 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def export_encoder(encoder, path, head=None, overwrite=False, verify=True, image_shape=None,
                   feature_map=False):
    """Writes `encoder` (and optionally its projection `head`) as a SavedModel.

    The SavedModel is written to a temporary folder next to `path`, reloaded
    and compared with the in-memory model when `verify`, then renamed into
    place: `path` never holds a half-written export. An existing `path` is
    replaced only with `overwrite=True` and only when it is a SavedModel, by an
    atomic exchange of the two folders (Linux `renameat2`; elsewhere the old
    export is moved aside first, and an export killed in between is put back
    by the next call). Hidden `.NAME.tmp-*` folders of killed exports are
    removed by the next export to the same path. The folder gets the mode of
    the process umask, like any other new folder.

    Args:
        encoder: A Keras model from images `[batch, H, W, C]` to features
            `[batch, dim]`. Its declared input shape is the served one; an
            encoder that takes any size (`(None, None, C)`, as multi-crop
            SwAV trains) needs `image_shape`.
        path: Output folder.
        head: Optional projection head (e.g. `SupConModel.head`); adds the
            `projection` output. Defaults to None.
        overwrite: Replace an existing `path`. Defaults to False.
        verify: Reload the export and check that its outputs equal the
            in-memory model's (1e-5) before renaming it into place.
            Defaults to True.
        image_shape: `(height, width, channels)` the SavedModel serves.
            Defaults to None: the encoder's input shape. Required when that
            shape has unknown dimensions; must agree with its known ones.
        feature_map: Also serve the feature map the encoder's global
            pooling reads (`feature_map`, `[batch, h, w, channels]`, as
            `dense.feature_map` reads it), for dense tasks. Defaults to False.

    Returns:
        The absolute path of the SavedModel.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False, or it is not
            a SavedModel (nothing else is ever deleted).
        ValueError: the served input shape is unknown (no `image_shape` for
            an encoder of unknown input size) or `image_shape` disagrees with
            the encoder's; `feature_map=True` for an encoder without one
            global pooling layer at its top level.
        TypeError: `feature_map` is not a bool.
        RuntimeError: the reloaded export does not match (with `verify`).
    """
    _backend.require_tensorflow("supcon_tf.export.export_encoder (a TensorFlow SavedModel)")
    encoder = as_encoder(encoder)
    path = _check_path(path, overwrite)
    image_shape = _served_shape(encoder, image_shape)
    if not isinstance(feature_map, bool):
        raise TypeError(f"`feature_map` must be a bool. Received: feature_map={feature_map!r}")
    module = _Exported(encoder, head, image_shape, feature_map)
    spec = [None, *image_shape]
    serve_float = tf.function(module.outputs, input_signature=[
        tf.TensorSpec(spec, tf.float32, name="images")])
    serve_uint8 = tf.function(module.outputs, input_signature=[
        tf.TensorSpec(spec, tf.uint8, name="images")])
    module.__call__ = tf.function(module.outputs)
    module.__call__.get_concrete_function(tf.TensorSpec(spec, tf.float32))
    module.__call__.get_concrete_function(tf.TensorSpec(spec, tf.uint8))

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    _recover_and_clean(path)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    old = None
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve_float,
                                                     "serving_uint8": serve_uint8})
        if verify:
            _verify(tmp, module, image_shape)
        os.chmod(tmp, _umask_mode())          # mkdtemp made it 0700
        if os.path.exists(path):
            if not overwrite:  # appeared while we were writing
                raise FileExistsError(f"`path` already exists. Received: path={path!r}")
            _check_path(path, overwrite)
            if not _exchange(tmp, path):
                # No atomic exchange: move the old export aside first; a kill
                # between the two renames is repaired by the next export.
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
                os.rmdir(old)
                os.rename(path, old)
                os.rename(tmp, path)
            # After an exchange `tmp` holds the old export, removed below.
        else:
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _served_shape(encoder, image_shape):
    """The `(height, width, channels)` to serve: `image_shape` or the encoder's."""
    try:
        declared = tuple(encoder.input_shape[1:])
    except (AttributeError, ValueError):
        declared = ()
    if image_shape is None:
        if len(declared) != 3 or any(d is None for d in declared):
            raise ValueError(
                "The encoder must declare its input shape (height, width, channels), e.g. "
                "a functional model built from keras.Input, or pass `image_shape` for an "
                f"encoder of any input size. Received: input shape {declared or 'unknown'}")
        return declared
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        raise TypeError("`image_shape` must be (height, width, channels) integers. "
                        f"Received: image_shape={image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError("`image_shape` must be three positive integers (height, width, "
                         f"channels). Received: image_shape={image_shape!r}")
    if len(declared) == 3 and any(d is not None and d != s for d, s in zip(declared, shape)):
        raise ValueError(f"`image_shape` must agree with the encoder's input shape "
                         f"{declared}. Received: image_shape={image_shape!r}")
    return shape


def _verify(saved_path, module, image_shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, *image_shape)).astype("uint8")
    want = {k: v.numpy() for k, v in module.outputs(images).items()}
    loaded = tf.saved_model.load(saved_path)
    for name in SIGNATURES:
        x = images if name == "serving_uint8" else images.astype("float32")
        got = loaded.signatures[name](images=tf.constant(x))
        if sorted(got) != sorted(want):
            raise RuntimeError(f"The exported signature {name} returns {sorted(got)}, "
                               f"expected {sorted(want)}")
        for key, value in want.items():
            err = float(np.max(np.abs(got[key].numpy() - value)))
            if not err <= 1e-5:
                raise RuntimeError(f"The exported {name}/{key} differs from the "
                                   f"in-memory model by {err:.3g} (> 1e-5)")


def _write_atomically(path, write, suffix=""):
    """Calls `write(tmp)` on a hidden temporary file next to `path`, then
    renames it into place (atomic on one filesystem), so a kill at any moment
    leaves the old file or the new one; it gets the mode of the umask."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # What killed writes of `path` left behind.
    for leftover in glob.glob(os.path.join(glob.escape(parent),
                                           f".{glob.escape(os.path.basename(path))}.tmp-*")):
        if os.path.isfile(leftover):
            os.remove(leftover)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix,
                               dir=parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_model(model, path):
    """`model.save(path)` (a `.keras` file) that never leaves a half-written
    file at `path`: written to a temporary name, then renamed. Returns the path."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end in .keras. Received: path={path!r}")
    return _write_atomically(path, model.save, suffix=".keras")


def write_json(obj, path, **kwargs):
    """`json.dump(obj, **kwargs)` to `path` through a temporary file and a rename."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, **kwargs)
    return _write_atomically(os.fspath(path), write)
