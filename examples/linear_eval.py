"""Stage 2: linear evaluation of a pretrained encoder (frozen, weights and
BatchNorm statistics), reporting test top-1.

    python examples/linear_eval.py --encoder_path runs/supcon/encoder.keras
    python examples/linear_eval.py --encoder_path runs/lt/encoder.keras --long_tailed_ratio 100
    python examples/linear_eval.py --zoo fashion_mnist_resnet18_simclr --task rotation

Prints test top-1 and per-class accuracy; with --long_tailed_ratio the linear
layer trains on the same long-tailed subset as pretraining did (same --seed)
and the many/medium/few-shot split is printed too; --class_balanced trains
it with class-balanced sampling (the decoupled classifier stage of the
long-tail literature). --task=rotation predicts how many quarter turns an
image was turned by instead of its class (an augmentation-sensitive task:
supcon_tf.data.rotation_task); its outputs go to linear_rotation/. --zoo
evaluates a zoo entry's embedding (L2-normalised features) instead of a
saved encoder; --normalize gives a saved encoder's features the same
normalisation, so the two compare under one protocol.

Writes TensorBoard logs and a resumable `backup/` to --model_dir, and the
result to `linear_eval.json` there.
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
flags.DEFINE_string("encoder_path", None, "The encoder saved by examples/pretrain.py.")
flags.DEFINE_string("zoo", None, "A zoo entry's name instead of --encoder_path: its "
                    "SavedModel's embedding (L2-normalised features; supcon_tf.zoo.load).")
flags.DEFINE_bool("normalize", False, "L2-normalise the encoder's features before the linear "
                  "layer (as a zoo entry's embedding is).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (supcon_tf.data.load).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("train_size", None, "Use only the first N training images.")
flags.DEFINE_enum("task", "class", ["class", "rotation"], "What the linear layer predicts: "
                  "the class, or the quarter turns of an image turned by 0-3 of them "
                  "(supcon_tf.data.rotation_task, 4 classes).")
flags.DEFINE_float("long_tailed_ratio", None, "Train on a long-tailed subset "
                   "(supcon_tf.data.long_tailed): largest over smallest class, e.g. 100.")
flags.DEFINE_enum("long_tailed_profile", "exponential", ["exponential", "step"],
                  "Profile of --long_tailed_ratio.")
flags.DEFINE_bool("class_balanced", False, "Train the linear layer with class-balanced "
                  "sampling (supcon_tf.data.class_balanced; epochs keep the set's length).")
flags.DEFINE_integer("epochs", 10, "Training epochs of the linear layer.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("lr", 1e-2, "Adam learning rate (cosine decay to 0).")
flags.DEFINE_bool("augment", False, "Flip and crop the training images.")
flags.DEFINE_string("model_dir", None, "Output folder (default: next to the encoder).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity.")
flags.register_multi_flags_validator(
    ["encoder_path", "zoo"], lambda f: (f["encoder_path"] is None) != (f["zoo"] is None),
    message="Pass exactly one of --encoder_path and --zoo.")


def main(argv):
    del argv
    # TensorFlow's INFO lines (through absl and its own logger) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    stem = "linear" if FLAGS.task == "class" else f"linear_{FLAGS.task}"
    if FLAGS.zoo is not None:
        model_dir = FLAGS.model_dir or os.path.join("runs", FLAGS.zoo, stem)
        encoder = sct.zoo.load(FLAGS.zoo)
    else:
        model_dir = FLAGS.model_dir or os.path.join(os.path.dirname(FLAGS.encoder_path), stem)
        encoder = keras.models.load_model(FLAGS.encoder_path)
    if FLAGS.normalize:
        inputs = keras.Input(encoder.input_shape[1:])
        encoder = keras.Model(inputs, sct.heads.L2Normalize()(encoder(inputs)))
    os.makedirs(model_dir, exist_ok=True)
    split = "train" if FLAGS.train_size is None else f"train[:{FLAGS.train_size}]"
    train = sct.data.load(FLAGS.dataset, split, data_dir=FLAGS.data_dir)
    test = sct.data.load(FLAGS.dataset, "test", data_dir=FLAGS.data_dir)
    classes = sct.data.num_classes(FLAGS.dataset)
    if FLAGS.task == "rotation":
        if FLAGS.long_tailed_ratio is not None or FLAGS.class_balanced:
            raise app.UsageError("--task=rotation takes neither --long_tailed_ratio nor "
                                 "--class_balanced.")
        train, test = sct.data.rotation_task(train), sct.data.rotation_task(test)
        classes = sct.data.ROTATIONS
    counts = None
    if FLAGS.long_tailed_ratio is not None:
        train, counts = sct.data.long_tailed(train, FLAGS.long_tailed_ratio,
                                             FLAGS.long_tailed_profile, seed=FLAGS.seed,
                                             return_counts=True)
    image_shape = tuple(train.element_spec[0].shape)
    size = int(train.cardinality())
    if FLAGS.class_balanced:
        # Endless; an epoch is as many whole batches as the set gives.
        steps = size // FLAGS.batch_size
        train = sct.data.class_balanced(train.cache(), seed=FLAGS.seed).batch(
            FLAGS.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    else:
        train = sct.data.batches(train, FLAGS.batch_size, training=True, seed=FLAGS.seed)
        steps = int(train.cardinality())
    if steps < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size} is larger than the training "
                             "set (whole batches only).")
    test = sct.data.batches(test, FLAGS.batch_size, training=False)
    augmenter = None
    if FLAGS.augment:
        augmenter = keras.Sequential([
            sct.augment.RandomResizedCrop(*image_shape[:2], scale=(0.5, 1.0), seed=FLAGS.seed),
            keras.layers.RandomFlip("horizontal", seed=FLAGS.seed + 1)])
    classifier = sct.models.LinearClassifier(encoder, classes, augmenter=augmenter)
    schedule = keras.optimizers.schedules.CosineDecay(
        FLAGS.lr, decay_steps=FLAGS.epochs * steps)
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    start = time.time()
    classifier.fit(train, epochs=FLAGS.epochs, verbose=FLAGS.verbose,
                   steps_per_epoch=steps if FLAGS.class_balanced else None,
                   callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup"), delete_checkpoint=False),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
    ])
    seconds = time.time() - start
    top1 = classifier.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    report = sct.evaluation.classifier_accuracy(classifier, test, train_counts=counts)
    # Written through temporary names; the backup goes only once they are in
    # place (a kill before that resumes instead of starting again).
    sct.export.write_json({"flags": {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}, "test_top1": top1,
                           "wall_seconds": seconds, "accuracy": report},
                          os.path.join(model_dir, "linear_eval.json"), indent=1, default=str)
    shutil.rmtree(os.path.join(model_dir, "backup"), ignore_errors=True)
    print(sct.evaluation.describe_accuracy(report))
    task = "" if FLAGS.task == "class" else f" ({FLAGS.task})"
    print(f"linear eval{task}: test top-1 {100 * top1:.2f}% "
          f"({FLAGS.epochs} epochs, {seconds:.0f} s)")


if __name__ == "__main__":
    app.run(main)
