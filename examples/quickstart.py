"""Quickstart: a short supervised-contrastive (SupCon) fit on Fashion-MNIST.

Run from the repository root (`make quickstart` installs what it needs first):

    python examples/quickstart.py

It loads Fashion-MNIST (TFDS, or the IDX files of Debian's package
`dataset-fashion-mnist`), trains a small convolutional encoder with
`SupConLoss` on two augmented views of each image, and prints the loss per
epoch. Flags make it longer; the defaults finish in about a minute on 2 CPU cores.
"""

from absl import app, flags
import keras
import tensorflow as tf

import supcon_tf as sct

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_size", 10000, "Number of training images used.")
flags.DEFINE_integer("epochs", 3, "Epochs of contrastive training.")
flags.DEFINE_integer("batch_size", 256, "Images per batch (each gives 2 views).")
flags.DEFINE_float("temperature", 0.1, "SupCon temperature.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("seed", 0, "Random seed.")


@keras.saving.register_keras_serializable(package="supcon_tf_examples")
class TwoViewEncoder(keras.Model):
    """Makes two random views of each image inside the model and embeds both:
    output `[batch, 2, 128]`, the shape SupConLoss expects."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.augment = keras.Sequential([
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 1),
        ])
        self.encoder = keras.Sequential([
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ])
        self.head = keras.Sequential([
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128),
        ])

    def call(self, images, training=False):
        images = keras.ops.cast(images, "float32")
        views = [self.augment(images, training=True) for _ in range(2)]
        # Both views go through the encoder as one batch of 2 * batch images.
        embeddings = self.head(self.encoder(keras.ops.concatenate(views, axis=0)))
        return keras.ops.stack(keras.ops.split(embeddings, 2, axis=0), axis=1)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    train = (sct.data.load("fashion_mnist", f"train[:{FLAGS.train_size}]",
                           data_dir=FLAGS.data_dir)
             .shuffle(FLAGS.train_size, seed=FLAGS.seed)
             .batch(FLAGS.batch_size, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE))
    model = TwoViewEncoder(seed=FLAGS.seed)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.lr),
                  loss=sct.losses.SupConLoss(temperature=FLAGS.temperature))
    history = model.fit(train, epochs=FLAGS.epochs, verbose=2)
    for epoch, loss in enumerate(history.history["loss"], start=1):
        print(f"epoch {epoch}: SupCon loss {loss:.4f}")


if __name__ == "__main__":
    app.run(main)
