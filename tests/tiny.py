"""A small encoder for the tests of everything but the encoders: two strided
convolutions with BatchNorm and a global pool. It has what the models rely
on in a ResNet (BatchNorm statistics, images of any size, pooled features
of the same width as ResNet-18 at width 0.0625) and traces in a fraction of
the time (tests/test_encoders_layers.py tests the ResNets themselves)."""

import keras


def encoder(shape, features=32, name="tiny_encoder"):
    """Images `shape` (0-255, `(None, None, C)` for any size) -> `[batch, features]`."""
    inputs = keras.Input(shape, name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (8, features):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name=name)
