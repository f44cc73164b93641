"""GraphCL on graphs built from Fashion-MNIST images, with a linear probe on
the graph embeddings against a randomly initialised GIN and a supervised one.

    python examples/graphcl.py --epochs 20 --out_dir runs/graphcl

Each image becomes a graph (`supcon_tf.graphs.image_graphs`: a node per lit
4 x 4 patch, its 16 pixels and its position as features, edges between
8-neighbouring patches; up to 49 nodes). GraphCL (You et al., NeurIPS
2020): two augmentations of each graph (`--aug1`, `--aug2`, ratio
`--aug_ratio`; the paper found node dropping and subgraphs best on
superpixel graphs), a GIN encoder (`supcon_tf.graphs.GIN`, `--units`,
`--layers`), a two-layer projection head, and GraphCL's loss
(`supcon_tf.losses.GraphCLLoss`, T = 0.2, one direction, as the official
code), Adam. Then the GIN's readouts of the training and test graphs (no
augmentation) go to a linear probe (`supcon_tf.evaluation.linear_probe`),
beside the same probe on a GIN with random weights and on a GIN trained
with cross-entropy for the same epochs (its own classifier's test top-1
too). Writes `graphcl.json` to --out_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import time

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 20, "Passes over the training graphs (both trainings).")
flags.DEFINE_integer("batch_size", 256, "Graphs per step.")
flags.DEFINE_integer("train_size", None, "Use the first N training images (None: all).")
flags.DEFINE_enum("aug1", "subgraph", list(sct.graphs.AUGMENTATIONS) + ["none"], "First view.")
flags.DEFINE_enum("aug2", "drop_nodes", list(sct.graphs.AUGMENTATIONS) + ["none"],
                  "Second view.")
flags.DEFINE_float("aug_ratio", 0.2, "Share of nodes / edges each augmentation changes.")
flags.DEFINE_integer("units", 32, "GIN width.")
flags.DEFINE_integer("layers", 3, "GIN layers.")
flags.DEFINE_float("temperature", 0.2, "GraphCL's temperature.")
flags.DEFINE_float("lr", 1e-3, "Adam's learning rate.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("out_dir", "runs/graphcl", "Output folder.")


class GraphCLModel(keras.Model):
    """A GIN and a projection head trained with GraphCL's loss on two
    augmentations of each batch of graphs."""

    def __init__(self, gin, head, augmentations, ratio, loss, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.gin, self.head, self.augmentations, self.ratio = gin, head, augmentations, ratio
        self.graphcl_loss = loss
        self.seed_generator = keras.random.SeedGenerator(seed)

    def train_step(self, graphs):
        views = []
        for name in self.augmentations:
            seed = keras.random.randint((), 0, 2 ** 30, seed=self.seed_generator)
            views.append(sct.graphs.augment(graphs, name, self.ratio, seed=seed))
        with tf.GradientTape() as tape:
            z = tf.stack([self.head(self.gin(v, training=True)) for v in views], axis=1)
            loss = self.graphcl_loss(None, z)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        # Not "loss" alone: Keras reports its own (empty) loss tracker under
        # that key when a step's logs hold nothing else.
        return {"graphcl_loss": loss}


def as_graphs(arrays):
    """numpy graphs -> a dict of tensors (adjacency kept as uint8 on the host)."""
    return {"nodes": arrays["nodes"], "adjacency": arrays["adjacency"].astype(np.uint8),
            "mask": arrays["mask"]}


def to_float(graphs):
    return {**graphs, "adjacency": tf.cast(graphs["adjacency"], tf.float32)}


def readouts(gin, graphs, batch_size=1024):
    ds = tf.data.Dataset.from_tensor_slices(graphs).batch(batch_size).map(to_float)
    return np.concatenate([gin(batch, training=False).numpy() for batch in ds])


def main(_):
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    x, y = sct.data.load_arrays("fashion_mnist", "train", FLAGS.data_dir)
    xt, yt = sct.data.load_arrays("fashion_mnist", "test", FLAGS.data_dir)
    if FLAGS.train_size:
        x, y = x[:FLAGS.train_size], y[:FLAGS.train_size]
    train, test = as_graphs(sct.graphs.image_graphs(x)), as_graphs(sct.graphs.image_graphs(xt))
    batches = (tf.data.Dataset.from_tensor_slices(train).shuffle(len(x), seed=FLAGS.seed)
               .batch(FLAGS.batch_size, drop_remainder=True).map(to_float).prefetch(2))

    def gin():
        return sct.graphs.GIN(FLAGS.units, FLAGS.layers)

    result = {"epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "train_graphs": len(x),
              "views": [FLAGS.aug1, FLAGS.aug2], "aug_ratio": FLAGS.aug_ratio,
              "mean_nodes": float(train["mask"].sum(1).mean())}

    random_gin = gin()
    random_gin(to_float({k: v[:2] for k, v in train.items()}))
    width = FLAGS.units * FLAGS.layers
    model = GraphCLModel(gin(), keras.Sequential([keras.layers.Dense(width, activation="relu"),
                                                  keras.layers.Dense(width)]),
                         (FLAGS.aug1, FLAGS.aug2), FLAGS.aug_ratio,
                         sct.losses.GraphCLLoss(FLAGS.temperature), FLAGS.seed)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.lr))
    start = time.time()
    history = model.fit(batches, epochs=FLAGS.epochs, verbose=2, shuffle=False).history
    result["graphcl_seconds"] = round(time.time() - start, 1)
    result["graphcl_final_loss"] = float(history["graphcl_loss"][-1])

    supervised_gin = gin()
    inputs = {k: keras.Input(v.shape[1:], name=k) for k, v in train.items()}
    classifier = keras.Model(inputs, keras.layers.Dense(10)(supervised_gin(inputs)))
    classifier.compile(optimizer=keras.optimizers.Adam(FLAGS.lr), metrics=["accuracy"],
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labelled = (tf.data.Dataset.from_tensor_slices((train, y)).shuffle(len(x), seed=FLAGS.seed)
                .batch(FLAGS.batch_size).map(lambda g, label: (to_float(g), label)).prefetch(2))
    start = time.time()
    classifier.fit(labelled, epochs=FLAGS.epochs, verbose=2, shuffle=False)
    result["supervised_seconds"] = round(time.time() - start, 1)
    test_set = tf.data.Dataset.from_tensor_slices((test, yt)).batch(1024).map(
        lambda g, label: (to_float(g), label))
    result["supervised_classifier_top1"] = float(classifier.evaluate(test_set, verbose=0)[1])

    for name, encoder in (("graphcl", model.gin), ("random", random_gin),
                          ("supervised", supervised_gin)):
        probe = sct.evaluation.linear_probe(readouts(encoder, train), y,
                                            readouts(encoder, test), yt)
        result[f"probe_top1_{name}"] = probe["top1"]
    sct.export.write_json(result, os.path.join(FLAGS.out_dir, "graphcl.json"), indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
