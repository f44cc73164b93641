"""Pretrained encoders, loadable in one line and verified.

    import supcon_tf as sct
    sct.zoo.list()                                        # the entries
    encoder = sct.zoo.load("fashion_mnist_resnet18_supcon")
    embeddings = encoder(images)                           # raw uint8 / float images

    encoder = sct.zoo.load_keras("fashion_mnist_resnet18_supcon")   # its Keras layers

    python -m supcon_tf.zoo list
    python -m supcon_tf.zoo eval fashion_mnist_resnet18_supcon

    sct.zoo.evaluate(encoder)                 # linear probe, kNN, k-means of the test set
    sct.zoo.own_clustering("fashion_mnist_resnet18_mice")   # MiCE's gate clusters

Each entry of the registry (`registry.json` next to this file) names a
SavedModel archive (`<name>.tar.gz`) with its sha256, the model card's facts
(method, dataset, encoder, parameters, input spec, embedding dim, linear and
kNN top-1, epochs, batch size, wall time, training command) and optionally a
URL. `load` finds the archive in the repository's `zoo/<name>/` folder, in the
cache (`$SUPCON_TF_CACHE`, default `~/.cache/supcon_tf`), or downloads it from
the registered URL with `keras.utils.get_file`; it checks the sha256 before
anything is extracted or loaded, and raises on a mismatch.
"""

import copy
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import warnings
import zlib

import keras

from supcon_tf import _backend

REGISTRY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry.json")
_REPO_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "zoo")
_NAME = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
REQUIRED = ("method", "dataset", "encoder", "input_shape", "embedding_dim", "archive",
            "sha256")

_registered = {}


def _read_registry():
    with open(REGISTRY_PATH) as f:
        return json.load(f)


def _entries():
    entries = _read_registry()
    entries.update(_registered)
    return entries


def check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("A zoo model name is lowercase letters, digits and single "
                         "underscores (e.g. 'fashion_mnist_resnet18_supcon'). "
                         f"Received: name={name!r}")
    return name


def list():  # noqa: A001 - the zoo's public name for it
    """The zoo's entries: a list of dicts, each with its `name`, sorted by name."""
    return [dict(copy.deepcopy(entry), name=name)
            for name, entry in sorted(_entries().items())]


def get(name):
    """The registry entry (model card facts) of `name`, as a dict."""
    check_name(name)
    entries = _entries()
    if name not in entries:
        raise ValueError(f"Unknown zoo model. Available: {sorted(entries)}. "
                         f"Received: name={name!r}")
    return dict(copy.deepcopy(entries[name]), name=name)


def register(name, **entry):
    """Adds (or replaces) an entry for this process, e.g. your own encoder
    hosted at a URL. Needs the keys in `REQUIRED`; `url` is optional."""
    check_name(name)
    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise ValueError(f"A zoo entry needs {REQUIRED}. Missing: {missing}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(entry["sha256"])):
        raise ValueError("`sha256` must be 64 lowercase hex digits. "
                         f"Received: sha256={entry['sha256']!r}")
    if os.path.basename(entry["archive"]) != entry["archive"]:
        raise ValueError("`archive` must be a file name, not a path. "
                         f"Received: archive={entry['archive']!r}")
    _registered[name] = copy.deepcopy(entry)


def unregister(name):
    """Removes an entry added with `register`."""
    _registered.pop(check_name(name), None)


def cache_dir():
    """Where downloaded archives and extracted SavedModels are kept."""
    return os.environ.get("SUPCON_TF_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "supcon_tf"))


def sha256(path):
    """The sha256 hex digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, entry, name):
    got = sha256(path)
    if got != entry["sha256"]:
        raise ValueError(
            f"sha256 mismatch for zoo model {name!r}: {path} has {got}, the registry "
            f"says {entry['sha256']}. The file is corrupted or not the registered one; "
            "nothing was loaded. Delete it (or restore it from git) and try again.")
    return path


def _find_archive(name, entry, cache, cache_first=False):
    """The verified archive of `name`: the repository's zoo folder, the cache
    (first when it was passed explicitly), or a download from the registered
    URL."""
    folders = [os.path.join(_REPO_ZOO, name), os.path.join(cache, name)]
    if cache_first:
        folders.reverse()
    for folder in folders:
        path = os.path.join(folder, entry["archive"])
        if os.path.isfile(path):
            return _verify(path, entry, name)
    url = entry.get("url")
    if not url:
        raise FileNotFoundError(
            f"The archive of zoo model {name!r} ({entry['archive']}) is neither in "
            f"{os.path.join(_REPO_ZOO, name)} nor in {os.path.join(cache, name)}, and "
            "the registry has no URL for it.")
    # get_file falls back to /tmp/.keras when the cache folder does not exist.
    os.makedirs(os.path.join(cache, name), exist_ok=True)
    target = os.path.join(cache, name, entry["archive"])
    try:
        path = keras.utils.get_file(fname=entry["archive"], origin=url,
                                    file_hash=entry["sha256"], hash_algorithm="sha256",
                                    cache_dir=cache, cache_subdir=name)
    except ValueError as err:  # Keras checked the hash and kept the bad file
        if os.path.exists(target):
            os.remove(target)
        raise ValueError(f"sha256 mismatch for zoo model {name!r} downloaded from {url}: "
                         f"{err} Nothing was kept or loaded.") from err
    try:
        return _verify(path, entry, name)
    except ValueError:
        os.remove(path)  # never leave a bad download in the cache
        raise


def _archive_files(archive, name):
    """`{relative path: sha256}` of the regular files in the (verified) archive."""
    files = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    files[os.path.normpath(member.name)] = hashlib.sha256(
                        tar.extractfile(member).read()).hexdigest()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"The archive of zoo model {name!r} ({archive}) is truncated or "
                         f"corrupt ({type(err).__name__}: {err}); nothing was loaded.") from err
    return files


def _checked_members(tar, name):
    """The archive's members, if each is a folder or a regular file inside
    the extraction folder (a zoo archive holds nothing else). Python's
    `filter="data"` (3.10.12 / 3.11.4 on) refuses the same and more; this
    check also runs on Pythons without it, and names what it refused."""
    members = tar.getmembers()
    for member in members:
        path = os.path.normpath(member.name)
        if member.issym() or member.islnk():
            what = "a link"
        elif not (member.isfile() or member.isdir()):
            what = "a special file"
        elif os.path.isabs(member.name) or path == ".." or path.startswith(".." + os.sep):
            what = "a path outside its folder"
        else:
            continue
        raise ValueError(f"The archive of zoo model {name!r} holds {what} ({member.name!r}); "
                         "a zoo archive holds only folders and regular files inside its own "
                         "folder. Nothing was loaded.")
    return members


def _matches(target, files):
    """Whether the folder `target` holds exactly `files`, byte for byte."""
    found = set()
    for root, _, names in os.walk(target):
        for fname in names:
            found.add(os.path.relpath(os.path.join(root, fname), target))
    if found != set(files):
        return False
    return all(sha256(os.path.join(target, rel)) == digest for rel, digest in files.items())


def _extract(archive, name, entry, cache):
    """The SavedModel of the verified `archive`, extracted into the cache.

    What is loaded is verified too: an extraction already in the cache is
    used only if its files are byte for byte those of the archive (hashes
    computed from the archive itself, never from something on disk);
    otherwise it is extracted again, atomically (temp dir, rename)."""
    target = os.path.join(cache, name, entry["sha256"][:16])
    saved_model = os.path.join(target, "savedmodel")
    files = _archive_files(archive, name)
    if os.path.isdir(target):
        if _matches(target, files):
            return saved_model
        warnings.warn(f"The extracted copy of zoo model {name!r} in {target} differs from "
                      "its verified archive; extracting it again.", stacklevel=3)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=os.path.dirname(target))
    old = None
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _checked_members(tar, name)
                # Also Python's own check where it has one (no absolute paths,
                # no "..", no links out, no special files).
                tar.extractall(tmp, members=members, **(
                    {"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ValueError(f"The archive of zoo model {name!r} ({archive}) is truncated "
                             f"or corrupt ({type(err).__name__}: {err}); nothing was "
                             "loaded.") from err
        if not os.path.isfile(os.path.join(tmp, "savedmodel", "saved_model.pb")):
            raise ValueError(f"The archive of zoo model {name!r} holds no "
                             "savedmodel/saved_model.pb")
        if os.path.exists(target):
            old = tmp + ".old"
            os.rename(target, old)
        os.rename(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and os.path.exists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    return saved_model


def saved_model_path(name, cache=None):
    """The local path of `name`'s verified, extracted SavedModel (downloads it
    from the registered URL if needed)."""
    entry = get(name)
    archive = _find_archive(name, entry, cache or cache_dir(), cache_first=cache is not None)
    return _extract(archive, name, entry, cache or cache_dir())


def load(name, output="embedding", cache=None):
    """A Keras model mapping raw images to embeddings, from the zoo.

    The archive's sha256 is checked before anything is extracted or loaded; a
    mismatch raises `ValueError` and returns nothing. The extracted SavedModel
    in the cache is checked file by file against the archive at every load
    (a copy that differs is extracted again). The model wraps the
    SavedModel's `serving_default` signature in `keras.layers.TFSMLayer`, so it
    needs none of supcon_tf's code; `model.zoo_entry` holds the model card's
    facts.

    Saving: because it wraps a `TFSMLayer`, `model.save("x.keras")` writes a
    file that `keras.models.load_model` reloads only with `safe_mode=False`
    (Keras treats the wrapped SavedModel as arbitrary code). To keep a zoo
    model, keep its name and call `load` again, or use the SavedModel itself:
    `saved_model_path(name)` is a folder `tf.saved_model.load` and
    `keras.layers.TFSMLayer` read directly.

    Args:
        name: A name from `list()`.
        output: `"embedding"` (L2-normalised encoder features),
            `"projection"` (the projection head's output, where the export has
            one) or `"feature_map"` (the map the encoder's global pooling reads,
            its card gives the shape, where the export serves it:
            `examples/export.py --feature_map`). Defaults to
            `"embedding"`.
        cache: Cache folder, searched before the repository's zoo folder
            when given. Defaults to None (`cache_dir()`, searched after it).

    Returns:
        A `keras.Model` from images `[batch, *input_shape]` (uint8 or float,
        raw pixel values as the entry's `preprocessing` says) to `[batch, dim]`.
    """
    _backend.require_tensorflow("supcon_tf.zoo.load (the zoo's encoders are TensorFlow SavedModels)")
    if output not in ("embedding", "projection", "feature_map"):
        raise ValueError("`output` must be 'embedding', 'projection' or 'feature_map'. "
                         f"Received: output={output!r}")
    entry = get(name)
    path = saved_model_path(name, cache)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default",
                                   name=f"{name}_savedmodel")
    inputs = keras.Input(tuple(entry["input_shape"]), dtype="float32", name="images")
    outputs = layer(inputs)
    if output not in outputs:
        raise ValueError(f"Zoo model {name!r} has outputs {sorted(outputs)}. "
                         f"Received: output={output!r}")
    model = keras.Model(inputs, outputs[output], name=name)
    model.zoo_entry = entry
    return model


def load_keras(name, cache=None):
    """The entry's encoder as a Keras model of supcon_tf's, with its trained
    weights: for fine-tuning, or to read layers the SavedModel does not
    serve (`dense.feature_map`).

    The encoder is built again from the entry's recipe (`recipe`:
    `methods.build`, or the encoder alone for a cross-entropy entry), and
    the SavedModel's variables (sha256-checked as `load` checks them) are
    read into it through the SavedModel's checkpoint: every variable of the
    rebuilt encoder must be found there with its shape, or a `ValueError`
    says the recipe does not rebuild what was exported. (The projection head
    is not rebuilt: `load(name, output="projection")` serves it.)

    Args:
        name: A name from `list()`.
        cache: As `load`.

    Returns:
        A Keras model from raw images `[batch, *input_shape]` to the
        encoder's features (not normalised: `load` L2-normalises them).
    """
    _backend.require_tensorflow("supcon_tf.zoo.load_keras")
    import tensorflow as tf

    from supcon_tf import encoders as _encoders
    from supcon_tf import export as _export
    from supcon_tf import methods as _methods

    entry = get(name)
    recipe, shape = entry.get("recipe"), tuple(entry["input_shape"])
    if not recipe:
        raise ValueError(f"Zoo entry {name!r} records no recipe to rebuild its network from.")
    if recipe["method"] == "ce":
        spec = recipe["encoder"]
        encoder = _encoders.get(spec["name"], shape, width=spec["width"])
    else:
        # A memory the size of the training set (NPID's bank, PCL's cluster
        # ids) is not exported; its size only has to admit the recipe.
        size = (recipe.get("data") or {}).get("train_size") or 60000
        encoder = _methods.build(recipe, shape, num_examples=size)[0].encoder
    path = saved_model_path(name, cache)
    module = _export._Exported(encoder, None, shape)
    try:
        status = tf.train.Checkpoint(root=module).read(
            os.path.join(path, "variables", "variables"))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        raise ValueError(f"Zoo entry {name!r}: its recipe does not rebuild the exported "
                         f"encoder ({str(err)[:300]})") from None
    status.expect_partial()
    return encoder


# Earlier private names of the two above.
_check_name = check_name
_REGISTRY_PATH = REGISTRY_PATH

# The evaluations (a module of their own; `evaluate` and its settings are this
# module's API).
from supcon_tf.zoo._evaluate import (  # noqa: E402,F401
    KNN, LINEAR_PROBE, OWN_CLUSTERING, evaluate, own_clustering)
