"""Quickstart: the two-stage SupCon recipe on Fashion-MNIST, short.

Run from the repository root (`make quickstart` installs what it needs first):

    python examples/quickstart.py

Stage 1 pretrains a small CIFAR-stem ResNet-18 with the supervised
contrastive loss on two augmented views of each image; stage 2 trains a linear
classifier on the frozen encoder. It prints the test top-1 of the linear
classifier and exports the encoder as a TensorFlow SavedModel (raw uint8 images
in, pooled features out) to --output_dir. The defaults finish in a few minutes
on 2 CPU cores and are far from converged: examples/pretrain.py and
examples/linear_eval.py run the full recipe (see docs/RESULTS.md).
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf


FLAGS = flags.FLAGS
flags.DEFINE_integer("train_size", 10000, "Training images used (the first N).")
flags.DEFINE_float("width", 0.125, "Channel width multiplier of the ResNet-18.")
flags.DEFINE_integer("epochs", 3, "Epochs of contrastive pretraining.")
flags.DEFINE_integer("linear_epochs", 5, "Epochs of the linear classifier.")
flags.DEFINE_integer("batch_size", 256, "Images per batch (each gives 2 views).")
flags.DEFINE_float("temperature", 0.1, "SupCon temperature.")
flags.DEFINE_string("output_dir", "quickstart_out", "Where the SavedModel goes.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
    del argv
    # TensorFlow's INFO lines (through absl and its own logger) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    start = time.time()
    train = sct.data.load("fashion_mnist", f"train[:{FLAGS.train_size}]",
                          data_dir=FLAGS.data_dir)
    test = sct.data.load("fashion_mnist", "test", data_dir=FLAGS.data_dir)
    train_batches = sct.data.batches(train, FLAGS.batch_size, training=True, seed=FLAGS.seed)
    test_batches = sct.data.batches(test, FLAGS.batch_size, training=False)
    steps = FLAGS.epochs * int(train_batches.cardinality())

    # Stage 1: contrastive pretraining of encoder + projection head.
    encoder = sct.encoders.resnet18((28, 28, 1), width=FLAGS.width)
    model = sct.models.SupConModel(
        encoder, head=sct.heads.ProjectionHead(128),
        augmenter=sct.augment.supcon((28, 28, 1), crop_scale=(0.5, 1.0), seed=FLAGS.seed),
        views=2)
    model.compile(
        optimizer=keras.optimizers.AdamW(sct.optimizers.warmup_cosine(
            2e-3, total_steps=steps, warmup_steps=steps // 10)),
        loss=sct.losses.SupConLoss(temperature=FLAGS.temperature))
    print(f"Stage 1: SupCon pretraining on {FLAGS.train_size} images")
    model.fit(train_batches, epochs=FLAGS.epochs, verbose=2)

    # Stage 2: a linear classifier on the frozen encoder.
    classifier = sct.models.LinearClassifier(model.encoder, num_classes=10)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    print("Stage 2: linear classifier on the frozen encoder")
    classifier.fit(train_batches, epochs=FLAGS.linear_epochs, verbose=2)
    top1 = classifier.evaluate(test_batches, verbose=0, return_dict=True)["accuracy"]

    # Export the encoder (and head) as a SavedModel with serving signatures;
    # export_encoder reloads it and checks it against the Keras model.
    path = sct.export.export_encoder(
        model.encoder, os.path.join(FLAGS.output_dir, "encoder_savedmodel"),
        head=model.head, overwrite=True)
    reloaded = tf.saved_model.load(path)
    images = next(iter(test_batches))[0][:8]
    served = reloaded.signatures["serving_default"](images=tf.cast(images, tf.float32))
    gap = np.max(np.abs(served["embedding"].numpy() - tf.math.l2_normalize(
        model.encoder(images, training=False), axis=-1).numpy()))
    print(f"Exported the encoder to {path} (max difference after reload: {gap:.1e})")
    print(f"Linear-eval test top-1: {100 * top1:.2f}% "
          f"({FLAGS.epochs} SupCon epochs + {FLAGS.linear_epochs} linear epochs on "
          f"{FLAGS.train_size} images, {time.time() - start:.0f} s)")


if __name__ == "__main__":
    app.run(main)
