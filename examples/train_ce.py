"""The cross-entropy baseline: the same encoder and augmentation as
examples/pretrain.py, trained end to end with softmax cross-entropy.

    python examples/train_ce.py --epochs 10 --model_dir runs/ce
    python examples/train_ce.py --long_tailed_ratio 100 --model_dir runs/ce_lt

Prints the test top-1 and per-class accuracy (with --long_tailed_ratio, on a
long-tailed training subset, also the many/medium/few-shot split); writes `encoder.keras`, TensorBoard logs, a resumable
`backup/` and `train_ce.json` to --model_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
import sys
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import tensorflow as tf


FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (supcon_tf.data.load).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("train_size", None, "Use only the first N training images.")
flags.DEFINE_float("long_tailed_ratio", None, "Train on a long-tailed subset "
                   "(supcon_tf.data.long_tailed): largest over smallest class, e.g. 100.")
flags.DEFINE_enum("long_tailed_profile", "exponential", ["exponential", "step"],
                  "Profile of --long_tailed_ratio.")
flags.DEFINE_enum("encoder", "resnet18", ["resnet18", "resnet34", "resnet50"], "Backbone.")
flags.DEFINE_float("width", 0.25, "Channel width multiplier of the encoder.")
flags.DEFINE_integer("epochs", 2, "Training epochs.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_enum("augment", "supcon", ["supcon", "simclr", "none"], "Augmentation recipe.")
flags.DEFINE_float("crop_min_scale", None,
                   "Smallest area fraction of the resized crop (default: the recipe's, "
                   "0.2 for supcon, 0.08 for simclr).")
flags.DEFINE_enum("optimizer", "adamw", ["sgd", "adamw"], "Optimizer.")
flags.DEFINE_float("lr", 2e-3, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
flags.DEFINE_float("warmup_epochs", 0.5, "Linear warmup epochs before the cosine decay.")
flags.DEFINE_string("model_dir", "runs/ce", "Output folder.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity.")


def main(argv):
    del argv
    # TensorFlow's INFO lines (through absl and its own logger) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    split = "train" if FLAGS.train_size is None else f"train[:{FLAGS.train_size}]"
    train = sct.data.load(FLAGS.dataset, split, data_dir=FLAGS.data_dir)
    counts = None
    if FLAGS.long_tailed_ratio is not None:
        train, counts = sct.data.long_tailed(train, FLAGS.long_tailed_ratio,
                                             FLAGS.long_tailed_profile, seed=FLAGS.seed,
                                             return_counts=True)
    image_shape = tuple(train.element_spec[0].shape)
    train = sct.data.batches(train, FLAGS.batch_size, training=True, seed=FLAGS.seed)
    if int(train.cardinality()) < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size} is larger than the training "
                             "set (whole batches only).")
    test = sct.data.batches(sct.data.load(FLAGS.dataset, "test", data_dir=FLAGS.data_dir),
                            FLAGS.batch_size, training=False)
    steps = FLAGS.epochs * int(train.cardinality())

    encoder = sct.encoders.get(FLAGS.encoder, image_shape, width=FLAGS.width)
    augmenter = None
    if FLAGS.augment != "none":
        recipe = sct.augment.supcon if FLAGS.augment == "supcon" else sct.augment.simclr
        crop = ({} if FLAGS.crop_min_scale is None
                else {"crop_scale": (FLAGS.crop_min_scale, 1.0)})
        augmenter = recipe(image_shape, seed=FLAGS.seed, **crop)
    model = sct.models.CrossEntropyClassifier(
        encoder, sct.data.num_classes(FLAGS.dataset), augmenter=augmenter)
    schedule = sct.optimizers.warmup_cosine(
        FLAGS.lr, total_steps=steps,
        warmup_steps=min(int(FLAGS.warmup_epochs * steps / FLAGS.epochs), steps - 1))
    optimizer = (keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=FLAGS.weight_decay)
                 if FLAGS.optimizer == "sgd"
                 else keras.optimizers.AdamW(schedule, weight_decay=FLAGS.weight_decay))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    model.fit(train, epochs=FLAGS.epochs, verbose=FLAGS.verbose, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(FLAGS.model_dir, "backup"), delete_checkpoint=False),
        keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs")),
    ])
    seconds = time.time() - start
    top1 = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    report = sct.evaluation.classifier_accuracy(model, test, train_counts=counts)
    sct.export.save_model(encoder, os.path.join(FLAGS.model_dir, "encoder.keras"))
    # Written through temporary names; the backup goes only once they are in
    # place (a kill before that resumes instead of starting again).
    sct.export.write_json({"flags": {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}, "test_top1": top1,
                           "wall_seconds": seconds, "accuracy": report},
                          os.path.join(FLAGS.model_dir, "train_ce.json"), indent=1, default=str)
    shutil.rmtree(os.path.join(FLAGS.model_dir, "backup"), ignore_errors=True)
    print(sct.evaluation.describe_accuracy(report))
    print(f"cross-entropy: test top-1 {100 * top1:.2f}% ({FLAGS.epochs} epochs, {seconds:.0f} s)")


if __name__ == "__main__":
    app.run(main)
