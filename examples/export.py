"""Turn a finished training run into a zoo entry (or just a SavedModel).

    python examples/export.py --run_dir runs/supcon --name fashion_mnist_resnet18_supcon

Reads the run's `model.keras` (encoder + projection head, from
examples/pretrain.py) or `encoder.keras` (examples/train_ce.py) and its
`pretrain.json` (the recipe and its config file) / `train_ce.json`, then:

1. exports the encoder (with its projection head's output unless
   `--noprojection`) as a SavedModel (`supcon_tf.export.export_encoder`) and
   packs it as `zoo/<name>/<name>.tar.gz`, refusing an archive over
   `--max_archive_mb` (5 MB) before anything is written;
2. registers it, loads it back through `supcon_tf.zoo.load` (sha256 checked)
   and measures linear-probe and kNN top-1 on the test set exactly as
   `python -m supcon_tf.zoo eval <name>` does;
3. writes the embedding plot `zoo/<name>/embeddings.png`, the model card
   `zoo/<name>/README.md` (with the recipe and the command that reproduces
   it: the config file and each value the run overrode), and the entry in
   `supcon_tf/zoo/registry.json`.

With `--savedmodel_only=PATH` it only writes the SavedModel to PATH.
"""

import os

# Our entry points keep TensorFlow's C++ start-up lines quiet (set the
# variable yourself to see them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip
import io
import json
import shutil
import tarfile
import tempfile

# First: it imports TensorFlow without the start-up lines the level above hides.
import supcon_tf as sct  # noqa: E402,I001
from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf


FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Output folder of pretrain.py or train_ce.py.")
flags.DEFINE_string("name", None, "Zoo name, <dataset>_<encoder>_<method>.")
flags.DEFINE_string("command", "", "The exact command that trained the run (default: "
                    "pretrain.py with the run's config file and its overrides).")
flags.DEFINE_string("data_dir", None, "Optional folder with TFDS data or IDX files.")
flags.DEFINE_string("zoo_dir", "zoo", "The repository's zoo folder.")
flags.DEFINE_string("registry", None,
                    "Registry file to add the entry to (default: supcon_tf/zoo/registry.json).")
flags.DEFINE_string("savedmodel_only", None, "Only export a SavedModel to this path.")
flags.DEFINE_bool("overwrite", False, "Replace an existing entry / SavedModel.")
flags.DEFINE_bool("projection", True, "Also serve the projection head's output (`projection`). "
                  "--noprojection exports the encoder alone: a wide head (Barlow Twins' and "
                  "VICReg's 1024-1024-1024 is 2.2M parameters, 8 MB) would outweigh it.")
flags.DEFINE_bool("feature_map", False, "Also serve the feature map the encoder's "
                  "global pooling reads (`feature_map`), for dense tasks.")
flags.DEFINE_float("max_archive_mb", 5.0, "The largest zoo archive to write, in MB (the "
                   "repository keeps zoo artifacts small); a larger one is an error and "
                   "nothing is written.")
flags.DEFINE_integer("eval_train_size", None, "Measure the card's accuracies with only the "
                     "first N training images (default: all; for quick checks, not the zoo).")
flags.DEFINE_integer("eval_test_size", None, "Measure them on only the first N test images "
                     "(default: all).")
flags.mark_flag_as_required("run_dir")
flags.register_validator("max_archive_mb", lambda mb: mb > 0,
                         message="--max_archive_mb must be a positive number of MB")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
PREPROCESSING = ("raw pixel values in [0, 255] (uint8 or float32); the model scales "
                 "them to [0, 1] itself")


def describe(entry):
    """`(label, title)` of a zoo entry's method (`supcon_tf.methods.describe`)."""
    if entry["method"] == "ce":
        return "ce", "Cross-entropy baseline"
    return sct.methods.describe(entry["recipe"])


def training_command(config_file, recipe, run_dir, script="pretrain.py"):
    """The command of `recipe`: its config file and an override for every
    value that differs from the file's."""
    base = sct.methods.recipe_from_file(config_file)
    overrides = sct.methods.overrides(base, recipe, resolved=script == "pretrain.py")
    return " ".join([f"python examples/{script}", f"--config {config_file}", *overrides,
                     f"--model_dir {run_dir}"])


def load_run(run_dir):
    """(encoder, head or None, record dict, method) of a training run (the
    record's `config` is the recipe of examples/pretrain.py)."""
    for record_name, method in (("pretrain.json", None), ("train_ce.json", "ce")):
        path = os.path.join(run_dir, record_name)
        if os.path.isfile(path):
            with open(path) as f:
                record = json.load(f)
            break
    else:
        raise FileNotFoundError(f"No pretrain.json or train_ce.json in {run_dir}")
    if "config" not in record:
        raise ValueError(f"{path} has no recipe (`config`): a run of an older script; "
                         "train it again with --config.")
    if method is None:
        method = record["config"]["method"]
        model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
        return model.encoder, model.head, record, method
    encoder = keras.models.load_model(os.path.join(run_dir, "encoder.keras"))
    return encoder, None, record, method


def served_shape(encoder, dataset, data_dir=None):
    """The image shape the SavedModel serves: the encoder's, or for an encoder
    of any input size (multi-crop SwAV) the dataset's."""
    declared = tuple(encoder.input_shape[1:])
    if all(d is not None for d in declared):
        return declared
    return tuple(sct.data.load(dataset, "test[:1]", data_dir=data_dir).element_spec[0].shape)


def feature_map_shape(encoder, image_shape):
    """`[h, w, channels]` of the served feature map for `image_shape` images
    (read from a batch: an encoder built for any image size declares None)."""
    images = np.zeros((1, *image_shape), "float32")
    return [int(d) for d in sct.dense.feature_map(encoder)(images).shape[1:]]


def pack(saved_model):
    """The bytes of a reproducible .tar.gz of the SavedModel folder (as
    `savedmodel/`)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            for root, dirs, files in os.walk(saved_model):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    full = os.path.join(root, name)
                    info = tar.gettarinfo(full, arcname=os.path.join(
                        "savedmodel", os.path.relpath(full, saved_model)))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    if info.isfile():
                        with open(full, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    return buffer.getvalue()


def write_atomic(path, content):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _eval_sets(entry):
    """Which images the card's accuracies come from."""
    sizes = entry.get("eval_sizes")
    if not sizes:
        return "the full training set (60,000) and test set (10,000)"
    return (f"the first {sizes[0]:,} training images and the first {sizes[1]:,} test images "
            "(a quick check: `--eval_train_size` / `--eval_test_size`)")


def _encoder_text(entry, short=False):
    """The encoder, or a multi-view recipe's encoder per signal (CMC)."""
    signals = ((entry.get("recipe") or {}).get("model") or {}).get("signals") or ()
    if short:
        return (f"{len(signals)} x " if len(signals) > 1 else "") + \
            f"{entry['encoder']} w{entry['width']}"
    if len(signals) > 1:
        return (f"{len(signals)} x {entry['encoder']} (one per signal: {', '.join(signals)}), "
                f"width {entry['width']} each")
    return f"{entry['encoder']}, width {entry['width']}"


def model_card(name, entry):
    lines = [
        f"# {name}", "",
        f"{entry['method_long']} encoder trained on {entry['dataset']}.", "",
        "| | |", "| --- | --- |",
        f"| method | {entry['method']} |",
        f"| dataset | {entry['dataset']} |",
        f"| encoder | {_encoder_text(entry)}, {entry['parameters']:,} parameters |",
        f"| input | `{entry['input_shape']}`, {entry['preprocessing']} |",
        f"| embedding | {entry['embedding_dim']}-d, L2-normalised (`embedding`)"
        + (", plus the projection head's output (`projection`)" if entry["has_projection"]
           else "")
        + (f", and the feature map its global pooling reads (`feature_map`"
           + (f", {' x '.join(map(str, entry['feature_map_shape']))}"
              if entry.get("feature_map_shape") else "") + ")"
           if entry.get("has_feature_map") else "") + " |",
        f"| linear-eval top-1 (test) | {100 * entry['linear_top1']:.2f}% |",
        f"| kNN top-1 (test, k={sct.zoo.KNN['k']}) | {100 * entry['knn_top1']:.2f}% |",
        *([f"| its own clustering (test): accuracy / NMI / ARI | "
           f"{100 * entry['own_clustering']['accuracy']:.2f}% / "
           f"{entry['own_clustering']['nmi']:.3f} / {entry['own_clustering']['ari']:.3f}, "
           f"{sct.zoo.OWN_CLUSTERING[entry['method']]} |"]
          if entry.get("own_clustering") else []),
        f"| epochs | {entry['epochs']} |",
        f"| batch size | {entry['batch_size']} |",
        f"| training wall time | {entry['wall_seconds']:.0f} s on the project's 2-core CPU "
        "machine (machines of this kind are shared and noisy; docs/RESULTS.md says what "
        "else ran) |",
        f"| archive | `{entry['archive']}` ({entry['archive_bytes'] / 1e6:.2f} MB) |",
        f"| sha256 | `{entry['sha256']}` |", "",
        "Training command (from the repository root"
        + (f"; the recipe is `{entry['config']}`" if entry.get("config") else "") + "):",
        "", "```bash", entry["command"], "```", "",
        "Accuracies: embeddings of " + _eval_sets(entry) + "; linear probe = softmax regression on standardised embeddings, "
        f"full-batch Adam from zero, {sct.zoo.LINEAR_PROBE['steps']} steps "
        "(`supcon_tf.evaluation.linear_probe`); kNN = cosine, "
        f"k={sct.zoo.KNN['k']}, vote weights exp(sim/{sct.zoo.KNN['temperature']}) "
        "(`supcon_tf.evaluation.knn_accuracy`). Reproduce them with", "",
        "```bash", f"python -m supcon_tf.zoo eval {name}", "```", "",
        "Use it:", "", "```python", "import supcon_tf as sct",
        f"encoder = sct.zoo.load(\"{name}\")        # checks the sha256",
        "embeddings = encoder(images)   # [batch, 28, 28, 1] raw pixels -> [batch, dim]",
        "", "# or with plain TensorFlow, after extracting the archive:",
        "import tensorflow as tf",
        "loaded = tf.saved_model.load(\"savedmodel\")",
        "out = loaded.signatures[\"serving_default\"](images=tf.cast(images, tf.float32))",
        "out[\"embedding\"]", "```", "",
        "Test embeddings, first two principal components:", "",
        "![embeddings](embeddings.png)", ""]
    if entry.get("recipe"):
        lines += [f"Recipe: `{json.dumps(entry['recipe'], sort_keys=True)}`", ""]
    if entry.get("training_flags"):
        lines += ["Values the run recorded: "
                  f"`{json.dumps(entry['training_flags'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def zoo_index(registry):
    """zoo/README.md: one row per registered model."""
    lines = [
        "# The supcon_tf model zoo", "",
        "Pretrained encoders as TensorFlow SavedModels (`<name>/<name>.tar.gz`), each with",
        "a model card (`<name>/README.md`) and an embedding plot. The registry is",
        "`supcon_tf/zoo/registry.json`; this page is written from it by",
        "`examples/export.py`.", "",
        "```python", "import supcon_tf as sct", "sct.zoo.list()",
        "encoder = sct.zoo.load(\"fashion_mnist_resnet18_supcon\")   # sha256-verified",
        "```", "",
        "```bash", "python -m supcon_tf.zoo list",
        "python -m supcon_tf.zoo eval fashion_mnist_resnet18_supcon   # recompute the accuracies",
        "```", "",
        "| name | method | encoder | parameters | linear top-1 | kNN top-1 | epochs | batch | "
        "training time | archive |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in sorted(registry.items()):
        lines.append(
            f"| [{name}]({name}/README.md) | {describe(e)[0]} | "
            f"{_encoder_text(e, short=True)} | "
            f"{e['parameters']:,} | {100 * e['linear_top1']:.2f}% | {100 * e['knn_top1']:.2f}% | "
            f"{e['epochs']} | {e['batch_size']} | {e['wall_seconds']:.0f} s | "
            f"{e['archive_bytes'] / 1e6:.2f} MB |")
    lines += ["", "Accuracies are on the Fashion-MNIST test set (10,000 images) with the full",
              "training set as reference; see a model card for the exact protocol and the",
              "command that trained the model.", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    # TensorFlow's INFO lines (through absl and its own logger) drown the progress.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    encoder, head, record, method = load_run(FLAGS.run_dir)
    if not FLAGS.projection:
        head = None
    image_shape = served_shape(encoder, record["config"]["data"]["dataset"], FLAGS.data_dir)
    if FLAGS.savedmodel_only:
        path = sct.export.export_encoder(encoder, FLAGS.savedmodel_only, head=head,
                                         overwrite=FLAGS.overwrite, image_shape=image_shape,
                                         feature_map=FLAGS.feature_map)
        print(f"SavedModel written to {path}")
        return
    if not FLAGS.name:
        raise app.UsageError("--name is required (or use --savedmodel_only).")
    name = sct.zoo.check_name(FLAGS.name)
    registry_path = FLAGS.registry or sct.zoo.REGISTRY_PATH
    registry = {}
    if os.path.exists(registry_path):
        with open(registry_path) as f:
            registry = json.load(f)
    if name in registry and not FLAGS.overwrite:
        raise app.UsageError(f"{name} is already in the registry; pass --overwrite.")
    folder = os.path.join(FLAGS.zoo_dir, name)
    archive = os.path.join(folder, f"{name}.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        saved = sct.export.export_encoder(encoder, os.path.join(tmp, "savedmodel"), head=head,
                                          image_shape=image_shape,
                                          feature_map=FLAGS.feature_map)
        packed = pack(saved)
    if len(packed) > FLAGS.max_archive_mb * 1e6:
        raise app.UsageError(
            f"The archive would be {len(packed) / 1e6:.2f} MB, more than --max_archive_mb="
            f"{FLAGS.max_archive_mb:g}" + (f"; its projection head has {head.count_params():,} "
                                           "parameters: pass --noprojection to export the "
                                           "encoder alone" if head is not None else "")
            + ". Nothing was written.")
    write_atomic(archive, packed)
    recipe = record["config"]
    command = FLAGS.command or training_command(
        record["config_file"], recipe, FLAGS.run_dir,
        "train_ce.py" if method == "ce" else "pretrain.py")
    entry = {
        "method": method,
        "dataset": recipe["data"]["dataset"],
        "encoder": recipe["encoder"]["name"],
        "width": recipe["encoder"]["width"],
        "epochs": recipe["epochs"],
        "batch_size": recipe["batch_size"],
        "config": record["config_file"],
        "recipe": recipe,
        "command": command,
        "parameters": int(encoder.count_params()),
        "input_shape": list(image_shape),
        "preprocessing": PREPROCESSING,
        "embedding_dim": int(encoder.output_shape[-1]),
        "has_projection": head is not None,
        **({"has_feature_map": True,
            "feature_map_shape": feature_map_shape(encoder, image_shape)}
           if FLAGS.feature_map else {}),
        "wall_seconds": record["wall_seconds"],
        "archive": os.path.basename(archive),
        "archive_bytes": os.path.getsize(archive),
        "sha256": sct.zoo.sha256(archive),
        "url": None,
    }
    entry["method_long"] = describe(entry)[1]
    sct.zoo.register(name, **entry)
    with tempfile.TemporaryDirectory() as cache:
        # Load it the way users will, from a cache holding only this archive
        # (--zoo_dir need not be the repository's zoo folder).
        os.makedirs(os.path.join(cache, name))
        shutil.copy(archive, os.path.join(cache, name, entry["archive"]))
        model = sct.zoo.load(name, cache=cache)
        result = sct.zoo.evaluate(model, dataset=entry["dataset"],
                                  train_size=FLAGS.eval_train_size,
                                  test_size=FLAGS.eval_test_size)
        if method in sct.zoo.OWN_CLUSTERING and head is not None:
            own = sct.zoo.own_clustering(name, test_size=FLAGS.eval_test_size, cache=cache)
            entry["own_clustering"] = {key: own[key] for key in ("accuracy", "nmi", "ari")}
    if FLAGS.eval_train_size is not None or FLAGS.eval_test_size is not None:
        entry["eval_sizes"] = [int(result["train_size"]), int(result["test_size"])]
    entry["linear_top1"] = result["linear_top1"]
    entry["knn_top1"] = result["knn_top1"]
    sct.evaluation.embedding_plot(
        result["test_embeddings"], result["test_labels"],
        os.path.join(folder, "embeddings.png"), class_names=FASHION_MNIST_CLASSES,
        title=f"{name}: test embeddings (PCA)")
    write_atomic(os.path.join(folder, "README.md"), model_card(name, entry))
    registry[name] = entry
    write_atomic(registry_path, json.dumps(registry, indent=1, sort_keys=True) + "\n")
    write_atomic(os.path.join(FLAGS.zoo_dir, "README.md"), zoo_index(registry))
    print(f"{name}: linear top-1 {100 * entry['linear_top1']:.2f}%, kNN top-1 "
          f"{100 * entry['knn_top1']:.2f}%, archive {entry['archive_bytes'] / 1e6:.2f} MB, "
          f"sha256 {entry['sha256']}"
          + (f"; its own clustering {100 * entry['own_clustering']['accuracy']:.2f}% "
             f"(NMI {entry['own_clustering']['nmi']:.3f})" if "own_clustering" in entry else ""))


if __name__ == "__main__":
    app.run(main)
