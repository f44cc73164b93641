"""SpCL's domain adaptation on a real domain shift: labelled Fashion-MNIST as
the source, unlabelled inverted Fashion-MNIST as the target.

    python examples/spcl.py --epochs 10 --out_dir runs/spcl

Source: the first --source_size training images with their labels. Target:
the next --target_size training images, transformed by --shift (`invert`:
255 - x, light garments on black become dark garments on white; `rotate`:
a quarter turn), labels hidden; the target's test set is the test split,
transformed the same way. Three encoders (ResNet-18 at --width), each trained
--epochs with AdamW and the same augmentation:

- `source_only`: `SpCLModel` on the source alone (its loss against the class
  centroids of the hybrid memory, nothing of the target);
- `spcl`: `SpCLModel` on source and target (Ge et al., NeurIPS 2020): the
  hybrid memory of source class centroids and target features, the target
  re-clustered every epoch (`SpCLClustering`: DBSCAN on the k-reciprocal
  Jaccard distance, eps 0.6, with the reliability criteria); from scratch,
  or with --spcl_from_source_only from the source-only encoder (SpCL
  starts from a pretrained backbone);
- `target_supcon`: SupCon on the target with its labels: the upper bound.

Each encoder is scored on the target's test set by a linear probe
(`supcon_tf.evaluation.linear_probe` on the normalised features) trained on
the labelled source images (what domain adaptation can use) and, as a
reference, on the labelled target training images. For `spcl`, the last
epoch's target pseudo labels are compared with the hidden labels (NMI, ARI,
clusters, outliers). Writes `spcl.json` to --out_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("source_size", 10000, "Labelled source images (the first of train).")
flags.DEFINE_integer("target_size", 10000, "Unlabelled target images (the next ones).")
flags.DEFINE_integer("test_size", None, "Target test images (None: the whole test split).")
flags.DEFINE_enum("shift", "invert", ["invert", "rotate"], "The target's transformation.")
flags.DEFINE_list("runs", ["source_only", "spcl", "target_supcon"], "Which encoders to train.")
flags.DEFINE_integer("epochs", 10, "Epochs of each training.")
flags.DEFINE_integer("batch_size", 128, "Images per step.")
flags.DEFINE_float("width", 0.125, "ResNet-18 width multiplier.")
flags.DEFINE_float("lr", 1e-3, "AdamW's peak learning rate (cosine decay).")
flags.DEFINE_float("weight_decay", 5e-4, "AdamW's weight decay (SpCL's).")
flags.DEFINE_float("eps", 0.6, "DBSCAN's radius on the Jaccard distance (SpCL's).")
flags.DEFINE_integer("k1", 30, "The Jaccard distance's reciprocal neighbours (SpCL's).")
flags.DEFINE_bool("spcl_from_source_only", False, "Start SpCL's encoder from the source-only "
                  "encoder (trained first, or read from --out_dir/source_only_encoder.keras), "
                  "as SpCL starts from a pretrained backbone; otherwise from scratch.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("out_dir", "runs/spcl", "Output folder.")

SHAPE = (28, 28, 1)


def shift(images):
    """The target domain's deterministic transformation."""
    if FLAGS.shift == "invert":
        return (255 - images).astype(np.uint8)
    return np.rot90(images, k=1, axes=(1, 2)).copy()


def optimizer(steps):
    return keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(FLAGS.lr, decay_steps=max(steps, 1)),
        weight_decay=FLAGS.weight_decay)


def encoder():
    return sct.encoders.resnet18(SHAPE, width=FLAGS.width)


def train_spcl(images, labels, num_classes, start=None):
    """SpCLModel on `images` (labels -1: unlabelled), its encoder from the
    .keras file `start` or new; returns (model, seconds, history)."""
    keras.utils.set_random_seed(FLAGS.seed)
    net = encoder() if start is None else keras.models.load_model(start)
    model = sct.models.SpCLModel(net, len(images), num_classes=num_classes,
                                 augmenter=sct.augment.supcon(SHAPE, seed=FLAGS.seed))
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices((images, labels)))
    ds = sct.data.batches(ds, FLAGS.batch_size, training=True, seed=FLAGS.seed)
    model.compile(optimizer=optimizer(FLAGS.epochs * int(ds.cardinality())))
    clustering = sct.models.SpCLClustering(images, labels, eps=FLAGS.eps, k1=FLAGS.k1)
    start = time.time()
    history = model.fit(ds, epochs=FLAGS.epochs, verbose=2, callbacks=[clustering]).history
    return model, time.time() - start, history


def train_supcon(images, labels):
    keras.utils.set_random_seed(FLAGS.seed)
    model = sct.models.SupConModel(encoder(), augmenter=sct.augment.supcon(SHAPE, seed=FLAGS.seed))
    ds = sct.data.batches(tf.data.Dataset.from_tensor_slices((images, labels)),
                          FLAGS.batch_size, training=True, seed=FLAGS.seed)
    model.compile(optimizer=optimizer(FLAGS.epochs * int(ds.cardinality())),
                  loss=sct.losses.SupConLoss(temperature=0.1))
    start = time.time()
    history = model.fit(ds, epochs=FLAGS.epochs, verbose=2).history
    return model, time.time() - start, history


def main(argv):
    del argv
    unknown = set(FLAGS.runs) - {"source_only", "spcl", "target_supcon"}
    if unknown:
        raise app.UsageError(f"--runs: unknown {sorted(unknown)}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    end = FLAGS.source_size + FLAGS.target_size
    train_x, train_y = sct.data.load_arrays("fashion_mnist", f"train[:{end}]",
                                            data_dir=FLAGS.data_dir)
    if len(train_x) < end:
        raise app.UsageError(f"--source_size + --target_size = {end} is more than the "
                             f"{len(train_x)} training images.")
    test_split = "test" if FLAGS.test_size is None else f"test[:{FLAGS.test_size}]"
    test_x, test_y = sct.data.load_arrays("fashion_mnist", test_split, data_dir=FLAGS.data_dir)
    source_x, source_y = train_x[:FLAGS.source_size], train_y[:FLAGS.source_size]
    target_x, target_y = shift(train_x[FLAGS.source_size:end]), train_y[FLAGS.source_size:end]
    test_x = shift(test_x)
    classes = 10
    record = {"flags": {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}}

    def score(name, model, seconds):
        def embed(x):
            return sct.evaluation.embed(model.encoder, x)

        s, t, test = embed(source_x), embed(target_x), embed(test_x)
        record[name] = {
            "seconds": seconds,
            "target_top1_source_probe": sct.evaluation.linear_probe(
                s, source_y, test, test_y, classes)["top1"],
            "target_top1_target_probe": sct.evaluation.linear_probe(
                t, target_y, test, test_y, classes)["top1"],
        }
        print(f"{name}: target test top-1 {100 * record[name]['target_top1_source_probe']:.2f}% "
              f"(probe on source labels), {100 * record[name]['target_top1_target_probe']:.2f}% "
              f"(probe on target labels); {seconds:.0f} s", flush=True)

    source_only = os.path.join(FLAGS.out_dir, "source_only_encoder.keras")
    if "source_only" in FLAGS.runs:
        model, seconds, _ = train_spcl(source_x, source_y, classes)
        score("source_only", model, seconds)
        sct.export.save_model(model.encoder, source_only)
    if "spcl" in FLAGS.runs:
        if FLAGS.spcl_from_source_only and not os.path.isfile(source_only):
            raise app.UsageError("--spcl_from_source_only needs the source-only encoder: add "
                                 f"source_only to --runs (or keep {source_only}).")
        images = np.concatenate([source_x, target_x])
        labels = np.concatenate([source_y, np.full(len(target_x), -1)])
        model, seconds, history = train_spcl(
            images, labels, classes, source_only if FLAGS.spcl_from_source_only else None)
        score("spcl", model, seconds)
        # The last epoch's pseudo labels of the target against its hidden labels.
        pseudo = model.memory.labels.numpy()[classes + len(source_x):]
        counts = np.bincount(np.unique(pseudo, return_inverse=True)[1])
        record["spcl"].update({
            "pseudo_label_nmi": sct.clustering.nmi(target_y, pseudo),
            "pseudo_label_ari": sct.clustering.ari(target_y, pseudo),
            "clusters": int((counts > 1).sum()), "outliers": int((counts == 1).sum()),
            "clusters_by_epoch": history.get("clusters"),
            "outliers_by_epoch": history.get("outliers"),
            "final_loss": history["loss"][-1]})
        print(f"spcl pseudo labels: {record['spcl']['clusters']} clusters, "
              f"{record['spcl']['outliers']} outliers; NMI "
              f"{record['spcl']['pseudo_label_nmi']:.3f}, ARI "
              f"{record['spcl']['pseudo_label_ari']:.3f}", flush=True)
    if "target_supcon" in FLAGS.runs:
        model, seconds, _ = train_supcon(target_x, target_y)
        score("target_supcon", model, seconds)
    sct.export.write_json(record, os.path.join(FLAGS.out_dir, "spcl.json"), indent=1,
                          default=str)


if __name__ == "__main__":
    app.run(main)
