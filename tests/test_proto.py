"""PCL's prototype term (losses.proto_nce) against a transcription of salesforce/PCL."""

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.losses import proto_nce


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pcl_reference(q, prototypes, density, pos_proto_id, neg_proto_id):
    """salesforce/PCL's moco/builder.py prototype logits, given its sampled
    negatives: candidates = the batch's positives then the negatives; query i's
    label is column i; logits divided by each candidate's concentration."""
    proto_selected = np.concatenate([prototypes[pos_proto_id], prototypes[neg_proto_id]])
    logits = q @ proto_selected.T
    temp = density[np.concatenate([pos_proto_id, neg_proto_id])]
    logits = logits / temp
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -logp[np.arange(len(q)), np.arange(len(q))]


def _inputs(seed=0, batch=6, k=12, dim=5):
    rng = np.random.default_rng(seed)
    q = _unit(rng.normal(size=(batch, dim))).astype("float32")
    c = _unit(rng.normal(size=(k, dim))).astype("float32")
    phi = rng.uniform(0.05, 0.3, size=k).astype("float32")
    targets = rng.integers(0, k // 2, size=batch)          # some clusters shared, some unused
    return q, c, phi, targets


@pytest.mark.parametrize("r", [3, 100])
def test_proto_nce_matches_pcl(r):
    q, c, phi, targets = _inputs()
    got = proto_nce(q, c, phi, targets, num_negatives=r, seed=(1, 2)).numpy()
    # Which negatives were drawn: the r (or all) clusters no query uses, in the
    # function's random order; PCL draws them with random.sample.
    unused = sorted(set(range(12)) - set(targets.tolist()))
    noise = tf.random.stateless_uniform([12], tf.constant([1, 2], tf.int64), alg="philox").numpy()
    drawn = sorted(unused, key=lambda j: noise[j])[:r]
    assert len(drawn) == min(r, len(unused))
    expected = _pcl_reference(q.astype(np.float64), c.astype(np.float64),
                              phi.astype(np.float64), targets, np.array(drawn, int))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="num_negatives"):
        proto_nce(q, c, phi, targets, num_negatives=0)


def test_proto_nce_two_replicas_equal_one_device(strategy):
    q, c, phi, targets = _inputs(seed=3, batch=8)
    one = proto_nce(q, c, phi, targets, num_negatives=4, seed=(5, 6)).numpy()
    ds = tf.data.Dataset.from_tensor_slices((q, targets)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))

    @tf.function
    def per_replica(q_, t_):
        return proto_nce(q_, c, phi, t_, num_negatives=4, seed=(5, 6))

    out = strategy.run(per_replica, args=batch)
    two = np.concatenate([v.numpy() for v in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(two, one, rtol=1e-5)


def test_proto_nce_compiles_with_xla_to_the_same_values():
    # The number of negatives depends on the batch's clusters; the function keeps
    # its shapes static (masked columns), so jit_compile=True compiles once and
    # agrees with the eager values for every draw.
    compiled = tf.function(proto_nce, jit_compile=True)
    for seed, r in [(0, 3), (1, 100), (2, 2)]:
        q, c, phi, targets = _inputs(seed)
        eager = proto_nce(q, c, phi, targets, num_negatives=r, seed=(seed, 2)).numpy()
        np.testing.assert_allclose(
            compiled(q, c, phi, targets, num_negatives=r, seed=(seed, 2)).numpy(),
            eager, rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(eager))
