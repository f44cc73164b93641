"""Traps found by a hostile probe and a new user's walk through the README,
each reproduced: silent wrong answers, lost runs, crashes with unclear errors."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import tiny

SHAPE = (16, 16, 1)


def _encoder(seed=0):
    keras.utils.set_random_seed(seed)
    return tiny.encoder(SHAPE)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n,) + SHAPE) * 255).astype("float32"), rng.integers(0, 3, n)


def _views(n, seed=0):
    x, y = _images(n, seed)
    return np.stack([x, x[:, :, ::-1]], axis=1), y


# -- a head without hidden layers -----------------------------------------------------

def test_head_without_hidden_layers_round_trips_and_builds_momentum_methods(tmp_path):
    head = sct.heads.ProjectionHead(8, hidden_dims=())
    head.build((None, 12))
    assert head.blocks == []
    again = sct.heads.ProjectionHead.from_config(head.get_config())
    again.build((None, 12))
    assert again.blocks == [] and again.hidden_dims == ()
    x, y = _views(8)
    model = sct.models.SupConModel(_encoder(), head=sct.heads.ProjectionHead(8, hidden_dims=()))
    model.compile(optimizer="sgd")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert len(loaded.weights) == len(model.weights)
    np.testing.assert_allclose(loaded.predict(x[:4, 0], verbose=0),
                               model.predict(x[:4, 0], verbose=0), atol=1e-5)
    for cls, kwargs in ((sct.models.MoCoModel, dict(queue_size=16, bn_groups=1)),
                        (sct.models.BYOLModel, {})):
        built = cls(_encoder(), head=sct.heads.ProjectionHead(8, hidden_dims=(),
                                                               normalize=False), **kwargs)
        assert built.head.hidden_dims == ()


# -- momentum schedules across fit calls and resumes ------------------------------------

def _byol():
    return sct.models.BYOLModel(_encoder(), head=sct.heads.byol_projector(8, 16),
                                predictor=sct.heads.byol_predictor(8, 16))


class _Momenta(keras.callbacks.Callback):
    def __init__(self, seen, stop_at_epoch=None):
        super().__init__()
        self.seen, self.stop_at_epoch = seen, stop_at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at_epoch:
            raise RuntimeError("killed")

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(self.model.current_momentum()))


def test_cosine_momentum_restarts_with_each_fit_and_continues_after_a_resume(tmp_path):
    x, _ = _views(16)
    want = [float(sct.momentum.momentum_at(s, 6, 0.99, "cosine")) for s in range(6)]
    model = _byol()
    model.compile(optimizer="sgd")
    seen = []
    model.fit(x, batch_size=8, epochs=3, verbose=0, callbacks=[_Momenta(seen)])
    model.fit(x, batch_size=8, epochs=3, verbose=0, callbacks=[_Momenta(seen)])
    np.testing.assert_allclose(seen, want + want, atol=1e-6)      # not 1.0 in the second
    # Killed after epoch 1 of 3, then resumed by BackupAndRestore: the
    # schedule goes on where it stopped.
    backup = str(tmp_path / "backup")
    seen = []
    model = _byol()
    model.compile(optimizer="sgd")
    with pytest.raises(RuntimeError, match="killed"):
        model.fit(x, batch_size=8, epochs=3, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup), _Momenta(seen, stop_at_epoch=1)])
    model = _byol()
    model.compile(optimizer="sgd")
    model.fit(x, batch_size=8, epochs=3, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup), _Momenta(seen)])
    np.testing.assert_allclose(seen, want, atol=1e-6)
    # An explicit initial_epoch continues the schedule too.
    seen = []
    model = _byol()
    model.compile(optimizer="sgd")
    model.fit(x, batch_size=8, epochs=2, verbose=0)
    model.fit(x, batch_size=8, epochs=3, initial_epoch=2, verbose=0, callbacks=[_Momenta(seen)])
    np.testing.assert_allclose(seen, want[4:], atol=1e-6)


def test_momentum_model_loads_the_variables_of_files_without_a_schedule_start():
    model = _byol()
    model.planned_steps.assign(42)
    model.load_own_variables({"0": np.int64(7)})        # a file's single own variable
    assert int(model.planned_steps) == 7 and int(model.schedule_start) == 0


# -- NPID's bank check ---------------------------------------------------------------------

def _npid_data(n, batch_size=8, known_length=True):
    x, y = _images(n)
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices((x, y)))
    if not known_length:
        ds = ds.filter(lambda xi, yi: True)
    return ds.shuffle(n, seed=0).batch(batch_size, drop_remainder=True)


def _npid(n):
    model = sct.models.NPIDModel(_encoder(), n, head=sct.heads.ProjectionHead(8, kind="linear"),
                                 num_negatives=8)
    model.compile(optimizer="sgd")
    return model


def test_npid_bank_check_names_both_causes_and_catches_unknown_lengths():
    import warnings
    # A part of the data (take): a warning that says so, not an error.
    model = _npid(64)
    with pytest.warns(UserWarning, match="part of the dataset"):
        model.fit(_npid_data(64).take(3), epochs=1, verbose=0)
    # The data fed in full, and a shorter steps_per_epoch: fine in the end, no error.
    model = _npid(64)
    model.fit(_npid_data(64).repeat(), steps_per_epoch=2, epochs=2, verbose=0)
    # A bank larger than a dataset of unknown length by less than a batch:
    # the stale slots are found (they were missed before).
    model = _npid(44)
    with pytest.warns(UserWarning, match="4 of the bank's 44 slots have never been fed"):
        model.fit(_npid_data(40, known_length=False), epochs=5, verbose=0)
    # The right bank: silent.
    model = _npid(40)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="NPIDModel")
        model.fit(_npid_data(40, known_length=False), epochs=5, verbose=0)


# -- distillation ---------------------------------------------------------------------------

def _classifier(classes, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(classes)])


def test_distillation_refuses_other_classes_builds_and_keeps_its_optimizer(tmp_path):
    with pytest.raises(ValueError, match="teacher gives 3 logits, the student 1"):
        sct.models.DistillationModel(_classifier(3), _classifier(1))
    with pytest.raises(ValueError, match="teacher gives 3 logits, the student 4"):
        sct.models.DistillationModel(_classifier(3), _classifier(4))
    # Subclassed models declare no shapes: the first call checks.
    class Logits(keras.Model):
        def __init__(self, classes, **kwargs):
            super().__init__(**kwargs)
            self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(classes)

        def call(self, x):
            return self.dense(self.flat(x))

    x, y = _images(8)
    lazy = sct.models.DistillationModel(_classifier(3), Logits(1))
    lazy.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="teacher gives 3 logits, the student 1"):
        lazy.fit(x, epochs=1, verbose=0)
    model = sct.models.DistillationModel(_classifier(3), _classifier(3, seed=1))
    assert model.built
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=1, batch_size=4, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    model.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


# -- PCL without its clustering ------------------------------------------------------------

def test_pcl_warns_when_a_fit_would_be_moco_alone():
    x, y = _images(16)
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices(x)).batch(8)
    model = sct.models.PCLModel(_encoder(), 16, num_clusters=(2,), warmup_epochs=1,
                                num_prototype_negatives=1, queue_size=16, bn_groups=1,
                                head=sct.heads.ProjectionHead(8),
                                augmenter=sct.augment.simclr(SHAPE, seed=0))
    model.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match="without a PCLClustering callback.*trains MoCo"):
        history = model.fit(ds, epochs=2, verbose=0)
    assert history.history["proto_loss"] == [0.0, 0.0]
    with pytest.warns(UserWarning, match="epochs=1 and warmup_epochs=1.*MoCo alone"):
        model.fit(ds, epochs=1, verbose=0, callbacks=[sct.models.PCLClustering(x)])


# -- Sinkhorn at a small epsilon -------------------------------------------------------------

def test_sinkhorn_is_finite_at_small_epsilon_and_matches_a_float64_log_domain_reference():
    from scipy.special import logsumexp
    scores = np.random.default_rng(0).uniform(-1, 1, (16, 6)).astype("float32")
    scores[3] = -1.0                      # a sample far from every prototype
    for eps in (0.02, 0.01, 0.005):
        codes = sct.clustering.sinkhorn(tf.constant(scores), epsilon=eps).numpy()
        assert np.isfinite(codes).all(), eps
        np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-4)
        log_q = scores.T.astype(np.float64) / eps
        log_q -= logsumexp(log_q)
        for _ in range(3):
            log_q -= logsumexp(log_q, axis=1, keepdims=True) + np.log(6)
            log_q -= logsumexp(log_q, axis=0, keepdims=True) + np.log(16)
        np.testing.assert_allclose(codes, np.exp(log_q + np.log(16)).T, atol=1e-5)


# -- clustering: k = 1, numpy integers, ARI of one sample -------------------------------------

def test_kmeans_k_1_and_numpy_ints_in_a_fresh_process_and_ari_edge_cases():
    import subprocess
    import sys
    from sklearn.metrics import adjusted_rand_score
    code = ("import numpy as np; from supcon_tf import clustering as c; "
            "x = np.random.default_rng(0).random((20, 3)).astype('float32'); "
            "cents, ids, inertia = c.kmeans(x, 1); "
            "assert cents.shape == (1, 3) and (ids == 0).all(); "
            "np.testing.assert_allclose(cents[0], x.mean(0), rtol=1e-5); "
            "cents, ids, _ = c.kmeans(x, np.int64(2), restarts=np.int32(2)); "
            "assert cents.shape == (2, 3) and set(ids) == {0, 1}; print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    for labels, assignments in (([0], [0]), ([0], [3]), ([0, 1], [0, 1]), ([0, 0], [1, 1]),
                                ([0, 1], [0, 0]), ([0, 0, 1], [2, 1, 1]),
                                ([0, 1, 2], [1, 2, 0])):
        assert sct.clustering.ari(labels, assignments) == pytest.approx(
            adjusted_rand_score(labels, assignments)), (labels, assignments)


# -- lost runs: a kill while the backup is written -------------------------------------------

def _job(*args):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-m", "tests._backup_job", *map(str, args)],
                          capture_output=True, text=True, cwd=root, timeout=300)


def test_a_sigkill_while_the_backup_is_written_resumes_from_the_previous_one(tmp_path):
    import signal
    backup = tmp_path / "backup"
    killed = _job(backup, 4, 3)                   # killed writing epoch 3's backup
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = sct.callbacks.latest_state(backup)
    assert state["epoch"] == 2 and sorted(state["epochs"]) == ["1", "2"]
    resumed = _job(backup, 4)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "ran [2, 3]" in resumed.stdout and "iterations 16" in resumed.stdout
    from tests._backup_job import run
    whole = run(str(tmp_path / "other"), 4)        # uninterrupted, in this process
    checksum = lambda out: float(out.split("checksum ")[1].split()[0])  # noqa: E731
    assert checksum(resumed.stdout) == pytest.approx(checksum(whole), rel=1e-6)
    record = sct.callbacks.latest_state(backup)
    assert sorted(record["epochs"], key=int) == ["1", "2", "3", "4"]
    assert record["processes"] == 2


def test_a_half_deleted_backup_is_not_resumed(tmp_path):
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    backup = str(tmp_path / "backup")
    model.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[
        sct.callbacks.BackupAndRestore(backup, delete_checkpoint=False, keep=1)])
    (folder,) = [f for _, f in sct.callbacks.checkpoints(backup)]
    os.remove(os.path.join(folder, sct.callbacks.WEIGHTS))      # metadata left, weights gone
    again = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    again.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="no complete backup"):
        history = again.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[
            sct.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 2 and int(again.optimizer.iterations) == 2
    with pytest.raises(ValueError, match="keep=0"):
        sct.callbacks.BackupAndRestore(backup, keep=0)


def test_save_model_removes_what_a_killed_save_left(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    (tmp_path / ".m.keras.tmp-abc123.keras").write_bytes(b"half")     # a SIGKILL's leftover
    sct.export.save_model(model, tmp_path / "m.keras")
    assert os.listdir(tmp_path) == ["m.keras"]


# -- odd last batches -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["MoCoModel", "BarlowTwinsModel"])
def test_odd_and_single_sample_last_batches_train(name):
    """(VICReg takes Barlow Twins' path: the base class's batch checks.)"""
    import warnings
    x, _ = _views(17)                               # a last batch of 1 at batch_size 8
    kwargs = dict(queue_size=16) if name == "MoCoModel" else {}   # bn_groups=2 (default)
    model = getattr(sct.models, name)(_encoder(), head=sct.heads.ProjectionHead(
        8, normalize=name == "MoCoModel"), **kwargs)
    model.compile(optimizer="sgd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    said = [str(w.message) for w in caught]
    if name != "MoCoModel":                         # a batch of 1 has no batch statistics
        assert any("the last batch of 1 is left out" in m for m in said), said
        ds = tf.data.Dataset.from_tensor_slices(x).batch(8)           # batch size not fixed
        with pytest.warns(UserWarning, match="batches of fewer than 2 are skipped"):
            assert np.isfinite(model.fit(ds, epochs=1, verbose=0).history["loss"][0])
    else:                                           # shuffle-BN: whole batches only
        assert any("the last batch of 1 is left out" in m for m in said), said
        ds = tf.data.Dataset.from_tensor_slices(x[:11]).batch(8)
        with pytest.warns(UserWarning, match=r"other sizes than its first \(8\) are skipped"):
            assert np.isfinite(model.fit(ds, epochs=1, verbose=0).history["loss"][0])
    assert not any("shuffle=True" in m for m in said), said


def test_no_shuffle_warning_from_fit_on_a_dataset():
    import warnings
    x, y = _images(16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    clf = sct.models.LinearClassifier(_encoder(), num_classes=3)
    clf.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(ds, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)]


def test_labels_of_another_rank_in_a_second_fit():
    x, y = _views(16)
    model = sct.models.SupConModel(_encoder(), head=sct.heads.ProjectionHead(8),
                                   probe_classes=3)
    model.compile(optimizer="sgd")
    first = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][0]
    second = model.fit(x, y[:, None], batch_size=8, epochs=1, verbose=0).history["loss"][0]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    third = model.fit(ds, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite([first, second, third]).all()
    assert np.isfinite(model.evaluate(x, y[:, None], batch_size=8, verbose=0)[0])


# -- smaller traps -----------------------------------------------------------------------------

def test_small_traps_raise_clear_errors():
    z = np.random.default_rng(0).random((4, 2, 8)).astype("float32")
    with pytest.raises(ValueError, match=r"same shape.*\(4, 8\).*\(4, 1\)"):
        sct.losses.BYOLLoss()(np.ones((4, 8), "float32"), np.ones((4, 1), "float32"))
    for loss in (sct.losses.BarlowTwinsLoss(), sct.losses.VICRegLoss()):
        with pytest.raises(ValueError, match="at least one dimension"):
            loss(None, np.zeros((4, 2, 0), "float32"))
    with pytest.raises(TypeError, match="class ids"):
        sct.losses.HardNegativeLoss()(np.array(["a", "b", "a", "b"]), z)
    with pytest.raises(ValueError, match="`queue_labels` must equal the number of entries"):
        sct.losses.supcon_loss(np.array([0, 1, 0, 1]), z, queue=np.ones((5, 8), "float32"),
                               queue_labels=np.array([0, 1, 2]))
    queue = sct.memory.FeatureQueue(8, 8, with_labels=True)
    queue.build(None)
    with pytest.raises(ValueError, match="whole numbers.*1.7"):
        queue.enqueue(tf.ones([2, 8]), tf.constant([1.7, 2.0]))
    queue.enqueue(tf.ones([2, 8]), tf.constant([1.0, 2.0]))       # whole-number floats are ids
    assert queue.labels.numpy()[:2].tolist() == [1, 2]
    # The export doc no longer promises a normalised projection for every head.
    assert "not for the\nplain MLPs of BYOL" in sct.export.__doc__


def test_example_scripts_print_no_tensorflow_start_up_lines():
    """(`python -m supcon_tf.zoo` imports the same package first, so it is
    quiet the same way.)"""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "examples/quickstart.py", "--helpshort"], cwd=root,
                          capture_output=True, text=True, env=env, timeout=300)
    assert "--train_size" in proc.stdout, proc.stderr[-2000:]      # (absl's help exits 1)
    for line in ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard"):
        assert line not in proc.stderr, proc.stderr


def test_the_no_tensorflow_error_says_the_readme_install():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "try:\n    import supcon_tf\nexcept ImportError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert "pip install -e '.[cpu]'" in proc.stdout, proc.stdout + proc.stderr[-2000:]
