"""A small conditional GAN on Fashion-MNIST whose discriminator conditions
on the class with ContraGAN's 2C loss, or with a projection (the baseline).

    python examples/contragan.py --discriminator contra --epochs 10 --out_dir runs/contragan
    python examples/contragan.py --discriminator projection --epochs 10 --out_dir runs/projection

Both use the same DCGAN-style generator and discriminator (28 x 28, two
strided convolutions), the hinge loss and Adam (2e-4, beta_1 0.5), one
discriminator step per generator step. `contra` (Kang & Park, NeurIPS 2020,
as StudioGAN trains it): the discriminator embeds each image (a linear layer
on its features, `--embed_dim`) and each label (a class embedding, the
proxy); its loss adds `--cond_lambda` x the 2C loss
(`supcon_tf.losses.ConditionalContrastiveLoss`, `--temperature`) of the
real images with their labels, the generator's adds that of its images with
the labels it was asked for. `projection` (Miyato & Koyama, ICLR 2018): the
adversarial output adds the inner product of a class embedding and the
features.

At the end: the Fréchet distance between features of `--eval_images`
generated images (classes balanced) and the test set's images, where the
features are the zoo's cross-entropy encoder's embeddings
(`fashion_mnist_resnet18_ce`): an FID-style number, not Inception's FID. The
same for the training images against the test images, as a floor; and the
class consistency: the share of generated images whose class, by kNN on the
same features among training images, is the class they were asked for. Writes
`samples.png` (a row per class), `generator.keras`, `discriminator.keras`
and `contragan.json` to --out_dir.
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
flags.DEFINE_enum("discriminator", "contra", ["contra", "projection"],
                  "How the discriminator conditions on the class.")
flags.DEFINE_integer("epochs", 10, "Passes over the training images.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_integer("train_size", None, "Use the first N training images (None: all 60,000).")
flags.DEFINE_integer("z_dim", 64, "Generator noise dimension.")
flags.DEFINE_integer("embed_dim", 128, "2C embedding dimension.")
flags.DEFINE_float("temperature", 1.0, "2C temperature (StudioGAN's ContraGAN: 1.0).")
flags.DEFINE_float("cond_lambda", 1.0, "Weight of the 2C loss in both players' losses.")
flags.DEFINE_float("lr", 2e-4, "Adam learning rate of both players.")
flags.DEFINE_integer("eval_images", 10000, "Generated images for the Fréchet distance.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("out_dir", "runs/contragan", "Output folder.")

CLASSES = 10


def generator(z_dim):
    z, y = keras.Input((z_dim,)), keras.Input((), dtype="int32")
    h = keras.layers.Concatenate()([z, keras.layers.Embedding(CLASSES, z_dim)(y)])
    h = keras.layers.Dense(7 * 7 * 128, use_bias=False)(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Reshape((7, 7, 128))(h)
    h = keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same", use_bias=False)(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    x = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh")(h)
    return keras.Model([z, y], x, name="generator")


def discriminator(kind, embed_dim):
    """Outputs `[adversarial logit, ...]`: with `contra` also the image's
    2C embedding and the label's proxy."""
    x, y = keras.Input((28, 28, 1)), keras.Input((), dtype="int32")
    h = keras.layers.LeakyReLU(0.2)(keras.layers.Conv2D(64, 4, strides=2, padding="same")(x))
    h = keras.layers.Conv2D(128, 4, strides=2, padding="same")(h)
    h = keras.layers.LeakyReLU(0.2)(h)
    features = keras.layers.Flatten()(h)
    adv = keras.layers.Dense(1)(features)
    if kind == "projection":
        class_vector = keras.layers.Embedding(CLASSES, features.shape[-1])(y)
        projection = keras.ops.sum(class_vector * features, axis=-1, keepdims=True)
        return keras.Model([x, y], [keras.layers.Add()([adv, projection])], name="discriminator")
    embed = keras.layers.Dense(embed_dim)(features)
    proxy = keras.layers.Embedding(CLASSES, embed_dim)(y)
    return keras.Model([x, y], [adv, embed, proxy], name="discriminator")


class ConditionalGAN(keras.Model):
    """The two players and their hinge-loss steps (plus the 2C terms)."""

    def __init__(self, gen, disc, z_dim, cond_loss=None, cond_lambda=1.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.gen, self.disc, self.z_dim = gen, disc, z_dim
        self.cond_loss, self.cond_lambda = cond_loss, cond_lambda
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compile(self, lr):
        super().compile()
        self.d_opt = keras.optimizers.Adam(lr, beta_1=0.5, beta_2=0.999)
        self.g_opt = keras.optimizers.Adam(lr, beta_1=0.5, beta_2=0.999)

    def _cond(self, outputs, labels):
        if self.cond_loss is None:
            return tf.zeros([])
        return self.cond_lambda * self.cond_loss(labels, outputs[1], proxies=outputs[2])

    def train_step(self, data):
        images, labels = data
        batch = tf.shape(images)[0]
        z = keras.random.normal((batch, self.z_dim), seed=self.seed_generator)
        fake_labels = keras.random.randint((batch,), 0, CLASSES, seed=self.seed_generator,
                                           dtype="int32")
        with tf.GradientTape() as tape:
            fake = self.gen([z, fake_labels], training=True)
            real_out = self.disc([images, labels], training=True)
            fake_out = self.disc([fake, fake_labels], training=True)
            d_adv = (tf.reduce_mean(tf.nn.relu(1.0 - real_out[0]))
                     + tf.reduce_mean(tf.nn.relu(1.0 + fake_out[0])))
            d_cond = self._cond(real_out, labels)
            d_loss = d_adv + d_cond
        grads = tape.gradient(d_loss, self.disc.trainable_weights)
        self.d_opt.apply_gradients(zip(grads, self.disc.trainable_weights))
        z = keras.random.normal((batch, self.z_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            fake = self.gen([z, fake_labels], training=True)
            fake_out = self.disc([fake, fake_labels], training=True)
            g_adv = -tf.reduce_mean(fake_out[0])
            g_cond = self._cond(fake_out, fake_labels)
            g_loss = g_adv + g_cond
        grads = tape.gradient(g_loss, self.gen.trainable_weights)
        self.g_opt.apply_gradients(zip(grads, self.gen.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss, "d_cond": d_cond, "g_cond": g_cond}


def generate(gen, z_dim, labels, seed):
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, len(labels), 500):
        y = labels[start:start + 500].astype("int32")
        z = rng.normal(size=(len(y), z_dim)).astype("float32")
        out.append(gen.predict([z, y], verbose=0))
    images = np.concatenate(out)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype("uint8")


def save_grid(images, path):
    """`images` [classes * n, 28, 28, 1], class-major: one row per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(images) // CLASSES
    grid = images[:, :, :, 0].reshape(CLASSES, n, 28, 28).transpose(0, 2, 1, 3)
    grid = grid.reshape(CLASSES * 28, n * 28)
    tmp = path + ".tmp.png"
    plt.imsave(tmp, grid, cmap="gray", vmin=0, vmax=255)
    os.replace(tmp, path)


def main(_):
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    x, y = sct.data.load_arrays("fashion_mnist", "train", FLAGS.data_dir)
    xt, yt = sct.data.load_arrays("fashion_mnist", "test", FLAGS.data_dir)
    if FLAGS.train_size:
        x, y = x[:FLAGS.train_size], y[:FLAGS.train_size]
    scaled = (x.astype("float32") / 127.5 - 1.0)
    dataset = (tf.data.Dataset.from_tensor_slices((scaled, y.astype("int32")))
               .shuffle(len(x), seed=FLAGS.seed).batch(FLAGS.batch_size, drop_remainder=True)
               .prefetch(2))
    cond = (sct.losses.ConditionalContrastiveLoss(FLAGS.temperature)
            if FLAGS.discriminator == "contra" else None)
    gen = generator(FLAGS.z_dim)
    disc = discriminator(FLAGS.discriminator, FLAGS.embed_dim)
    gan = ConditionalGAN(gen, disc, FLAGS.z_dim, cond, FLAGS.cond_lambda, FLAGS.seed)
    gan.compile(FLAGS.lr)
    start = time.time()
    history = gan.fit(dataset, epochs=FLAGS.epochs, verbose=2, shuffle=False).history
    train_s = time.time() - start

    labels = np.repeat(np.arange(CLASSES), FLAGS.eval_images // CLASSES)
    fake = generate(gen, FLAGS.z_dim, labels, FLAGS.seed + 1)
    save_grid(generate(gen, FLAGS.z_dim, np.repeat(np.arange(CLASSES), 10), FLAGS.seed + 2),
              os.path.join(FLAGS.out_dir, "samples.png"))
    encoder = sct.zoo.load("fashion_mnist_resnet18_ce")
    features = {name: sct.evaluation.embed(encoder, images, normalize=False)
                for name, images in (("fake", fake), ("test", xt),
                                     ("train", x[:len(xt)]))}
    result = {
        "discriminator": FLAGS.discriminator, "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size, "train_images": len(x),
        "frechet_distance": sct.evaluation.frechet_distance(features["fake"], features["test"]),
        "frechet_distance_train_vs_test": sct.evaluation.frechet_distance(
            features["train"], features["test"]),
        "features": "fashion_mnist_resnet18_ce embeddings (not Inception-v3)",
        # Does an image asked for class c look like class c? kNN (k = 20) of
        # its features among the training images' (the same encoder).
        "class_consistency_knn": sct.evaluation.knn_accuracy(
            features["train"], y[:len(xt)], features["fake"], labels),
        "eval_images": len(fake), "train_seconds": round(train_s, 1),
        "last_epoch": {k: float(v[-1]) for k, v in history.items()},
    }
    gen.save(os.path.join(FLAGS.out_dir, "generator.keras"))
    disc.save(os.path.join(FLAGS.out_dir, "discriminator.keras"))
    sct.export.write_json(result, os.path.join(FLAGS.out_dir, "contragan.json"), indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
