"""The cross-entropy baseline: the same encoder and augmentation as
examples/pretrain.py, trained end to end with softmax cross-entropy.

    python examples/train_ce.py --config configs/fashion_mnist/ce.py --model_dir runs/ce
    python examples/train_ce.py --config configs/fashion_mnist/ce.py \
        --config.data.long_tailed_ratio=100 --model_dir runs/ce_lt

Prints the test top-1 and per-class accuracy (with a long_tailed_ratio, on a
long-tailed training subset, also the many/medium/few-shot split); writes `encoder.keras`, TensorBoard logs, a resumable
`backup/` and `train_ce.json` to --model_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
from ml_collections import config_flags
import tensorflow as tf


FLAGS = flags.FLAGS
CONFIG = config_flags.DEFINE_config_file("config", None, "The recipe: a config file, e.g. "
                                         "configs/fashion_mnist/ce.py.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("model_dir", "runs/ce", "Output folder.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity.")
flags.mark_flag_as_required("config")


def make_optimizer(spec, epochs, steps_per_epoch):
    """The recipe's optimizer (sgd or adamw): linear warm-up, then cosine decay."""
    steps = epochs * steps_per_epoch
    schedule = sct.optimizers.warmup_cosine(
        spec["lr"], total_steps=steps,
        warmup_steps=min(int(spec["warmup_epochs"] * steps_per_epoch), steps - 1))
    if spec["name"] == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=spec["weight_decay"])
    if spec["name"] == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=spec["weight_decay"])
    raise app.UsageError(f"--config.optimizer.name must be sgd or adamw. Received: {spec['name']}")


def main(argv):
    del argv
    # TensorFlow's INFO lines (through absl and its own logger) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    recipe = CONFIG.value.to_dict()
    if recipe.get("method") != "ce" or recipe.get("distribute", "none") != "none":
        raise app.UsageError("train_ce.py trains the cross-entropy baseline on one device: "
                             "a config with method 'ce' and distribute 'none' "
                             f"(configs/fashion_mnist/ce.py). Received: method="
                             f"{recipe.get('method')!r}, distribute={recipe.get('distribute')!r}")
    seed, epochs, batch_size, data = (recipe["seed"], recipe["epochs"], recipe["batch_size"],
                                      recipe["data"])
    keras.utils.set_random_seed(seed)
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    split = "train" if data["train_size"] is None else f"train[:{data['train_size']}]"
    train = sct.data.load(data["dataset"], split, data_dir=FLAGS.data_dir)
    counts = None
    if data["long_tailed_ratio"] is not None:
        train, counts = sct.data.long_tailed(train, data["long_tailed_ratio"],
                                             data["long_tailed_profile"], seed=seed,
                                             return_counts=True)
    image_shape = tuple(train.element_spec[0].shape)
    train = sct.data.batches(train, batch_size, training=True, seed=seed)
    if int(train.cardinality()) < 1:
        raise app.UsageError(f"--config.batch_size={batch_size} is larger than the training "
                             "set (whole batches only).")
    test = sct.data.batches(sct.data.load(data["dataset"], "test", data_dir=FLAGS.data_dir),
                            batch_size, training=False)
    encoder = sct.encoders.get(recipe["encoder"]["name"], image_shape,
                               width=recipe["encoder"]["width"])
    augmenter = (None if recipe["augment"]["recipe"] == "none"
                 else sct.augment.from_spec(recipe["augment"], image_shape, seed=seed))
    model = sct.models.CrossEntropyClassifier(
        encoder, sct.data.num_classes(data["dataset"]), augmenter=augmenter)
    optimizer = make_optimizer(recipe["optimizer"], epochs, int(train.cardinality()))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    model.fit(train, epochs=epochs, verbose=FLAGS.verbose, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(FLAGS.model_dir, "backup"), delete_checkpoint=False),
        keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs")),
    ])
    seconds = time.time() - start
    top1 = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    report = sct.evaluation.classifier_accuracy(model, test, train_counts=counts)
    sct.export.save_model(encoder, os.path.join(FLAGS.model_dir, "encoder.keras"))
    # Written through temporary names; the backup goes only once they are in
    # place (a kill before that resumes instead of starting again).
    sct.export.write_json({"config": recipe,
                           "config_file": config_flags.get_config_filename(FLAGS["config"]),
                           "test_top1": top1, "wall_seconds": seconds, "accuracy": report},
                          os.path.join(FLAGS.model_dir, "train_ce.json"), indent=1, default=str)
    shutil.rmtree(os.path.join(FLAGS.model_dir, "backup"), ignore_errors=True)
    print(sct.evaluation.describe_accuracy(report))
    print(f"cross-entropy: test top-1 {100 * top1:.2f}% ({epochs} epochs, {seconds:.0f} s)")


if __name__ == "__main__":
    app.run(main)
