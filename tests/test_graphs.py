"""Graphs from images, GraphCL's augmentations and the GIN encoder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct

G = sct.graphs


def _images():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    images[0, :4, :4] = 200            # one patch lit (patch 4: a 2 x 2 grid)
    images[1] = 100                    # all four patches
    images[2, 4:, :] = 50              # the bottom two
    return images


def test_image_graphs_are_grids_of_lit_patches():
    g = G.image_graphs(_images(), patch=4)
    assert g["nodes"].shape == (3, 4, 16 + 2) and g["adjacency"].shape == (3, 4, 4)
    np.testing.assert_array_equal(g["mask"], [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    # 8-neighbours on a 2 x 2 grid: everyone with everyone, no self-loops.
    np.testing.assert_array_equal(g["adjacency"][1], 1 - np.eye(4))
    np.testing.assert_array_equal(g["adjacency"][2], [[0, 0, 0, 0], [0, 0, 0, 0],
                                                      [0, 0, 0, 1], [0, 0, 1, 0]])
    assert g["adjacency"][0].sum() == 0 and (g["nodes"][0, 1:] == 0).all()
    np.testing.assert_allclose(g["nodes"][1, 3, 16:], [0.5, 0.5])   # row, column / grid
    with pytest.raises(ValueError, match="multiples of `patch`"):
        G.image_graphs(np.zeros((1, 6, 6, 1)), patch=4)


def _real_graphs(n=16):
    x, _ = sct.data.load_arrays("fashion_mnist", f"test[:{n}]")
    return {k: tf.constant(v) for k, v in G.image_graphs(x).items()}


def _consistent(g):
    """Absent nodes have no features and no edges; edges are symmetric."""
    mask, adjacency = g["mask"].numpy(), g["adjacency"].numpy()
    assert (g["nodes"].numpy()[mask == 0] == 0).all()
    assert (adjacency * (1 - mask[:, :, None])).sum() == 0
    np.testing.assert_array_equal(adjacency, adjacency.transpose(0, 2, 1))


def test_augmentations_remove_what_they_say():
    g = _real_graphs()
    n_nodes = g["mask"].numpy().sum(1)
    n_edges = g["adjacency"].numpy().sum((1, 2)) / 2

    dropped = G.augment(g, "drop_nodes", 0.2, seed=1)
    _consistent(dropped)
    np.testing.assert_array_equal(dropped["mask"].numpy().sum(1), n_nodes - np.floor(0.2 * n_nodes))
    assert (dropped["mask"].numpy() <= g["mask"].numpy()).all()

    perturbed = G.augment(g, "perturb_edges", 0.2, seed=1)
    _consistent(perturbed)
    np.testing.assert_array_equal(perturbed["adjacency"].numpy().sum((1, 2)) / 2,
                                  n_edges - np.floor(0.2 * n_edges))
    assert (perturbed["adjacency"].numpy() <= g["adjacency"].numpy()).all()

    masked = G.augment(g, "mask_attributes", 0.2, seed=1)
    changed = (masked["nodes"].numpy() != g["nodes"].numpy()).any(-1).sum(1)
    np.testing.assert_array_equal(changed, np.floor(0.2 * n_nodes))

    part = G.augment(g, "subgraph", 0.2, seed=1)
    _consistent(part)
    kept = part["mask"].numpy()
    assert (kept.sum(1) <= np.ceil(0.8 * n_nodes)).all() and (kept.sum(1) >= 1).all()
    for b in range(len(kept)):           # connected: a walk from one node reaches all
        nodes = np.flatnonzero(kept[b])
        reach, adjacency = {nodes[0]}, part["adjacency"].numpy()[b]
        for _ in nodes:
            reach |= {j for i in reach for j in np.flatnonzero(adjacency[i])}
        assert reach == set(nodes)
    # The grids of Fashion-MNIST are connected: the part reaches its target.
    np.testing.assert_array_equal(kept.sum(1), np.ceil(0.8 * n_nodes))

    same = G.augment(g, "drop_nodes", 0.2, seed=1)
    np.testing.assert_array_equal(same["mask"].numpy(), dropped["mask"].numpy())
    with pytest.raises(ValueError, match="name"):
        G.augment(g, "rotate")


def test_gin_reads_out_masked_sums_and_round_trips(tmp_path):
    g = _real_graphs(4)
    gin = G.GIN(units=8, layers=2)
    out = gin(g)
    assert tuple(out.shape) == (4, 16)
    # A padded node changes nothing: one more absent node, same readout.
    padded = {"nodes": tf.pad(g["nodes"], [[0, 0], [0, 1], [0, 0]], constant_values=0.0),
              "adjacency": tf.pad(g["adjacency"], [[0, 0], [0, 1], [0, 1]]),
              "mask": tf.pad(g["mask"], [[0, 0], [0, 1]])}
    np.testing.assert_allclose(gin(padded).numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    inputs = {k: keras.Input(v.shape[1:], name=k) for k, v in g.items()}
    model = keras.Model(inputs, gin(inputs))
    model.save(tmp_path / "gin.keras")
    again = keras.saving.load_model(tmp_path / "gin.keras")
    np.testing.assert_allclose(again({k: v for k, v in g.items()}).numpy(), out.numpy(),
                               rtol=1e-5, atol=1e-6)
