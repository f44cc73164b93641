"""Every loss on the Keras backend this process runs (`KERAS_BACKEND`).

The suite (`make test`) runs this file on TensorFlow; `make test-backends`
runs it again with `KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`. Each case
computes a loss and its gradient twice: with TensorFlow tensors (the
TensorFlow code: fused, blockwise and distributed paths) and with the
backend's own tensors through the `keras.ops` code that Keras's other
backends run (on TensorFlow itself, forced). Both must agree, and agree with
the float64 loop reference of the definition where there is one.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import supcon_tf as sct
from supcon_tf import _backend
from tests import reference

L = sct.losses
BACKEND = keras.backend.backend()
RNG = np.random.default_rng(7)


def _floats(*shape):
    return RNG.normal(size=shape).astype("float32")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


IDS = np.array([0, 1, 0, 2, 1, 0])
HOT = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], "float32")
MASK = (RNG.random((6, 6)) < 0.4).astype("float32")
np.fill_diagonal(MASK[:3, :3], 1.0)
Z6 = _floats(6, 2, 5)
Z6x3 = _floats(6, 3, 5)
QUEUE = _floats(4, 5)
QUEUE_IDS = np.array([1, 0, 3, 1])
EXTRA = _floats(6, 3, 5)
EXTRA[1, 2] = 0.0                                       # an absent negative
# SpCL: two class centroids, a cluster of three slots, two outliers, an inactive slot.
SPCL_MEMORY = _unit(_floats(8, 5))
SPCL_LABELS = np.array([0, 1, 2, 2, 2, 5, 6, -1])
SPCL_TARGETS = np.array([0, 1, 2, 5, 6, 2])
# CPC: two steps on a 4 x 3 grid of 5-d encodings.
CPC_P, CPC_Z = 0.5 * _floats(3, 2, 4, 3, 5), 0.5 * _floats(3, 4, 3, 5)
# PixPro: three images on a 2 x 2 grid; the second view flipped, the third
# pair's crops apart (no positives).
PIX_T, PIX_P = _floats(3, 4, 5), _floats(3, 4, 5)
PIX_A = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 0.3, 0.3]], "float32")
PIX_B = np.array([[0.2, 0.1, 0.9, 0.8], [0.0, 0.8, 0.9, 0.1], [0.7, 0.7, 1.0, 1.0]], "float32")
# MiCE: three experts of dim 5, a queue of four keys.
MICE = {"v": _floats(6, 3, 5), "g": Z6[:, 1], "w": L.simplex_prototypes(3, 5), "mu": QUEUE[:3],
        "q": _floats(4, 3, 5)}

# (id, differentiable input, call(x, extra inputs), extra inputs, float64 reference)
CASES = [
    ("simclr", Z6, lambda x, i: L.supcon_loss(None, x, temperature=0.2), {},
     lambda: reference.supcon_reference(None, Z6, temperature=0.2)),
    ("supcon", Z6, lambda x, i: L.supcon_loss(i["y"], x), {"y": IDS},
     lambda: reference.supcon_reference(IDS, Z6)),
    ("supcon_float_ids", Z6, lambda x, i: L.SupConLoss(reduction=None)(i["y"], x),
     {"y": IDS.astype("float32")}, lambda: reference.supcon_reference(IDS, Z6)),
    ("variant_in", Z6, lambda x, i: L.supcon_loss(i["y"], x, variant="in"), {"y": IDS},
     lambda: reference.supcon_reference(IDS, Z6, variant="in")),
    ("one_positive", Z6, lambda x, i: L.supcon_loss(i["y"], x, denominator="one_positive"),
     {"y": IDS}, lambda: reference.supcon_reference(IDS, Z6, denominator="one_positive")),
    ("only_negatives_in", Z6, lambda x, i: L.supcon_loss(
        i["y"], x, variant="in", denominator="only_negatives"), {"y": IDS},
     lambda: reference.supcon_reference(IDS, Z6, variant="in", denominator="only_negatives")),
    ("positives_cap", Z6x3, lambda x, i: L.supcon_loss(i["y"], x, positives_cap=1), {"y": IDS},
     lambda: reference.supcon_reference(IDS, Z6x3, positives_cap=1)),
    ("contrast_one", Z6x3, lambda x, i: L.supcon_loss(i["y"], x, contrast_mode="one"),
     {"y": IDS}, lambda: reference.supcon_reference(IDS, Z6x3, contrast_mode="one")),
    ("multi_hot", Z6, lambda x, i: L.supcon_loss(i["y"], x, denominator="one_positive",
                                                 variant="in"), {"y": HOT},
     lambda: reference.supcon_reference(HOT, Z6, denominator="one_positive", variant="in")),
    ("mask", Z6, lambda x, i: L.supcon_loss(None, x, mask=i["mask"]), {"mask": MASK},
     lambda: reference.supcon_reference(None, Z6, mask=MASK)),
    ("base_temperature_unnormalized", Z6 / 3.0, lambda x, i: L.supcon_loss(
        i["y"], x, temperature=0.5, base_temperature=0.07, normalize=False), {"y": IDS},
     lambda: reference.supcon_reference(IDS, Z6 / 3.0, temperature=0.5, base_temperature=0.07,
                                        normalize=False)),
    ("labelled_queue_cap", Z6, lambda x, i: L.supcon_loss(
        i["y"], x, queue=i["q"], queue_labels=i["ql"], positives_cap=2),
     {"y": IDS, "q": QUEUE, "ql": QUEUE_IDS},
     lambda: reference.supcon_reference(IDS, Z6, queue=QUEUE, queue_labels=QUEUE_IDS,
                                        positives_cap=2)),
    ("unlabelled_queue_class", Z6, lambda x, i: L.SupConLoss(reduction=None)(
        None, x, queue=i["q"]), {"q": QUEUE},
     lambda: reference.supcon_reference(None, Z6, queue=QUEUE)),
    ("moco", Z6, lambda x, i: L.moco_loss(None, x, i["q"]), {"q": QUEUE},
     lambda: reference.moco_reference(None, Z6[:, 0], Z6[:, 1], QUEUE)),
    ("moco_labelled_extra", Z6, lambda x, i: L.MoCoLoss(reduction=None)(
        i["y"], x, queue=i["q"], queue_labels=i["ql"], extra_negatives=i["e"]),
     {"y": IDS, "q": QUEUE, "ql": QUEUE_IDS, "e": EXTRA},
     lambda: reference.moco_reference(IDS, Z6[:, 0], Z6[:, 1], QUEUE, QUEUE_IDS, extra=EXTRA)),
    ("moco_extra_only", Z6, lambda x, i: L.moco_loss(None, x, extra_negatives=i["e"]),
     {"e": EXTRA}, lambda: reference.moco_reference(None, Z6[:, 0], Z6[:, 1], QUEUE[:0],
                                                    extra=EXTRA)),
    ("hcl", Z6, lambda x, i: L.hard_negative_loss(None, x, temperature=0.5), {},
     lambda: reference.hard_negative_reference(Z6, temperature=0.5)),
    ("debiased_labelled", Z6, lambda x, i: L.HardNegativeLoss(
        tau_plus=0.05, beta=0.0, reduction=None)(i["y"], x), {"y": IDS},
     lambda: reference.hard_negative_reference(Z6, IDS, tau_plus=0.05, beta=0.0)),
    ("hcl_terms", Z6, lambda x, i: ops.stack(list(L.hard_negative_terms(
        None, x, temperature=0.2, beta=0.0).values()), axis=1), {},
     lambda: np.stack(reference.hard_negative_reference(Z6, temperature=0.2, beta=0.0,
                                                        return_clamped=True), axis=1)),
    ("barlow_twins", Z6, lambda x, i: L.barlow_twins_loss(x, lambda_=0.01)[None], {},
     lambda: [reference.barlow_twins_reference(Z6[:, 0], Z6[:, 1], 0.01)]),
    ("vicreg", Z6, lambda x, i: L.VICRegLoss(cov_coeff=2.0)(None, x)[None], {},
     lambda: [reference.vicreg_reference(Z6[:, 0], Z6[:, 1], cov_coeff=2.0)]),
    ("byol", Z6, lambda x, i: L.BYOLLoss(reduction=None)(i["t"], x[:, 0]), {"t": Z6[:, 1]},
     lambda: 2.0 - 2.0 * np.sum(_unit(Z6[:, 0].astype("float64"))
                                * _unit(Z6[:, 1].astype("float64")), axis=-1)),
    ("sinkhorn_swav", Z6x3, lambda x, i: L.swav_loss(
        sct.clustering.sinkhorn(i["s"], epsilon=0.5, across_replicas=False)[:, None], x, 0.2),
     {"s": Z6x3[:, 0]},
     lambda: reference.swav_reference(reference.sinkhorn_reference(
        Z6x3[:, 0].astype("float64"), epsilon=0.5)[:, None], Z6x3, 0.2)),
    ("cmc_full", Z6x3, lambda x, i: L.cmc_loss(x, temperature=0.3, graph="full"), {},
     lambda: reference.cmc_reference(Z6x3, temperature=0.3, graph="full")),
    ("looc", _floats(6, 4, 3, 5), lambda x, i: L.looc_loss(x, temperature=0.3), {}, None),
    ("npid_nce", Z6[:, 0], lambda x, i: L.npid_loss(None, x, kind="nce", noise_ratio=2.0,
                                                    z=3.0), {}, None),
    ("npid_softmax_slots", Z6[:, 0], lambda x, i: L.NPIDLoss(kind="softmax", reduction=None)(
        i["y"], x), {"y": np.array([4, 0, 1, 2, 3, 1])}, None),
    ("proto_nce", _unit(Z6[:, 0]), lambda x, i: L.proto_nce(
        x, i["c"], i["phi"], i["t"], num_negatives=8),
     {"c": _unit(_floats(7, 5)), "phi": np.linspace(0.2, 0.8, 7).astype("float32"),
      "t": np.array([0, 3, 3, 5, 1, 0])}, None),
    ("distillation", Z6[:, 0], lambda x, i: L.DistillationLoss(2.0, reduction=None)(
        i["t"], x), {"t": Z6[:, 1]}, None),
    ("contragan_2c", Z6[:, 0], lambda x, i: L.ConditionalContrastiveLoss(0.5, reduction=None)(
        i["y"], x, proxies=i["p"]), {"y": IDS, "p": Z6[:, 1]},
     lambda: reference.conditional_contrastive_reference(IDS, Z6[:, 0], Z6[:, 1], 0.5)),
    ("clip_labelled", Z6, lambda x, i: L.CLIPLoss(reduction=None)(
        i["y"], x, logit_scale=i["s"]), {"y": IDS, "s": np.float32(5.0)},
     lambda: reference.clip_reference(Z6[:, 0], Z6[:, 1], 5.0, IDS)),
    ("graphcl_symmetric", Z6, lambda x, i: L.graphcl_loss(x, 0.3, symmetric=True), {},
     lambda: reference.graphcl_reference(Z6, 0.3, symmetric=True)),
    ("spcl_hybrid_memory", Z6[:, 0], lambda x, i: L.HybridMemoryLoss(0.2, reduction=None)(
        i["y"], x, memory=i["m"], memory_labels=i["l"]),
     {"y": SPCL_TARGETS, "m": SPCL_MEMORY, "l": SPCL_LABELS},
     lambda: reference.hybrid_memory_reference(SPCL_TARGETS, Z6[:, 0], SPCL_MEMORY,
                                               SPCL_LABELS, 0.2)),
    ("mice", Z6x3, lambda x, i: L.MiCELoss(0.5, 0.7, reduction=None)(
        None, x, keys=i["v"], gating=i["g"], gating_prototypes=i["w"], expert_prototypes=i["mu"],
        queue=i["q"]), MICE,
     lambda: reference.mice_reference(Z6x3, MICE["v"], MICE["g"], MICE["w"], MICE["mu"],
                                      MICE["q"], 0.5, 0.7)[0]),
    ("dim_jsd", Z6[:, 0], lambda x, i: L.DIMLoss("jsd", reduction=None)(None, x, local=i["l"]),
     {"l": Z6x3}, lambda: reference.dim_reference(Z6[:, 0], Z6x3, "jsd")),
    ("amdim", Z6[:, 0], lambda x, i: L.amdim_loss(x, i["l"], tclip=2.0), {"l": Z6x3},
     lambda: reference.amdim_reference(Z6[:, 0], Z6x3, tclip=2.0)),
    ("cpc", CPC_P, lambda x, i: L.CPCLoss(reduction=None)(None, x, targets=i["z"]),
     {"z": CPC_Z}, lambda: reference.cpc_reference(CPC_P, CPC_Z)),
    ("cpc_first_step", CPC_P, lambda x, i: L.CPCLoss(reduction=None)(
        None, x, targets=i["z"], first_step=2),
     {"z": CPC_Z}, lambda: reference.cpc_reference(CPC_P, CPC_Z, first_step=2)),
    ("pixpro", PIX_P, lambda x, i: L.PixProLoss(reduction=None)(
        i["t"], x, positives=L.pixel_positive_mask(i["a"], i["b"], (2, 2))),
     {"t": PIX_T, "a": PIX_A, "b": PIX_B},
     lambda: reference.pixpro_reference(PIX_T, PIX_P, reference.pixpro_mask_reference(
         PIX_A, PIX_B, 2, 2))),
]
# LooC's own reference, where the case needs its input.
_LOOC = CASES[[c[0] for c in CASES].index("looc")]
CASES[CASES.index(_LOOC)] = _LOOC[:4] + (lambda: reference.looc_reference(_LOOC[1], 0.3),)
WEIGHTS = RNG.uniform(0.5, 1.5, size=64).astype("float32")


def _tensorflow_value_and_grad(call, x, inputs):
    x = tf.constant(x)
    inputs = {k: tf.constant(v) for k, v in inputs.items()}
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reshape(call(x, inputs), [-1])
        total = tf.reduce_sum(value * WEIGHTS[:value.shape[0]])
    return value.numpy(), tape.gradient(total, x).numpy()


def _backend_value_and_grad(call, x, inputs):
    """The value and the gradient of the weighted sum on Keras's backend,
    with its own tensors."""
    inputs = {k: ops.convert_to_tensor(v) for k, v in inputs.items()}

    def total(t):
        value = ops.reshape(call(t, inputs), (-1,))
        return ops.sum(value * ops.convert_to_tensor(WEIGHTS[:value.shape[0]])), value

    if BACKEND == "jax":
        import jax
        (_, value), grad = jax.value_and_grad(total, has_aux=True)(ops.convert_to_tensor(x))
        return np.asarray(value), np.asarray(grad)
    if BACKEND == "torch":
        import torch
        t = torch.tensor(x, requires_grad=True)
        loss, value = total(t)
        loss.backward()
        return value.detach().numpy(), t.grad.numpy()
    return _tensorflow_value_and_grad(call, x, inputs)


@pytest.fixture
def portable(monkeypatch):
    """On TensorFlow, the `keras.ops` code (elsewhere it runs anyway)."""
    monkeypatch.setattr(_backend, "on_tensorflow", lambda *tensors: False)


def save_tensorflow_results(path):
    """Every case's TensorFlow value and gradient, to `path` (.npz)."""
    results = {}
    for name, x, call, inputs, _ in CASES:
        results[name + ":value"], results[name + ":grad"] = _tensorflow_value_and_grad(
            call, x, inputs)
    np.savez(path, **results)


@pytest.fixture(scope="module")
def tensorflow_results(tmp_path_factory):
    """The TensorFlow code's results: in this process on TensorFlow, else
    from a process on Keras's TensorFlow backend (Keras's losses convert
    their inputs to the running backend's tensors, so a TensorFlow result of
    a loss class needs that backend)."""
    path = tmp_path_factory.mktemp("tensorflow") / "results.npz"
    if BACKEND == "tensorflow":
        save_tensorflow_results(path)
    else:
        import os
        import subprocess
        import sys
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = ("from tests.backends.test_portable_losses import save_tensorflow_results; "
                f"save_tensorflow_results({str(path)!r})")
        subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                       env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    with np.load(path) as results:
        return dict(results)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_loss_and_gradient_equal_tensorflow_and_the_reference(case, tensorflow_results,
                                                                portable):
    name, x, call, inputs, ref = case
    want_value, want_grad = tensorflow_results[name + ":value"], tensorflow_results[name + ":grad"]
    value, grad = _backend_value_and_grad(call, x, inputs)
    np.testing.assert_allclose(value, want_value, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)
    assert np.abs(grad).max() > 0
    if ref is not None:
        np.testing.assert_allclose(value, np.asarray(ref(), np.float64).reshape(-1),
                                   rtol=1e-4, atol=1e-5)


def test_the_backend_runs_the_keras_ops_code():
    """On Keras's other backends a loss of the backend's tensors returns the
    backend's tensor (no TensorFlow in between: gradients and `jax.jit` work)."""
    value = L.SupConLoss()(IDS, ops.convert_to_tensor(Z6))
    want = "tensorflow" if BACKEND == "tensorflow" else BACKEND
    assert type(value).__module__.split(".")[0] in {
        "tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}[want]
    np.testing.assert_allclose(float(value), reference.supcon_reference(IDS, Z6).mean(),
                               rtol=1e-5)


def test_a_plain_keras_model_fits_with_supcon():
    """`model.compile(loss=SupConLoss())` and `fit` on this backend: the loss
    falls on separable clusters."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    centres = rng.normal(size=(3, 12))
    x = (centres[y][:, None, :] + 0.8 * rng.normal(size=(96, 2, 12))).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2, 12))
    model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Dense(16, "relu")(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=L.SupConLoss(temperature=0.2))
    history = model.fit(x, y, batch_size=32, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < history[0] - 0.1, history


def test_bad_label_values_raise_when_known(portable):
    z = ops.convert_to_tensor(Z6)
    with pytest.raises(ValueError, match="not whole numbers"):
        L.supcon_loss(ops.convert_to_tensor(IDS + 0.5), z)
    with pytest.raises(ValueError, match="one-hot or multi-hot 0/1"):
        L.supcon_loss(ops.convert_to_tensor(HOT * 0.9), z)
    with pytest.raises(ValueError, match=r"number of labels in `y_true`.*5 labels"):
        L.supcon_loss(ops.convert_to_tensor(IDS[:5]), z)
    with pytest.raises(ValueError, match="needs `queue_labels`"):
        L.supcon_loss(IDS, z, queue=QUEUE)


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: its labels are always "
                    "known, and the test above covers it")
def test_bad_label_values_give_nan_inside_a_traced_function(portable):
    """Where nothing can raise (`jax.jit`, `tf.function`), the loss is NaN."""
    if BACKEND == "jax":
        import jax
        traced = jax.jit(lambda y, z: L.supcon_loss(y, z))
    else:
        traced = tf.function(lambda y, z: L.supcon_loss(y, z))
    z = ops.convert_to_tensor(Z6)
    assert np.all(np.isnan(np.asarray(traced(ops.convert_to_tensor(HOT * 0.9), z))))
    assert np.all(np.isfinite(np.asarray(traced(ops.convert_to_tensor(HOT), z))))


def test_tensorflow_only_parts_name_the_backend():
    encoder = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])
    if BACKEND == "tensorflow":
        assert sct.models.LinearClassifier(encoder, num_classes=2).num_classes == 2
    else:
        for make in (lambda: sct.models.SupConModel(encoder),
                     lambda: sct.models.LinearClassifier(encoder, num_classes=2),
                     lambda: sct.memory.FeatureQueue(8, 3),
                     lambda: sct.export.export_encoder(encoder, "/nonexistent/never-written")):
            with pytest.raises(RuntimeError, match=f"TensorFlow backend.*runs on '{BACKEND}'"):
                make()
