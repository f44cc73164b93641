"""Graphs for GraphCL: graphs built from images, GraphCL's four
augmentations and a GIN encoder, on dense batched graphs.

A batch of graphs is a dict of three tensors, padded to N nodes:
`nodes` `[B, N, F]` (node features), `adjacency` `[B, N, N]` (0/1,
symmetric, no self-loops) and `mask` `[B, N]` (1 for a node that exists).
Every function keeps absent nodes at zero features and without edges.

`image_graphs` builds a graph per image on a regular grid of patches (as the
superpixel benchmarks of the GNN literature build graphs from MNIST, with
square patches instead of SLIC superpixels): a node per patch that holds any
of the object (its brightest pixel above a threshold), its pixels and its
position as features, edges between the 8-neighbouring patches.

Augmentations (You et al., NeurIPS 2020, Shen-Lab/GraphCL, unsupervised_TU
aug.py, ratio 0.2 by default):
- `drop_nodes`: each graph loses `ratio` of its nodes (with their edges);
- `perturb_edges`: each graph loses `ratio` of its edges (the official TU
  code removes edges and adds none);
- `mask_attributes`: `ratio` of the nodes get features drawn from
  N(0.5, 0.5), as the official `mask_nodes`;
- `subgraph`: keeps a connected part of `1 - ratio` of the nodes, grown from
  a random node by adding random neighbours of the part one at a time.
"""

import numpy as np
import tensorflow as tf
import keras

from supcon_tf._checks import check_int

AUGMENTATIONS = ("drop_nodes", "perturb_edges", "mask_attributes", "subgraph")


def image_graphs(images, patch=4, threshold=32):
    """Graphs of images on a grid of `patch x patch` patches.

    Args:
        images: `[n, H, W, C]` raw pixels in [0, 255]; H and W multiples of
            `patch`.
        patch: Patch side. Defaults to 4 (a 7 x 7 grid on 28 x 28 images).
        threshold: A patch whose brightest pixel is at most this is no node.
            Defaults to 32.

    Returns:
        A dict of numpy arrays: `nodes` float32 `[n, N, patch * patch * C + 2]`
        (pixels / 255, then the patch's row and column / grid size), `adjacency`
        float32 `[n, N, N]`, `mask` float32 `[n, N]`, with N = (H / patch) x
        (W / patch).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] % patch or images.shape[2] % patch:
        raise ValueError(f"`images` must be [n, H, W, C] with H and W multiples of `patch` "
                         f"({patch}). Received: images.shape={images.shape}")
    n, height, width, channels = images.shape
    rows, cols = height // patch, width // patch
    blocks = images.reshape(n, rows, patch, cols, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(n, rows * cols, patch * patch * channels).astype(np.float32)
    mask = (blocks.max(axis=-1) > threshold).astype(np.float32)
    r, c = np.divmod(np.arange(rows * cols), cols)
    position = np.stack([r / rows, c / cols], axis=1).astype(np.float32)
    nodes = np.concatenate([blocks / 255.0, np.broadcast_to(position, (n, rows * cols, 2))], -1)
    grid = ((np.abs(r[:, None] - r[None, :]) <= 1) & (np.abs(c[:, None] - c[None, :]) <= 1)
            & (np.arange(rows * cols)[:, None] != np.arange(rows * cols)[None, :]))
    adjacency = grid[None].astype(np.float32) * mask[:, :, None] * mask[:, None, :]
    return {"nodes": nodes * mask[:, :, None], "adjacency": adjacency, "mask": mask}


def _keep(graphs, keep):
    """The graphs with only the nodes where `keep` ([B, N] 0/1) is 1."""
    keep = keep * graphs["mask"]
    return {"nodes": graphs["nodes"] * keep[:, :, None],
            "adjacency": graphs["adjacency"] * keep[:, :, None] * keep[:, None, :],
            "mask": keep}


def _ranked_fraction(scores, valid, ratio):
    """[B, N] 0/1: in each graph, the `ratio` share (rounded down) of its
    valid entries with the lowest scores."""
    scores = tf.where(valid > 0, scores, np.inf)
    rank = tf.argsort(tf.argsort(scores, axis=1), axis=1)
    count = tf.floor(tf.reduce_sum(valid, axis=1, keepdims=True) * ratio)
    return tf.cast(tf.cast(rank, tf.float32) < count, tf.float32) * valid


def drop_nodes(graphs, ratio=0.2, seed=None):
    """Each graph without `ratio` of its nodes, drawn at random."""
    scores = tf.random.stateless_uniform(tf.shape(graphs["mask"]), _seed(seed))
    return _keep(graphs, 1.0 - _ranked_fraction(scores, graphs["mask"], ratio))


def perturb_edges(graphs, ratio=0.2, seed=None):
    """Each graph without `ratio` of its (undirected) edges, drawn at random."""
    adjacency = graphs["adjacency"]
    n = tf.shape(adjacency)[1]
    upper = adjacency * tf.linalg.band_part(tf.ones([n, n]), 0, -1)      # each edge once
    batch = tf.shape(adjacency)[0]
    flat = tf.reshape(upper, [batch, -1])
    scores = tf.random.stateless_uniform(tf.shape(flat), _seed(seed))
    removed = tf.reshape(_ranked_fraction(scores, flat, ratio), tf.shape(adjacency))
    removed = removed + tf.transpose(removed, [0, 2, 1])
    return {**graphs, "adjacency": adjacency * (1.0 - removed)}


def mask_attributes(graphs, ratio=0.2, seed=None):
    """`ratio` of each graph's nodes with features drawn from N(0.5, 0.5)."""
    seed = _seed(seed)
    chosen = _ranked_fraction(tf.random.stateless_uniform(tf.shape(graphs["mask"]), seed),
                              graphs["mask"], ratio)
    noise = 0.5 + 0.5 * tf.random.stateless_normal(tf.shape(graphs["nodes"]), seed + 1)
    nodes = graphs["nodes"] * (1.0 - chosen[:, :, None]) + noise * chosen[:, :, None]
    return {**graphs, "nodes": nodes}


def subgraph(graphs, ratio=0.2, seed=None):
    """A connected part of `1 - ratio` of each graph's nodes: from a random
    node, random neighbours of the part are added one at a time until it
    has that many nodes or no neighbour is left."""
    seed = _seed(seed)
    mask, adjacency = graphs["mask"], graphs["adjacency"]
    nodes = int(mask.shape[1])
    target = tf.math.ceil(tf.reduce_sum(mask, axis=1) * (1.0 - ratio))          # [B]
    start = tf.random.stateless_uniform(tf.shape(mask), seed)
    part = tf.one_hot(tf.argmax(tf.where(mask > 0, start, -1.0), axis=1), nodes) * mask
    for step in range(nodes - 1):
        frontier = tf.cast(tf.einsum("bn,bnm->bm", part, adjacency) > 0, tf.float32)
        frontier *= (1.0 - part) * mask
        scores = tf.random.stateless_uniform(tf.shape(mask), seed + 2 + step)
        pick = tf.one_hot(tf.argmax(tf.where(frontier > 0, scores, -1.0), axis=1), nodes)
        grow = tf.cast(tf.reduce_sum(part, axis=1) < target, tf.float32)
        grow *= tf.cast(tf.reduce_sum(frontier, axis=1) > 0, tf.float32)
        part = part + pick * frontier * grow[:, None]
    return _keep(graphs, part)


def _seed(seed):
    if seed is None:
        return tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int64)
    return tf.cast(tf.convert_to_tensor(seed), tf.int64) * tf.constant([1, 1], tf.int64) + \
        tf.constant([0, 7919], tf.int64)


AUGMENT = {"drop_nodes": drop_nodes, "perturb_edges": perturb_edges,
           "mask_attributes": mask_attributes, "subgraph": subgraph}


def augment(graphs, name, ratio=0.2, seed=None):
    """One of `AUGMENTATIONS` by name (or `"none"`: the graphs as they are)."""
    if name == "none":
        return graphs
    if name not in AUGMENT:
        raise ValueError(f"`name` must be one of {AUGMENTATIONS + ('none',)}. "
                         f"Received: name={name!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"`ratio` must be in [0, 1). Received: ratio={ratio!r}")
    return AUGMENT[name](graphs, ratio, seed)


@keras.saving.register_keras_serializable(package="supcon_tf")
class GIN(keras.layers.Layer):
    """A Graph Isomorphism Network (Xu et al., ICLR 2019) on dense batched
    graphs, GraphCL's unsupervised encoder: `layers` times
    `h = ReLU(LayerNorm(MLP((1 + eps) h + A h)))` (eps 0, GIN-0; a two-layer
    MLP), the masked sum of each layer's node states as the graph's readout,
    the layers' readouts concatenated: `[B, layers * units]`. Each node is
    normalised on its own (LayerNorm) where GraphCL's GIN has BatchNorm: on
    padded batches the absent nodes would enter BatchNorm's statistics.

    Args:
        units: Width of each layer. Defaults to 32 (GraphCL's TU setting).
        layers: Number of GIN layers. Defaults to 3.
    """

    def __init__(self, units=32, layers=3, **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_layers = check_int(units, "units", 1), check_int(layers, "layers", 1)
        self.mlps = [keras.Sequential([keras.layers.Dense(self.units, activation="relu"),
                                       keras.layers.Dense(self.units)], name=f"mlp{i}")
                     for i in range(self.num_layers)]
        self.norms = [keras.layers.LayerNormalization(name=f"norm{i}")
                      for i in range(self.num_layers)]

    def call(self, graphs, training=None):
        h, adjacency, mask = graphs["nodes"], graphs["adjacency"], graphs["mask"]
        readouts = []
        for mlp, norm in zip(self.mlps, self.norms):
            h = keras.ops.relu(norm(mlp(h + tf.matmul(adjacency, h)))) * mask[:, :, None]
            readouts.append(tf.reduce_sum(h, axis=1))
        return tf.concat(readouts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "layers": self.num_layers}
