"""The hardening issue's cases, each reproduced: no silent wrong answers,
nothing lost on a kill, verified means verified, clear errors."""

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf import data, zoo
from supcon_tf.losses import SupConLoss, supcon_loss
from tests.reference import supcon_reference
from tests import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Y = np.array([0, 0, 1, 1])

# -- 1. a NaN is never a zero loss ---------------------------------------------------

PATHS = [dict(), dict(variant="in"), dict(contrast_mode="one"), dict(positives_cap=1),
         dict(fused=False), dict(denominator="one_positive"),
         dict(denominator="only_negatives"), dict(block_size=2)]


@pytest.mark.parametrize("options,labels", [
    (o, kind) for o in PATHS for kind in ("ids", "one_hot", "none")
    if not (kind == "one_hot" and "block_size" in o)])      # block_size takes class ids
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings_give_non_finite_loss(options, labels, bad):
    z = np.random.default_rng(0).random((4, 2, 8)).astype("float32")
    z[3, 1, 0] = bad
    y = {"ids": Y, "one_hot": np.eye(2, dtype="float32")[Y], "none": None}[labels]
    assert np.isnan(supcon_loss(y, z, **options)).all()
    keras_options = {k: v for k, v in options.items() if k != "fused"}
    assert np.isnan(SupConLoss(**keras_options)(y, z))
    # Finite inputs: finite, as before.
    z[3, 1, 0] = 0.5
    assert np.isfinite(supcon_loss(y, z, **options)).all()


def test_terminate_on_nan_fires():
    x = np.random.default_rng(0).random((8, 2, 4)).astype("float32")
    x[0, 0, 0] = np.nan
    inputs = keras.Input((2, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="sgd", loss=SupConLoss(variant="in"))
    history = model.fit(x, np.arange(8) % 2, batch_size=8, epochs=3, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])


# -- 2. labels that are neither class ids nor 0/1 ------------------------------------

@pytest.mark.parametrize("y", [
    np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]], "float32"),   # smoothed
    np.array([[0, 1], [0, 2], [1, 1], [1, 2]]),                               # [class, domain]
    np.array([0.5, 0.5, 1.5, 1.0], "float32"),                                # fractional ids
])
@pytest.mark.parametrize("fused", [True, False])
def test_labels_that_are_not_ids_or_0_1_raise(y, fused):
    z = np.random.default_rng(1).normal(size=(4, 2, 8)).astype("float32")
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match="multi-hot|whole"):
        supcon_loss(y, z, fused=fused)
    graph = tf.function(lambda y, z: supcon_loss(y, z, fused=fused))
    with pytest.raises(tf.errors.InvalidArgumentError):
        graph(tf.constant(y), tf.constant(z))


def test_whole_number_float_ids_and_0_1_multi_hot_are_fine():
    z = np.random.default_rng(1).normal(size=(4, 2, 8)).astype("float32")
    want = supcon_reference(Y, z)
    np.testing.assert_allclose(supcon_loss(Y.astype("float32") * 3, z), want, rtol=1e-5)
    np.testing.assert_allclose(supcon_loss(np.eye(2)[Y], z), want, rtol=1e-5)


# -- 3. the label kind does not change with the trace ---------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_column_ids_in_a_graph_with_unknown_second_dim_equal_eager(fused):
    z = np.random.default_rng(2).normal(size=(4, 2, 8)).astype("float32")
    y = np.array([[0], [0], [1], [1]], "int32")
    graph = tf.function(lambda y, z: supcon_loss(y, z, fused=fused), input_signature=[
        tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, None], tf.float32)])
    want = supcon_reference(y, z)
    np.testing.assert_allclose(graph(y, z), want, rtol=1e-5)
    np.testing.assert_allclose(supcon_loss(y, z, fused=fused), want, rtol=1e-5)
    hot = np.eye(2, dtype="int32")[y[:, 0]]
    np.testing.assert_allclose(graph(hot, z), want, rtol=1e-5)   # same graph, multi-hot


# -- 4. one unlabelled view -----------------------------------------------------------

def test_unlabelled_single_view_is_an_error():
    z2 = np.random.default_rng(3).normal(size=(8, 16)).astype("float32")   # [2B, dim]
    for call in (lambda: SupConLoss()(None, z2), lambda: supcon_loss(None, z2),
                 lambda: SupConLoss()(None, z2[:, None])):
        with pytest.raises(ValueError, match=r"\[batch, views, dim\]"):
            call()
    # With labels one view is a valid (supervised) loss.
    assert np.isfinite(SupConLoss()(np.arange(8) % 2, z2))


# -- 10. clear errors ------------------------------------------------------------------

def test_bad_labels_dims_and_numbers():
    z = np.random.default_rng(4).normal(size=(4, 2, 8)).astype("float32")
    for y in (np.array(["a", "a", "b", "b"]), np.array([True, True, False, False])):
        with pytest.raises(TypeError, match="y_true"):
            SupConLoss()(y, z)
        with pytest.raises(TypeError, match="y_true"):
            supcon_loss(y, z)
    with pytest.raises(ValueError, match=r"y_pred.shape=\(4, 2, 0\)"):
        SupConLoss()(Y, np.zeros((4, 2, 0), "float32"))
    with pytest.raises(ValueError, match=r"y_pred.shape=\(0, 2, 8\)"):
        SupConLoss()(Y[:0], np.zeros((0, 2, 8), "float32"))
    for t in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            SupConLoss(temperature=t)
    loss = SupConLoss(temperature=np.float32(0.1), positives_cap=np.int64(3))
    assert loss.get_config()["temperature"] == pytest.approx(0.1)
    assert type(loss.get_config()["positives_cap"]) is int
    assert np.isfinite(loss(Y, z))
    encoder = tiny.encoder((8, 8, 1))
    clf = sct.models.LinearClassifier(encoder, num_classes=np.int64(10))
    assert clf.num_classes == 10 and type(clf.get_config()["num_classes"]) is int


# -- 11. uneven batches under several replicas ----------------------------------------

def _small_model():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                keras.layers.BatchNormalization(),
                                keras.layers.GlobalAveragePooling2D()])
    return sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(8, hidden_dims=(8,)))


def test_uneven_numpy_batches_under_mirrored(strategy):
    rng = np.random.default_rng(5)
    views = rng.uniform(0, 1, size=(33, 2, 8, 8, 1)).astype("float32")   # last batch of 1
    y = rng.integers(0, 3, size=33)
    with strategy.scope():
        model = _small_model()
        model.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match="1 of 33 samples are left out"):
        history = model.fit(views, y, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    with pytest.raises(ValueError, match="batch_size` must be divisible by 2"):
        model.fit(views[:32], y[:32], batch_size=7, verbose=0)
    with pytest.raises(ValueError, match="last batch of 1"):
        model.evaluate(views, y, batch_size=8, verbose=0)
    ds = data.batches(tf.data.Dataset.from_tensor_slices((views, y)), 8, training=False)
    with pytest.raises(ValueError, match="drop_remainder=True"):
        model.evaluate(ds, verbose=0)
    assert np.isfinite(model.evaluate(views[:32], y[:32], batch_size=8, verbose=0)).all()


# -- 12. data ------------------------------------------------------------------------

def _write_idx_dir(directory, n=10):
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        for kind, shape in (("images", (n, 28, 28)), ("labels", (n,))):
            array = rng.integers(0, 10, size=shape).astype(np.uint8)
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(os.path.join(directory, f"{split}-{kind}-idx{array.ndim}-ubyte.gz"),
                           "wb") as f:
                f.write(header + array.tobytes())


def test_data_errors(tmp_path):
    _write_idx_dir(str(tmp_path))
    for split in ("train[50%:10%]", "train[5:5]", "test[8:3]"):
        with pytest.raises(ValueError, match="empty or backwards"):
            data.load("mnist", split, data_dir=str(tmp_path))
    assert len(list(data.load("mnist", "train[2:5]", data_dir=str(tmp_path)))) == 3
    with pytest.raises(ValueError, match="Unknown dataset 'fashon_mnist'.*fashion_mnist"):
        data.load("fashon_mnist", "train")
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.load("fashion_mnist", "train", data_dir=str(tmp_path / "missing"))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])            # a truncated download
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated"):
        data.load("mnist", "train", data_dir=str(tmp_path))


def test_tfds_path_with_a_prepared_local_dataset(tmp_path):
    """The TFDS path, end to end without network: a dataset prepared locally
    from arrays loads through `data.load`, and what TFDS downloads need
    (etils.epath, importlib_resources) is installed."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import importlib_resources  # noqa: F401
    from etils import epath  # noqa: F401
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 1)).astype(np.uint8)
    labels = rng.integers(0, 3, size=6)
    split = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="supcon_local_test", version="1.0.0", data_dir=str(tmp_path),
        split_datasets={"train": split}, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)}))
    ds = data.load("supcon_local_test", "train[:4]", data_dir=str(tmp_path), download=False)
    got = list(ds)
    assert len(got) == 4 and got[0][0].dtype == tf.uint8 and got[0][1].dtype == tf.int64
    np.testing.assert_array_equal(np.stack([g[0] for g in got]), images[:4])
    np.testing.assert_array_equal([int(g[1]) for g in got], labels[:4])


# -- 8, 13. the zoo verifies what it loads -------------------------------------------

@pytest.fixture
def registered(tmp_path, exported_encoder):
    encoder, saved = exported_encoder
    archive = tmp_path / "cache" / "tiny_model" / "tiny_model.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(saved, arcname="savedmodel")
    entry = dict(method="supcon", dataset="fashion_mnist", encoder="tiny_encoder",
                 input_shape=[8, 8, 1], embedding_dim=32, archive=archive.name,
                 sha256=zoo.sha256(archive))
    zoo.register("tiny_model", **entry)
    yield encoder, archive, entry, str(tmp_path / "cache")
    zoo.unregister("tiny_model")


def test_zoo_replaced_extraction_is_not_loaded(registered, tmp_path):
    encoder, archive, entry, cache = registered
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 1)).astype("float32")
    want = zoo.load("tiny_model", cache=cache)(x).numpy()
    # Someone replaces the extracted SavedModel with another model.
    other = sct.export.export_encoder(keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32)]),
        tmp_path / "other")
    extracted = zoo.saved_model_path("tiny_model", cache=cache)
    shutil.rmtree(extracted)
    shutil.copytree(other, extracted)
    with pytest.warns(UserWarning, match="differs from its verified archive"):
        got = zoo.load("tiny_model", cache=cache)(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("python_filter", [True, False], ids=["filter_data", "no_filter"])
@pytest.mark.parametrize("member", ["../outside.txt", "/abs.txt", "link"])
def test_zoo_archive_with_a_member_outside_its_folder_is_refused(
        member, python_filter, registered, exported_encoder, tmp_path, monkeypatch):
    """An archive that passes its sha256 but holds a path out of its folder or
    a link is refused by name, with or without Python's `filter="data"`
    (Pythons before 3.10.12 / 3.11.4 have none), and nothing is written."""
    if not python_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    _, archive, entry, cache = registered
    with tarfile.open(archive, "w:gz") as tar:       # the archive again, one member more
        tar.add(exported_encoder[1], arcname="savedmodel")
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    zoo.register("tiny_model", **dict(entry, sha256=zoo.sha256(archive)))
    what = "a link" if member == "link" else "a path outside its folder"
    with pytest.raises(ValueError, match=f"'tiny_model' holds {what} \\({member!r}\\)"):
        zoo.load("tiny_model", cache=cache)
    assert not any(p.name == "outside.txt" for p in tmp_path.rglob("*"))
    assert os.listdir(archive.parent) == [archive.name]


def test_zoo_truncated_archive_names_the_model(registered):
    _, archive, entry, cache = registered
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    zoo.register("tiny_model", **dict(entry, sha256=zoo.sha256(archive)))
    with pytest.raises(ValueError, match="'tiny_model'.*truncated or corrupt"):
        zoo.load("tiny_model", cache=cache)


def test_zoo_model_keras_file_needs_unsafe_mode_and_the_alternative(registered, tmp_path):
    _, _, _, cache = registered
    model = zoo.load("tiny_model", cache=cache)
    path = str(tmp_path / "zoo_model.keras")
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path)
    x = np.zeros((1, 8, 8, 1), "float32")
    np.testing.assert_allclose(keras.models.load_model(path, safe_mode=False)(x), model(x),
                               atol=1e-6)
    # The documented alternative: the verified SavedModel folder itself.
    layer = keras.layers.TFSMLayer(zoo.saved_model_path("tiny_model", cache=cache),
                                   call_endpoint="serving_default")
    np.testing.assert_allclose(layer(x)["embedding"], model(x), atol=1e-6)


# -- 9. export -----------------------------------------------------------------------

def test_export_overwrite_is_safe(tmp_path):
    encoder = tiny.encoder((8, 8, 1))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a SavedModel"):
        sct.export.export_encoder(encoder, precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    path = tmp_path / "sm"
    sct.export.export_encoder(encoder, path)
    mode = os.stat(path).st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o777 & ~mask
    # What a killed export leaves: a temporary folder, and an overwrite killed
    # between its two renames (the old export moved aside, nothing at path).
    (tmp_path / ".sm.tmp-abc123").mkdir()
    os.rename(path, tmp_path / ".sm.old-xyz")
    other = tmp_path / "other"
    sct.export.export_encoder(encoder, other)              # unrelated: untouched
    sct.export.export_encoder(encoder, path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["other", "precious", "sm"]


def test_save_model_never_leaves_half_a_file(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = tmp_path / "m.keras"
    sct.export.save_model(model, path)
    before = path.read_bytes()

    class Boom(keras.Model):
        def save(self, *args, **kwargs):
            with open(args[0], "wb") as f:
                f.write(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sct.export.save_model(Boom(), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.keras"]


# -- 16. quiet entry points (README snippets: tests/test_docs.py) -----------------------

def test_quiet_import_drops_only_tensorflows_start_up_lines(tmp_path):
    # A module that writes to file descriptor 2 as TensorFlow's C++ logging does.
    (tmp_path / "noisy.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called "
        "(fake 1)\\n')\n"
        "os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on (fake 2)\\n')\n"
        "os.write(2, b'E0000 something the user must see\\n')\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import supcon_tf; "
            "supcon_tf._import_quietly('noisy'); print('after', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tail = proc.stderr[proc.stderr.rindex("E0000"):]
    assert tail == "E0000 something the user must see\nafter\n"
    assert "(fake" not in proc.stderr


# -- XLA:CPU's YNNPACK race (TensorFlow 2.21) -------------------------------------------

def test_xla_ynn_guard_is_set_only_where_it_is_known_to_be_needed():
    from supcon_tf import _xla_flags
    assert _xla_flags.needs_guard("2.21.0", {})
    assert _xla_flags.needs_guard("2.21.3", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    # Older XLA aborts on an unknown flag; newer is not known to need it.
    assert not _xla_flags.needs_guard("2.20.0", {})
    assert not _xla_flags.needs_guard("2.22.0", {})
    # The user's choice wins, and there is an opt-out.
    assert not _xla_flags.needs_guard(
        "2.21.0", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=reduce"})
    assert not _xla_flags.needs_guard("2.21.0", {"SUPCON_TF_KEEP_XLA_FLAGS": "1"})
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert _xla_flags.apply("2.21.0", env) and not _xla_flags.apply("2.21.0", env)
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x " + _xla_flags.FLAG
    # In this process (imported before any XLA compilation):
    flags = os.environ.get("XLA_FLAGS", "")
    assert (_xla_flags.FLAG in flags) == tf.__version__.startswith("2.21.")


# -- regularisation losses count once ---------------------------------------------------

def test_layer_regularisation_is_added_once_and_not_to_the_logged_loss():
    # Keras's compute_loss adds the layers' losses to the compiled loss; the
    # train step adds them too (additional_losses). They must count once.
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(10.0),
                               kernel_initializer="ones")
    encoder = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    model = sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(4, batch_norm=False))
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.random.default_rng(0).normal(size=(8, 2, 4, 4, 1)).astype("float32")
    logged = model.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0]
    pure = float(SupConLoss()(None, model(x)))
    regularisation = float(tf.add_n(model.losses))
    assert regularisation == pytest.approx(10.0 * 16 * 8, rel=1e-6)   # L2(10) of ones
    assert logged == pytest.approx(pure, rel=1e-5)           # the contrastive loss alone
    out = model.forward(tf.constant(x), True)
    total = model.contrastive_loss(None, None, out, None, True) + model.additional_losses()
    assert float(total) == pytest.approx(pure + regularisation, rel=1e-5)
