"""Cross-modal contrast, CLIP-style, on Fashion-MNIST: images against
sentences that describe their class, then zero-shot classification from the
sentences' embeddings alone.

    python examples/crossmodal.py --epochs 5 --out_dir runs/crossmodal
    python examples/crossmodal.py --epochs 5 --held_out_classes 5,9 --out_dir runs/crossmodal_zs

Two towers: a ResNet-18 (`--width`) on the images and a bag-of-words text
encoder (word embeddings, a mean over the words, a linear layer) on the
sentences, each with a linear projection to `--dim`; a learned logit scale
(`supcon_tf.heads.LogitScale`, 1 / 0.07 at the start, clamped at 100); the
symmetric loss `supcon_tf.losses.CLIPLoss` with the class as the label (two
images of one class share their sentence's class: they are not negatives of
each other). Each image is paired with one of its class's training
sentences, drawn at random each step.

Each class has eight sentences built from templates; six train, two are
held out. Zero-shot: every test image goes to the class whose held-out
sentences' mean embedding is nearest (cosine); no classifier is trained on
images. With `--held_out_classes`, the images and sentences of those
classes are left out of training altogether, and their test images are
classified among all ten classes' held-out sentences (and among the
held-out classes only): how far the text tower's words carry to classes
it never saw. Writes `crossmodal.json` to --out_dir.
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
flags.DEFINE_integer("epochs", 5, "Passes over the training images.")
flags.DEFINE_integer("batch_size", 128, "Pairs per step.")
flags.DEFINE_integer("train_size", None, "Use the first N training images (None: all).")
flags.DEFINE_float("width", 0.125, "ResNet-18 width multiplier of the image tower.")
flags.DEFINE_integer("dim", 64, "Joint embedding dimension.")
flags.DEFINE_float("lr", 2e-3, "AdamW learning rate.")
flags.DEFINE_list("held_out_classes", [], "Class ids left out of training (zero-shot on "
                  "unseen classes), e.g. 5,9.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("out_dir", "runs/crossmodal", "Output folder.")

# What each Fashion-MNIST class is, in words the classes share: sleeves,
# feet, warmth, buttons ...
PHRASES = [
    "a short sleeve top for the upper body",
    "long trousers for the legs",
    "a warm knitted top with long sleeves for the upper body",
    "a one piece dress for the body and the legs",
    "a warm long coat with long sleeves and buttons for the upper body",
    "an open summer shoe with straps for the foot",
    "a top with long sleeves buttons and a collar for the upper body",
    "a low sports shoe with laces for the foot",
    "a bag with handles carried in the hand",
    "a high boot that covers the foot and the ankle",
]
TEMPLATES = ["a photo of {}", "a picture of {}", "an image of {}", "this is {}",
             "a small photo of {}", "a grey photo of {}",
             # held out: zero-shot reads only these
             "a drawing of {}", "there is {} in the picture"]
TRAIN_TEMPLATES = 6


def sentences(classes, templates):
    """`[classes, templates]` strings."""
    return np.array([[t.format(PHRASES[c]) for t in templates] for c in classes])


class CrossModalModel(keras.Model):
    """Two towers, a logit scale, CLIP's loss on (image, class sentence) pairs."""

    def __init__(self, image_tower, text_tower, scale, train_texts, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_tower, self.text_tower, self.scale = image_tower, text_tower, scale
        self.train_texts = tf.constant(train_texts)           # [classes, templates] tokens
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.clip_loss = sct.losses.CLIPLoss()

    def train_step(self, data):
        images, labels = data
        pick = keras.random.randint(tf.shape(labels), 0, self.train_texts.shape[1],
                                    seed=self.seed_generator, dtype="int32")
        tokens = tf.gather_nd(self.train_texts, tf.stack([labels, pick], axis=1))
        with tf.GradientTape() as tape:
            pairs = tf.stack([self.image_tower(images, training=True),
                              self.text_tower(tokens, training=True)], axis=1)
            scale = self.scale(None)
            loss = self.clip_loss(labels, pairs, logit_scale=scale)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {"loss": loss, "logit_scale": scale}


def build(vectorize, vocabulary, width, dim):
    image_in = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image_in)
    x = sct.encoders.resnet18((28, 28, 1), width=width)(x)
    image_tower = keras.Model(image_in, keras.layers.Dense(dim)(x), name="image_tower")
    tokens = keras.Input((None,), dtype="int64")
    words = keras.layers.Embedding(vocabulary, 64, mask_zero=True)(tokens)
    text = keras.layers.GlobalAveragePooling1D()(words)
    text = keras.layers.Dense(dim)(keras.layers.Dense(128, activation="relu")(text))
    text_tower = keras.Model(tokens, text, name="text_tower")
    return image_tower, text_tower


def zero_shot(image_tower, text_tower, vectorize, images, labels, classes):
    """Top-1 of nearest held-out-sentence class means among `classes`."""
    texts = sentences(classes, TEMPLATES[TRAIN_TEMPLATES:])
    text_embed = text_tower.predict(vectorize(texts.reshape(-1)), verbose=0)
    text_embed = text_embed / np.linalg.norm(text_embed, axis=1, keepdims=True)
    prototypes = text_embed.reshape(len(classes), -1, text_embed.shape[-1]).mean(1)
    image_embed = sct.evaluation.embed(image_tower, images)
    predicted = np.asarray(classes)[np.argmax(image_embed @ prototypes.T, axis=1)]
    return float(np.mean(predicted == labels))


def main(_):
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    x, y = sct.data.load_arrays("fashion_mnist", "train", FLAGS.data_dir)
    xt, yt = sct.data.load_arrays("fashion_mnist", "test", FLAGS.data_dir)
    held_out = sorted(int(c) for c in FLAGS.held_out_classes)
    if any(not 0 <= c < 10 for c in held_out) or len(held_out) >= 9:
        raise SystemExit(f"--held_out_classes must be a few ids in 0..9. Received: {held_out}")
    seen = [c for c in range(10) if c not in held_out]
    keep = np.isin(y, seen)
    x, y = x[keep], y[keep]
    if FLAGS.train_size:
        x, y = x[:FLAGS.train_size], y[:FLAGS.train_size]

    vectorize = keras.layers.TextVectorization(output_mode="int")
    vectorize.adapt(sentences(range(10), TEMPLATES).reshape(-1))   # the words, not the pairs
    train_texts = vectorize(sentences(range(10), TEMPLATES[:TRAIN_TEMPLATES]).reshape(-1))
    train_texts = tf.reshape(train_texts, [10, TRAIN_TEMPLATES, -1]).numpy()
    image_tower, text_tower = build(vectorize, vectorize.vocabulary_size(), FLAGS.width,
                                    FLAGS.dim)
    scale = sct.heads.LogitScale()
    model = CrossModalModel(image_tower, text_tower, scale, train_texts, FLAGS.seed)
    model.compile(optimizer=keras.optimizers.AdamW(FLAGS.lr))
    dataset = (tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
               .shuffle(len(x), seed=FLAGS.seed).batch(FLAGS.batch_size, drop_remainder=True)
               .prefetch(2))
    start = time.time()
    history = model.fit(dataset, epochs=FLAGS.epochs, verbose=2, shuffle=False).history
    result = {"epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "train_images": len(x),
              "held_out_classes": held_out, "train_seconds": round(time.time() - start, 1),
              "final_loss": float(history["loss"][-1]),
              "logit_scale": float(history["logit_scale"][-1])}
    seen_test = np.isin(yt, seen)
    result["zero_shot_top1_seen_classes"] = zero_shot(
        image_tower, text_tower, vectorize, xt[seen_test], yt[seen_test], list(range(10)))
    if held_out:
        unseen = ~seen_test
        result["zero_shot_top1_unseen_among_all"] = zero_shot(
            image_tower, text_tower, vectorize, xt[unseen], yt[unseen], list(range(10)))
        result["zero_shot_top1_unseen_among_unseen"] = zero_shot(
            image_tower, text_tower, vectorize, xt[unseen], yt[unseen], held_out)
        result["chance_unseen_among_unseen"] = 1.0 / len(held_out)
    sct.export.write_json(result, os.path.join(FLAGS.out_dir, "crossmodal.json"), indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
