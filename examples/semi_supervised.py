"""SimCLR v2's few-label recipe on a pretrained network: fine-tune from the
projection head on a class-balanced labelled subset, then self-distil on all
training images; with the baselines beside it.

    python examples/pretrain.py --method simclr --projection_hidden_dims 64,64 \\
        --model_dir runs/simclr_v2                      # SimCLR v2's 3-layer head
    python examples/semi_supervised.py --pretrained runs/simclr_v2/model.keras \\
        --fraction 0.01 --model_dir runs/semi_1pct

Rows, each tested on the full test set:

- `ce`: the encoder's architecture trained from scratch with cross-entropy on
  the labelled subset only;
- `linear`: a linear classifier on the frozen pretrained encoder, trained on
  the subset;
- `finetune`: `FineTuneClassifier` from layer --head_layers of the pretrained
  head (SimCLR v2 fine-tunes from the first), trained end to end on the subset;
- `distill`: `DistillationModel`: a student of the fine-tuned network's
  architecture, from scratch, learns the fine-tuned teacher's predictions on
  all training images (labels unused), as SimCLR v2's self-distillation
  does.

--pretrained is the `model.keras` that examples/pretrain.py writes (encoder and
head); with an encoder alone (`encoder.keras`) only --head_layers 0 works.
`--pretrained zoo:<name>` takes a zoo encoder (e.g.
`zoo:fashion_mnist_resnet18_simclr`) for the `linear` row only: a zoo entry is
a SavedModel of L2-normalised embeddings, not a network to fine-tune.
Prints a table and writes `semi_supervised.json` to --model_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import tensorflow as tf


FLAGS = flags.FLAGS
flags.DEFINE_string("pretrained", None, "model.keras (or encoder.keras) from examples/pretrain.py, "
                    "or zoo:<name> (the linear row only).")
flags.DEFINE_float("fraction", None, "Share of the training set that keeps its labels (0.01, 0.1).")
flags.DEFINE_integer("per_class", None, "Labelled examples per class (instead of --fraction).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (supcon_tf.data.load).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("train_size", None, "Use only the first N training images.")
flags.DEFINE_integer("test_size", None, "Test on only the first N test images.")
flags.DEFINE_list("rows", ["ce", "linear", "finetune", "distill"], "Rows to run.")
flags.DEFINE_integer("head_layers", 1, "Fine-tune from this layer of the projection head.")
flags.DEFINE_integer("subset_epochs", 60, "Epochs over the labelled subset (ce, linear, finetune).")
flags.DEFINE_integer("distill_epochs", 10, "Epochs over all training images (distill).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("lr", 2e-3, "AdamW peak learning rate from scratch (ce, distill).")
flags.DEFINE_float("finetune_lr", 1e-3, "AdamW peak learning rate of the fine-tuning.")
flags.DEFINE_float("linear_lr", 1e-2, "Adam learning rate of the linear classifier.")
flags.DEFINE_float("temperature", 1.0, "Distillation temperature.")
flags.DEFINE_float("crop_min_scale", 0.5, "Augmentation of every row: the supcon recipe's crop.")
flags.DEFINE_string("model_dir", "runs/semi_supervised", "Output folder.")
flags.DEFINE_integer("seed", 0, "Random seed (the labelled subset, shuffles, initialisation).")
flags.DEFINE_integer("verbose", 2, "Keras verbosity.")
flags.mark_flag_as_required("pretrained")


def zoo_name():
    """The zoo entry's name of --pretrained zoo:<name>, else None."""
    return FLAGS.pretrained[len("zoo:"):] if FLAGS.pretrained.startswith("zoo:") else None


def load_pretrained():
    """A fresh copy of the pretrained (encoder, head or None)."""
    if zoo_name() is not None:
        return sct.zoo.load(zoo_name()), None
    model = keras.models.load_model(FLAGS.pretrained)
    if isinstance(model, sct.models.ContrastiveModel):
        return model.encoder, model.head
    return sct.encoders.as_encoder(model), None


def fit(model, data, epochs, lr, adam=False, labels=True):
    steps = epochs * int(data.cardinality())
    schedule = (keras.optimizers.schedules.CosineDecay(lr, steps) if adam else
                sct.optimizers.warmup_cosine(lr, total_steps=steps,
                                             warmup_steps=min(steps // 20, steps - 1)))
    optimizer = (keras.optimizers.Adam(schedule) if adam
                 else keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    if labels:
        model.compile(optimizer=optimizer, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    else:
        model.compile(optimizer=optimizer)
    start = time.time()
    model.fit(data, epochs=epochs, verbose=FLAGS.verbose)
    return time.time() - start


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    unknown = sorted(set(FLAGS.rows) - {"ce", "linear", "finetune", "distill"})
    if unknown:
        raise app.UsageError(f"--rows takes ce, linear, finetune, distill. Received: {unknown}")
    if "distill" in FLAGS.rows and "finetune" not in FLAGS.rows:
        raise app.UsageError("--rows distill needs finetune (the teacher).")
    if zoo_name() is not None:
        sct.zoo.get(zoo_name())                           # an unknown name fails here
        if FLAGS.rows != ["linear"]:
            raise app.UsageError("--pretrained zoo:<name> runs the linear row only (a zoo "
                                 "entry is a frozen SavedModel): pass --rows linear. "
                                 f"Received: --rows {','.join(FLAGS.rows)}")
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    split = "train" if FLAGS.train_size is None else f"train[:{FLAGS.train_size}]"
    train = sct.data.load(FLAGS.dataset, split, data_dir=FLAGS.data_dir)
    labelled, _ = sct.data.few_labels(train, fraction=FLAGS.fraction,
                                      per_class=FLAGS.per_class, seed=FLAGS.seed)
    labelled = labelled.cache()
    size = int(labelled.cardinality())
    image_shape = tuple(train.element_spec[0].shape)
    classes = sct.data.num_classes(FLAGS.dataset)
    subset = sct.data.batches(labelled, min(FLAGS.batch_size, size), training=True,
                              seed=FLAGS.seed)
    everything = sct.data.batches(train.map(lambda x, y: x), FLAGS.batch_size, training=True,
                                  seed=FLAGS.seed)
    test_split = "test" if FLAGS.test_size is None else f"test[:{FLAGS.test_size}]"
    test = sct.data.batches(sct.data.load(FLAGS.dataset, test_split, data_dir=FLAGS.data_dir),
                            256, training=False)

    def augmenter():
        return sct.augment.supcon(image_shape, seed=FLAGS.seed,
                                  crop_scale=(FLAGS.crop_min_scale, 1.0))

    def accuracy(model):
        return sct.evaluation.classifier_accuracy(model, test)["overall"]

    results = {}

    def report(row, model, seconds):
        results[row] = {"test_top1": accuracy(model), "seconds": seconds}
        print(f"{row}: test top-1 {100 * results[row]['test_top1']:.2f}% ({seconds:.0f} s)",
              flush=True)

    if "ce" in FLAGS.rows:
        encoder, _ = load_pretrained()
        model = sct.models.CrossEntropyClassifier(keras.models.clone_model(encoder), classes,
                                                  augmenter=augmenter())
        report("ce", model, fit(model, subset, FLAGS.subset_epochs, FLAGS.lr))
    if "linear" in FLAGS.rows:
        encoder, _ = load_pretrained()
        model = sct.models.LinearClassifier(encoder, classes)
        report("linear", model, fit(model, subset, FLAGS.subset_epochs, FLAGS.linear_lr,
                                    adam=True))
    if "finetune" in FLAGS.rows:
        encoder, head = load_pretrained()
        teacher = sct.models.FineTuneClassifier(encoder, classes, head=head,
                                                head_layers=FLAGS.head_layers,
                                                augmenter=augmenter())
        report("finetune", teacher, fit(teacher, subset, FLAGS.subset_epochs, FLAGS.finetune_lr))
    if "distill" in FLAGS.rows:
        # The student: the teacher's architecture (encoder and kept head layers), from scratch.
        encoder, head = load_pretrained()
        if head is not None:
            head = sct.heads.ProjectionHead.from_config(head.get_config())
            head.build((None, encoder.output_shape[-1]))
        student = sct.models.FineTuneClassifier(keras.models.clone_model(encoder), classes,
                                                head=head, head_layers=FLAGS.head_layers)
        model = sct.models.DistillationModel(teacher, student, temperature=FLAGS.temperature,
                                             augmenter=augmenter())
        report("distill", student, fit(model, everything, FLAGS.distill_epochs, FLAGS.lr,
                                       labels=False))
    sct.export.write_json({"flags": {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}, "labelled": size,
                           "results": results},
                          os.path.join(FLAGS.model_dir, "semi_supervised.json"), indent=1,
                          default=str)
    print(f"{size} labelled examples ({FLAGS.dataset})")
    print("| row | test top-1 | seconds |\n| --- | --- | --- |")
    for row, r in results.items():
        print(f"| {row} | {100 * r['test_top1']:.2f}% | {r['seconds']:.0f} |")


if __name__ == "__main__":
    app.run(main)
