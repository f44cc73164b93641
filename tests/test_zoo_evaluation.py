"""The evaluation module and the model zoo: registry, verified loading from the
repository, a cache or a file:// URL, corrupted archives, names, and the CLI."""

import contextlib
import io
import os
import shutil
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf import zoo
from supcon_tf.zoo.__main__ import main as zoo_cli
from tests import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"


# --- evaluation ---------------------------------------------------------------

def clusters(n, dim=8, classes=3, spread=0.3, seed=0):
    """Samples `n` points around fixed class centres (the same for every seed)."""
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * 2
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    return (centres[y] + spread * rng.normal(size=(n, dim))).astype("float32"), y


def test_linear_probe_learns_and_is_deterministic():
    x, y = clusters(600)
    xt, yt = clusters(300, seed=1)
    first = sct.evaluation.linear_probe(x, y, xt, yt, steps=200)
    again = sct.evaluation.linear_probe(x, y, xt, yt, steps=200)
    assert first == again
    assert first["top1"] > 0.95
    # Shuffled test labels: the same probe must drop to chance.
    shuffled = sct.evaluation.linear_probe(x, y, xt, np.random.default_rng(5).permutation(yt),
                                           steps=200)
    assert shuffled["top1"] < 0.6


def test_linear_probe_is_not_fooled_by_feature_scale():
    x, y = clusters(600)
    xt, yt = clusters(300, seed=1)
    scaled = sct.evaluation.linear_probe(1e-3 * x, y, 1e-3 * xt, yt, steps=200)
    assert scaled["top1"] > 0.95


def test_knn_accuracy():
    x, y = clusters(500)
    xt, yt = clusters(200, seed=1)
    assert sct.evaluation.knn_accuracy(x, y, xt, yt, k=5) > 0.95
    # Each test point is a training point: k=1 is exact.
    assert sct.evaluation.knn_accuracy(x, y, x[:50], y[:50], k=1) == 1.0
    assert sct.evaluation.knn_accuracy(x, y, xt, (yt + 1) % 3, k=5) < 0.05


def test_evaluation_errors():
    x, y = clusters(20)
    with pytest.raises(ValueError, match="same length"):
        sct.evaluation.linear_probe(x, y[:10], x, y)
    with pytest.raises(ValueError, match="integer class ids"):
        sct.evaluation.knn_accuracy(x, y.astype("float32"), x, y)
    with pytest.raises(ValueError, match="Received: k=0"):
        sct.evaluation.knn_accuracy(x, y, x, y, k=0)
    with pytest.raises(ValueError, match="steps"):
        sct.evaluation.linear_probe(x, y, x, y, steps=0)
    with pytest.raises(ValueError, match=r"\[n, dim\]"):
        sct.evaluation.knn_accuracy(x[0], y, x, y)
    with pytest.raises(ValueError, match=".png"):
        sct.evaluation.embedding_plot(x, y, "plot.jpg")


def test_embed_arrays_and_datasets():
    encoder = tiny.encoder((8, 8, 1))
    images = np.random.default_rng(0).uniform(0, 255, size=(10, 8, 8, 1)).astype("float32")
    z = sct.evaluation.embed(encoder, images, batch_size=4)
    assert z.shape == (10, 32)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(10, "int64")))
    np.testing.assert_allclose(sct.evaluation.embed(encoder, labelled, batch_size=3), z,
                               atol=1e-5)
    np.testing.assert_allclose(sct.evaluation.embed(encoder, labelled.batch(6)), z, atol=1e-5)


def test_embedding_plot(tmp_path):
    x, y = clusters(200)
    path = sct.evaluation.embedding_plot(x, y, str(tmp_path / "e.png"), title="t",
                                         class_names=["a", "b", "c"])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["e.png"]


# --- the zoo ------------------------------------------------------------------

def test_registry_lists_the_methods_on_one_encoder():
    entries = zoo.list()
    names = [e["name"] for e in entries]
    assert names == sorted(names)
    by_method = {e["method"]: e for e in entries}
    assert {"supcon", "simclr", "ce"} <= set(by_method)
    # One encoder: ResNet-18 with 64-d features, at width 0.125, or a network
    # per signal at the width that gives the same features side by side (CMC).
    for e in entries:
        signals = len(e.get("recipe", {}).get("model", {}).get("signals", ()))
        assert (e["encoder"], e["embedding_dim"]) == ("resnet18", 64), e["name"]
        assert e["width"] * max(signals, 1) == 0.125, e["name"]
    for entry in entries:
        # Named by the method, by the loss option it was trained with
        # (fashion_mnist_resnet18_hcl: SimCLR with --loss hcl), or by its
        # config file (fashion_mnist_resnet18_infomin: SimCLR with InfoMin's
        # augmentation, configs/fashion_mnist/infomin.py).
        variants = {entry["method"],
                    entry.get("training_flags", {}).get("loss", entry["method"]),
                    os.path.splitext(os.path.basename(entry.get("config", "")))[0]}
        assert entry["name"] in {f"{entry['dataset']}_{entry['encoder']}_{v}" for v in variants}
        for key in zoo.REQUIRED + ("parameters", "linear_top1", "knn_top1", "epochs",
                                   "batch_size", "wall_seconds", "command",
                                   "preprocessing"):
            assert key in entry, (entry["name"], key)
        folder = os.path.join(ROOT, "zoo", entry["name"])
        archive = os.path.join(folder, entry["archive"])
        assert zoo.sha256(archive) == entry["sha256"]
        assert os.path.getsize(archive) < 5e6
        assert os.path.isfile(os.path.join(folder, "README.md"))
        assert os.path.isfile(os.path.join(folder, "embeddings.png"))
        assert entry["command"].startswith("python examples/")


@pytest.mark.parametrize("name", [e["name"] for e in zoo.list()])
def test_load_every_zoo_model(name, tmp_path):
    model = zoo.load(name, cache=str(tmp_path))
    entry = zoo.get(name)
    images = np.random.default_rng(0).integers(0, 256, size=(3, *entry["input_shape"]))
    z = model(images.astype("uint8"))
    assert tuple(z.shape) == (3, entry["embedding_dim"])
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(model(images.astype("float32")), z, atol=1e-6)
    assert model.zoo_entry["sha256"] == entry["sha256"]


@pytest.fixture
def small_archive(tmp_path, exported_encoder):
    """An exported encoder packed like the zoo's archives, registered under a
    temporary name."""
    encoder, saved = exported_encoder
    archive = tmp_path / "tiny_model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(saved, arcname="savedmodel")
    entry = dict(method="supcon", dataset="fashion_mnist", encoder="tiny_encoder",
                 input_shape=[8, 8, 1], embedding_dim=32, archive="tiny_model.tar.gz",
                 sha256=zoo.sha256(archive))
    yield encoder, archive, entry
    zoo.unregister("tiny_model")


def test_load_from_cache(small_archive, tmp_path):
    encoder, archive, entry = small_archive
    cache = tmp_path / "cache"
    (cache / "tiny_model").mkdir(parents=True)
    shutil.copy(archive, cache / "tiny_model" / archive.name)
    zoo.register("tiny_model", **entry)
    model = zoo.load("tiny_model", cache=str(cache))
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 1)).astype("float32")
    want = tf.math.l2_normalize(encoder(x, training=False), axis=-1).numpy()
    np.testing.assert_allclose(model(x), want, atol=1e-5)


def test_load_from_file_url(small_archive, tmp_path):
    _, archive, entry = small_archive
    cache = tmp_path / "cache"
    zoo.register("tiny_model", url=archive.as_uri(), **entry)
    model = zoo.load("tiny_model", cache=str(cache))
    assert (cache / "tiny_model" / archive.name).is_file()  # downloaded into the cache
    assert model(np.zeros((1, 8, 8, 1), "uint8")).shape == (1, 32)
    # Second load: from the cache, even with the URL gone.
    archive.unlink()
    assert zoo.load("tiny_model", cache=str(cache)) is not None


def test_corrupted_archive_raises_and_loads_nothing(small_archive, tmp_path):
    _, archive, entry = small_archive
    cache = tmp_path / "cache"
    (cache / "tiny_model").mkdir(parents=True)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (cache / "tiny_model" / archive.name).write_bytes(bytes(data))
    zoo.register("tiny_model", **entry)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        zoo.load("tiny_model", cache=str(cache))
    assert os.listdir(cache / "tiny_model") == [archive.name]  # nothing extracted


def test_bad_download_raises_and_is_removed(small_archive, tmp_path):
    _, archive, entry = small_archive
    cache = tmp_path / "cache"
    entry = dict(entry, sha256="0" * 64)
    zoo.register("tiny_model", url=archive.as_uri(), **entry)
    with pytest.raises(ValueError):
        zoo.load("tiny_model", cache=str(cache))
    leftovers = [] if not (cache / "tiny_model").exists() else [
        p for p in os.listdir(cache / "tiny_model") if not p.startswith(".")]
    assert not any(p.endswith(".tar.gz") or len(p) == 16 for p in leftovers), leftovers


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "Fashion", "", "a__b", "_x",
                                  "x.tar.gz", None, 3])
def test_names_are_validated(name):
    with pytest.raises(ValueError, match="Received: name="):
        zoo.load(name)


def test_unknown_name_and_missing_archive(tmp_path):
    with pytest.raises(ValueError, match="Unknown zoo model"):
        zoo.load("no_such_model")
    zoo.register("nowhere_model", method="supcon", dataset="fashion_mnist", encoder="x",
                 input_shape=[8, 8, 1], embedding_dim=4, archive="nowhere.tar.gz",
                 sha256="0" * 64)
    try:
        with pytest.raises(FileNotFoundError, match="no URL"):
            zoo.load("nowhere_model", cache=str(tmp_path))
    finally:
        zoo.unregister("nowhere_model")
    with pytest.raises(ValueError, match="archive"):
        zoo.register("bad_model", method="supcon", dataset="d", encoder="e",
                     input_shape=[1, 1, 1], embedding_dim=1, archive="../x.tar.gz",
                     sha256="0" * 64)


def run_cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = zoo_cli(list(argv))
    return code, out.getvalue()


def test_cli_list():
    code, out = run_cli("list")
    assert code == 0
    for entry in zoo.list():
        assert entry["name"] in out
        assert f"{100 * entry['linear_top1']:.2f}%" in out


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="needs Debian's dataset-fashion-mnist")
def test_cli_eval_on_a_subset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPCON_TF_CACHE", str(tmp_path))
    name = next(e["name"] for e in zoo.list() if e["method"] == "supcon")
    code, out = run_cli("eval", name, "--train_size", "2000", "--test_size", "500")
    assert code == 0
    # Progress on stderr, stage by stage, while it works.
    said = capsys.readouterr().err
    for stage in ("embedding 2000 training and 500 test images", "linear probe", "kNN",
                  "clustering"):
        assert stage in said, said
    assert "a subset" in out and "recorded" in out
    linear = float(out.split("linear top-1")[1].split("%")[0])
    knn = float(out.split("kNN top-1")[1].split("%")[0])
    # 2,000 reference images of a trained encoder: far above chance (10%).
    assert linear > 70 and knn > 70, out
    # Clustering the 500 test embeddings into 10: well above chance too.
    clustered = float(out.split("clustering    accuracy")[1].split("%")[0])
    nmi = float(out.split("NMI")[1].split()[0])
    assert clustered > 40 and 0.3 < nmi <= 1.0, out


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="needs Debian's dataset-fashion-mnist")
def test_cli_eval_scores_a_saved_encoder(tmp_path):
    """`eval PATH.keras`: the zoo's protocols on an encoder saved as
    pretrain.py saves it, the numbers `zoo.evaluate` gives; a missing file
    and --dataset on a zoo name are errors."""
    keras.utils.set_random_seed(0)
    encoder = sct.encoders.resnet18((28, 28, 1), width=0.0625)
    path = str(tmp_path / "encoder.keras")
    sct.export.save_model(encoder, path)
    code, out = run_cli("eval", path, "--train_size", "300", "--test_size", "200")
    assert code == 0, out
    want = zoo.evaluate(encoder, train_size=300, test_size=200)
    assert f"linear top-1  {100 * want['linear_top1']:6.2f}%" in out, out
    assert f"kNN top-1     {100 * want['knn_top1']:6.2f}%" in out, out
    assert f"NMI {want['nmi']:.3f}" in out and "recorded" not in out, out
    assert run_cli("eval", str(tmp_path / "missing.keras"))[0] == 2
    supcon = next(e["name"] for e in zoo.list() if e["method"] == "supcon")
    assert run_cli("eval", supcon, "--dataset", "mnist")[0] == 2


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="needs Debian's dataset-fashion-mnist")
def test_mice_entry_serves_its_own_clustering(tmp_path, monkeypatch):
    """MiCE's gate clusters from the published archive's projection: the
    CLI prints them beside the recorded value; entries of other methods, or
    exported without the head, refuse."""
    monkeypatch.setenv("SUPCON_TF_CACHE", str(tmp_path))
    name = next(e["name"] for e in zoo.list() if e["method"] == "mice")
    code, out = run_cli("eval", name, "--train_size", "500", "--test_size", "1000")
    assert code == 0
    got = float(out.split("own clustering accuracy")[1].split("%")[0])
    recorded = 100 * zoo.get(name)["own_clustering"]["accuracy"]
    assert f"recorded {recorded:6.2f}%" in out
    # 1,000 of the 10,000 test images: near the recorded value, far above chance.
    assert abs(got - recorded) < 5 and got > 50, out
    # The model card (examples/export.py's) states the recorded scores.
    own = zoo.get(name)["own_clustering"]
    card = open(os.path.join(ROOT, "zoo", name, "README.md")).read()
    assert f"{recorded:.2f}% / {own['nmi']:.3f} / {own['ari']:.3f}" in card
    supcon = next(e["name"] for e in zoo.list() if e["method"] == "supcon")
    with pytest.raises(ValueError, match="no clustering of its own"):
        zoo.own_clustering(supcon)
    entry = {k: v for k, v in zoo.get(name).items() if k != "name"}
    zoo.register("headless_mice", **{**entry, "has_projection": False})
    try:
        with pytest.raises(ValueError, match="--projection"):
            zoo.own_clustering("headless_mice")
    finally:
        zoo.unregister("headless_mice")


def test_frechet_distance_is_the_gaussians_distance():
    """Against scipy's matrix square root, and its two simplest cases."""
    import scipy.linalg
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) * 2.0 + 1.0
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = mu @ mu + np.trace(ca + cb - 2.0 * np.real(scipy.linalg.sqrtm(ca @ cb)))
    assert sct.evaluation.frechet_distance(a, b) == pytest.approx(want, rel=1e-4)
    assert sct.evaluation.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)
    assert sct.evaluation.frechet_distance(a, a + 3.0) == pytest.approx(5 * 9.0, rel=1e-3)
    with pytest.raises(ValueError, match="same dim"):
        sct.evaluation.frechet_distance(a, b[:, :4])


def test_load_serves_the_feature_map_where_exported(small_archive, tmp_path):
    """`load(output="feature_map")`: the encoder's last map from an archive
    exported with it; an archive without one says what it has."""
    encoder, archive, entry = small_archive
    saved = sct.export.export_encoder(encoder, tmp_path / "savedmodel", feature_map=True)
    (tmp_path / "map").mkdir()
    with_map = tmp_path / "map" / "tiny_model.tar.gz"
    with tarfile.open(with_map, "w:gz") as tar:
        tar.add(saved, arcname="savedmodel")
    cache = tmp_path / "cache"
    (cache / "tiny_model").mkdir(parents=True)
    shutil.copy(with_map, cache / "tiny_model" / with_map.name)
    zoo.register("tiny_model", **{**entry, "sha256": zoo.sha256(with_map)})
    model = zoo.load("tiny_model", output="feature_map", cache=str(cache))
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 8, 8, 1)).astype("float32")
    want = sct.dense.feature_map(encoder)(x, training=False).numpy()
    np.testing.assert_allclose(model(x), want, atol=1e-5)
    plain = tmp_path / "plain"
    (plain / "tiny_model").mkdir(parents=True)
    shutil.copy(archive, plain / "tiny_model" / archive.name)
    zoo.register("tiny_model", **entry)
    with pytest.raises(ValueError, match="feature_map"):
        zoo.load("tiny_model", output="feature_map", cache=str(plain))
