"""SimCLR v2's few-label parts: FineTuneClassifier and DistillationModel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.models import DistillationModel, FineTuneClassifier


def _encoder(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(8, activation="relu")(inputs))


def _head():
    head = sct.heads.ProjectionHead(4, hidden_dims=(7, 5))
    head.build((None, 8))
    return head


def test_fine_tune_from_layer_zero_is_the_encoder_and_a_linear_layer():
    enc = _encoder()
    clf = FineTuneClassifier(enc, 3, head=_head(), head_layers=0)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    expected = clf.classifier(enc(x))
    np.testing.assert_allclose(clf(x), expected, rtol=1e-6)
    assert clf.classifier.kernel.shape == (8, 3)
    # Only the encoder and the new linear layer are in the model's variables.
    ids = {id(v) for v in clf.trainable_variables}
    assert ids == {id(v) for v in enc.trainable_variables + clf.classifier.trainable_variables}


def test_fine_tune_from_the_first_head_layer_uses_its_pretrained_weights():
    enc, head = _encoder(), _head()
    clf = FineTuneClassifier(enc, 3, head=head, head_layers=1)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    dense, norm = head.blocks[0]
    h = keras.ops.relu(norm(dense(enc(x)), training=False))
    np.testing.assert_allclose(clf(x), clf.classifier(h), rtol=1e-5, atol=1e-6)
    assert clf.classifier.kernel.shape == (7, 3)
    # Trained end to end: encoder, the kept head layer and the linear layer move;
    # the head's unused layers are not in the gradient.
    clf.compile(optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in (enc.trainable_variables[0], dense.kernel,
                                         head.blocks[1][0].kernel)]
    clf.fit(x, np.array([0, 1, 2, 0, 1]), epochs=2, verbose=0)
    after = [v.numpy() for v in (enc.trainable_variables[0], dense.kernel,
                                 head.blocks[1][0].kernel)]
    assert not np.allclose(before[0], after[0]) and not np.allclose(before[1], after[1])
    np.testing.assert_array_equal(before[2], after[2])


def test_fine_tune_keras_round_trip(tmp_path):
    clf = FineTuneClassifier(_encoder(), 3, head=_head(), head_layers=2)
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    path = str(tmp_path / "ft.keras")
    clf.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, FineTuneClassifier) and again.head_layers == 2
    np.testing.assert_allclose(again(x), clf(x), rtol=1e-6)
    assert len(again.trainable_variables) == len(clf.trainable_variables)


def test_fine_tune_bad_arguments():
    with pytest.raises(ValueError, match="needs the pretrained `head`"):
        FineTuneClassifier(_encoder(), 3, head_layers=1)
    with pytest.raises(ValueError, match="at most the head's 2 hidden"):
        FineTuneClassifier(_encoder(), 3, head=_head(), head_layers=3)
    with pytest.raises(ValueError, match="head_layers"):
        FineTuneClassifier(_encoder(), 3, head=_head(), head_layers=-1)
    with pytest.raises(TypeError, match="ProjectionHead"):
        FineTuneClassifier(_encoder(), 3, head=keras.layers.Dense(3), head_layers=1)
    with pytest.raises(ValueError, match="must be built"):
        FineTuneClassifier(_encoder(), 3, head=sct.heads.ProjectionHead(4), head_layers=1)
    with pytest.raises(ValueError, match="no hidden layers"):
        FineTuneClassifier(_encoder(), 3, head=sct.heads.ProjectionHead(4, kind="linear"),
                           head_layers=1)


def _logits_model(seed, classes=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(classes)(inputs))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature, alpha", [(1.0, 1.0), (2.0, 0.7), (0.5, 0.0)])
def test_distillation_loss_matches_numpy(temperature, alpha):
    teacher, student = _logits_model(0), _logits_model(1)
    model = DistillationModel(teacher, student, temperature=temperature, alpha=alpha)
    x = np.random.default_rng(3).normal(size=(6, 6)).astype("float32")
    y = np.array([2, -1, 0, 3, -1, 1])
    t, s = teacher(x).numpy().astype(np.float64), student(x).numpy().astype(np.float64)
    distill = np.mean([-np.sum(np.exp(_log_softmax(t[i] / temperature))
                               * _log_softmax(s[i] / temperature)) for i in range(6)])
    labelled = [i for i in range(6) if y[i] >= 0]
    ce = np.mean([-_log_softmax(s[i])[y[i]] for i in labelled])
    expected = alpha * distill + (1 - alpha) * ce
    got = model.losses_of(tf.constant(x), tf.constant(y), training=False)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    if alpha == 1.0:
        assert float(model.losses_of(tf.constant(x), None, training=False)) == \
            pytest.approx(distill, rel=1e-5)
    # Sample weights scale each example's terms (sum of weighted terms / count).
    w = np.array([0.0, 2.0, 1.0, 0.5, 1.0, 3.0])
    distill_w = np.mean([w[i] * -np.sum(np.exp(_log_softmax(t[i] / temperature))
                                         * _log_softmax(s[i] / temperature)) for i in range(6)])
    ce_w = np.mean([w[i] * -_log_softmax(s[i])[y[i]] for i in labelled])
    got = model.losses_of(tf.constant(x), tf.constant(y), training=False,
                          sample_weight=tf.constant(w, tf.float32))
    assert float(got) == pytest.approx(alpha * distill_w + (1 - alpha) * ce_w, rel=1e-5)


def test_distillation_trains_the_student_only_and_self_distils():
    teacher = _logits_model(0)
    student = keras.models.clone_model(teacher)      # self-distillation: same architecture
    model = DistillationModel(teacher, student, temperature=1.0)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    x = np.random.default_rng(4).normal(size=(64, 6)).astype("float32")
    teacher_before = [w.copy() for w in teacher.get_weights()]
    history = model.fit(x, batch_size=16, epochs=15, verbose=0).history
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The student learns the teacher: the loss falls and their top classes agree.
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    assert history["teacher_agreement"][-1] > 0.9
    np.testing.assert_allclose(model(x), student(x))


def test_distillation_keras_round_trip_and_bad_input(tmp_path):
    model = DistillationModel(_logits_model(0), _logits_model(1, classes=4),
                              temperature=2.0, alpha=0.5)
    x = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    model(x)
    path = str(tmp_path / "distill.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert (again.temperature, again.alpha) == (2.0, 0.5)
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        DistillationModel(_logits_model(0), _logits_model(1), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationModel(_logits_model(0), _logits_model(1), alpha=1.5)
    with pytest.raises(TypeError, match="student"):
        DistillationModel(_logits_model(0), "resnet")
    with pytest.raises(ValueError, match="fit on \\(images, labels\\)"):
        DistillationModel(_logits_model(0), _logits_model(1), alpha=0.5).losses_of(
            tf.constant(x), None, training=False)
