"""Stage 1: contrastive pretraining of an encoder, any method of the family.

    python examples/pretrain.py --config configs/fashion_mnist/byol.py --model_dir runs/byol
    python examples/pretrain.py --config configs/fashion_mnist/moco.py \
        --config.optimizer.lr=4e-3 --config.model.mochi_n=1024 --model_dir runs/mochi

A config file holds the whole recipe (method and its arguments, encoder,
head, augmentation, loss, optimizer, schedule, epochs, batch: docs/methods.md);
`--config.<key>=<value>` overrides one value. The method comes from
`supcon_tf.methods` (a registered method of your own runs the same way).

Writes to --model_dir: `encoder.keras` (the pretrained encoder, for
examples/linear_eval.py), `model.keras` (encoder + head), a method's other
representations beside them (LooC++: `encoder_concat.keras`), `pretrain.json`
(the recipe and the run's history), TensorBoard logs in `logs/`, and a
`backup/` that lets an interrupted run continue from its last finished epoch
when started again with the same command.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
from ml_collections import config_flags
import tensorflow as tf

FLAGS = flags.FLAGS
CONFIG = config_flags.DEFINE_config_file("config", None, "The recipe: a config file, e.g. "
                                         "configs/fashion_mnist/supcon.py.")
flags.DEFINE_string("model_dir", "runs/pretrain", "Output folder.")
flags.DEFINE_bool("overwrite", False, "Train over a finished run in --model_dir (a run "
                  "that was interrupted resumes without it).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 progress bar, 2 one line per epoch.")
flags.mark_flag_as_required("config")


def load_training_data(recipe, cls):
    """The batched training set as the method's `fit` takes it, and the
    images in dataset order (for methods that embed the dataset each epoch)."""
    spec = recipe["data"]
    split = "train" if spec["train_size"] is None else f"train[:{spec['train_size']}]"
    train = sct.data.load(spec["dataset"], split, data_dir=FLAGS.data_dir)
    if spec["long_tailed_ratio"] is not None:
        train = sct.data.long_tailed(train, spec["long_tailed_ratio"],
                                     spec["long_tailed_profile"], seed=recipe["seed"]).cache()
    in_order = train.map(lambda image, label: image)
    batches = sct.data.batches(sct.methods.training_data(cls, train), recipe["batch_size"],
                               training=True, seed=recipe["seed"])
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return train, batches.with_options(options), in_order


def check_model_dir(backup_dir):
    """A finished run is never trained over without --overwrite."""
    if os.path.isfile(os.path.join(FLAGS.model_dir, "pretrain.json")) and not os.path.isdir(
            backup_dir):
        if not FLAGS.overwrite:
            raise app.UsageError(
                f"{FLAGS.model_dir} holds a finished run (pretrain.json, encoder.keras): "
                "pass --overwrite to train a new one over it, or choose another --model_dir.")
        print(f"--overwrite: training a new run over the finished one in {FLAGS.model_dir}")
    elif FLAGS.overwrite and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)                    # start afresh, not from the backup


def main(argv):
    del argv
    try:
        recipe = sct.methods.resolve(CONFIG.value)
        cls = sct.methods.get(recipe["method"])
    except (TypeError, ValueError) as err:
        raise app.UsageError(f"--config: {err}") from None
    keras.utils.set_random_seed(recipe["seed"])
    # TensorFlow's INFO lines (through absl and its own logger; under multi-worker,
    # one per all-reduce) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    if recipe["mixed_precision"] != "none":
        keras.mixed_precision.set_dtype_policy(recipe["mixed_precision"])
    backup_dir = os.path.join(FLAGS.model_dir, "backup")
    check_model_dir(backup_dir)
    strategy = sct.distribute.get_strategy(recipe["distribute"])
    chief = sct.distribute.is_chief(strategy)
    # Only the chief writes into --model_dir; other workers write to a
    # temporary folder that is removed at the end.
    out_dir = sct.distribute.output_dir(FLAGS.model_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)
    examples, train, in_order = load_training_data(recipe, cls)
    steps_per_epoch = int(train.cardinality())
    if steps_per_epoch < 1:
        raise app.UsageError(f"--config.batch_size={recipe['batch_size']} is larger than the "
                             "training set.")
    sct.distribute.check_dataset(train, strategy)
    with strategy.scope():
        try:
            model, loss = sct.methods.build(
                recipe, examples.element_spec[0].shape, num_examples=int(examples.cardinality()),
                num_classes=sct.data.num_classes(recipe["data"]["dataset"]))
        except (TypeError, ValueError) as err:
            raise app.UsageError(f"--config: {err}") from None
        model.compile(optimizer=sct.methods.optimizer(recipe, steps_per_epoch), loss=loss,
                      jit_compile=sct.methods.jit_compile(recipe))
    # Each epoch's backup (weights and the run's record) is written whole or
    # not at all; it is deleted only once every artifact is in place (below),
    # so a kill at any moment, even while the artifacts are written, resumes.
    backup = sct.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False,
                                            read_only=not chief)
    callbacks = [keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
                 *model.recipe_callbacks(in_order),
                 backup]    # last: it records the logs as the callbacks before it left them
    model.fit(train, epochs=recipe["epochs"], verbose=FLAGS.verbose if chief else 0,
              callbacks=callbacks)
    run = backup.record
    epochs = sorted(run["epochs"], key=int)
    if list(map(int, epochs)) != list(range(1, recipe["epochs"] + 1)):
        # Never write an encoder over the run's artifacts that is not the
        # result of every epoch.
        raise RuntimeError(f"The run's record holds epochs {epochs}, not 1-{recipe['epochs']}: "
                           "nothing was saved. Rerun with --overwrite to train from scratch.")
    # Each artifact is written to a temporary name and renamed into place.
    sct.export.save_model(model.encoder, os.path.join(out_dir, "encoder.keras"))
    sct.export.save_model(model, os.path.join(out_dir, "model.keras"))
    for stem, extra in model.extra_encoders().items():
        sct.export.save_model(extra, os.path.join(out_dir, f"{stem}.keras"))
    if chief:
        # (A key the first epochs lack, e.g. of a run resumed by a newer
        # version, reads None there.)
        history = {k: [run["epochs"][e].get(k) for e in epochs]
                   for k in run["epochs"][epochs[-1]]}
        # The whole run, over every process that worked on it (resumes included).
        sct.export.write_json({"config": recipe, "config_file": config_flags.get_config_filename(FLAGS["config"]),
                               "wall_seconds": run["seconds"], "processes": run["processes"],
                               "replicas": strategy.num_replicas_in_sync, "history": history},
                              os.path.join(out_dir, "pretrain.json"), indent=1, default=str)
        shutil.rmtree(backup_dir, ignore_errors=True)
        print(f"pretrained {recipe['method']} for {recipe['epochs']} epochs in "
              f"{run['seconds']:.0f} s ({run['processes']} process(es)) on "
              f"{strategy.num_replicas_in_sync} replica(s); final loss {history['loss'][-1]:.6f}; "
              f"encoder saved to {os.path.join(FLAGS.model_dir, 'encoder.keras')}")
    sct.distribute.cleanup_output_dir(out_dir, FLAGS.model_dir)


if __name__ == "__main__":
    app.run(main)
