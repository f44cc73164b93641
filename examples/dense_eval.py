"""The dense downstream task: a 1 x 1 convolution on a frozen encoder's last
feature map, segmentation masks derived from Fashion-MNIST, mean IoU.

    python examples/dense_eval.py --encoder_path runs/pixpro/encoder.keras
    python examples/dense_eval.py --zoo fashion_mnist_resnet18_simclr

The masks (`supcon_tf.dense.segmentation_masks`): every pixel above 32 takes
its image's class + 1, every other pixel is background 0 (11 classes). The
probe (`supcon_tf.dense.dense_probe`): each channel of the map standardised
with the training maps' statistics, a 1 x 1 convolution, bilinear
upsampling to the image, per-pixel cross-entropy, Adam. A zoo entry's
encoder is rebuilt from its recipe with its weights (`zoo.load_keras`), so
its feature map can be read. Writes `dense_eval.json` to --model_dir.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_string("encoder_path", None, "An encoder saved by examples/pretrain.py.")
flags.DEFINE_string("zoo", None, "A zoo entry's name instead of --encoder_path.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (supcon_tf.data.load).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_integer("train_size", None, "Use only the first N training images.")
flags.DEFINE_integer("test_size", None, "Score only the first N test images.")
flags.DEFINE_integer("epochs", 5, "Passes of the probe over the training images.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("lr", 1e-2, "Adam's learning rate.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("model_dir", None, "Output folder (default: next to the encoder, or "
                    "runs/<zoo name>/dense).")
flags.register_multi_flags_validator(
    ["encoder_path", "zoo"], lambda f: (f["encoder_path"] is None) != (f["zoo"] is None),
    message="Pass exactly one of --encoder_path and --zoo.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    if FLAGS.zoo is not None:
        encoder = sct.zoo.load_keras(FLAGS.zoo)
        model_dir = FLAGS.model_dir or os.path.join("runs", FLAGS.zoo, "dense")
    else:
        encoder = keras.models.load_model(FLAGS.encoder_path)
        model_dir = FLAGS.model_dir or os.path.join(os.path.dirname(FLAGS.encoder_path),
                                                    "dense")
    split = "train" if FLAGS.train_size is None else f"train[:{FLAGS.train_size}]"
    test_split = "test" if FLAGS.test_size is None else f"test[:{FLAGS.test_size}]"
    train_x, train_y = sct.data.load_arrays(FLAGS.dataset, split, data_dir=FLAGS.data_dir)
    test_x, test_y = sct.data.load_arrays(FLAGS.dataset, test_split, data_dir=FLAGS.data_dir)
    classes = sct.data.num_classes(FLAGS.dataset) + 1
    start = time.time()
    result = sct.dense.dense_probe(
        encoder, train_x, sct.dense.segmentation_masks(train_x, train_y), test_x,
        sct.dense.segmentation_masks(test_x, test_y), classes, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, lr=FLAGS.lr, seed=FLAGS.seed)
    seconds = time.time() - start
    os.makedirs(model_dir, exist_ok=True)
    names = ("encoder_path", "zoo", "dataset", "train_size", "test_size", "epochs",
             "batch_size", "lr", "seed")
    sct.export.write_json({"flags": {n: FLAGS[n].value for n in names},
                           "wall_seconds": seconds, **result},
                          os.path.join(model_dir, "dense_eval.json"), indent=1, default=str)
    print(f"dense probe: mean IoU {100 * result['miou']:.2f}%, pixel accuracy "
          f"{100 * result['pixel_accuracy']:.2f}% (feature map {result['feature_shape']}, "
          f"{FLAGS.epochs} epochs, {seconds:.0f} s)")


if __name__ == "__main__":
    app.run(main)
