"""Evaluate any encoder's representation: embeddings, a linear probe, kNN
classification, clustering scores (`cluster_scores`, from
`supcon_tf.clustering`), per-class and many/medium/few-shot accuracy for
long-tailed data (`per_class_accuracy`, `shot_accuracy`), and a 2-D
embedding plot.

Every function here works on any callable from images to `[batch, dim]` (a
Keras encoder, a `keras.layers.TFSMLayer`, a zoo model, or the signature of a
SavedModel loaded with plain TensorFlow) and is deterministic: the linear probe
trains full-batch from zero weights, so the same embeddings give the same
accuracy on every run.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from supcon_tf.clustering import cluster_scores  # noqa: F401  (part of this module's API)


def _as_labels(labels, name):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`{name}` must be integer class ids [n]. Received: "
                         f"{name} with shape {labels.shape} and dtype {labels.dtype}")
    return labels.astype(np.int64)


def _as_matrix(x, name):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty [n, dim] matrix. "
                         f"Received: {name}.shape={x.shape}")
    return x


def _check_pair(x, y, x_name, y_name):
    x = _as_matrix(x, x_name)
    y = _as_labels(y, y_name)
    if len(x) != len(y):
        raise ValueError(f"`{x_name}` and `{y_name}` must have the same length. "
                         f"Received: {len(x)} and {len(y)}")
    return x, y


def embed(encoder, images, batch_size=512, normalize=True, output_key="embedding"):
    """Runs `encoder` over `images` in batches and returns a float32 numpy array.

    Args:
        encoder: A callable from an image batch to `[batch, dim]`, or to a dict
            holding `output_key` (SavedModel signatures return dicts).
        images: A numpy array / tensor `[n, H, W, C]`, or a `tf.data.Dataset` of
            images or of `(images, labels)` (batched or not).
        batch_size: Images per call for arrays and unbatched datasets.
            Defaults to 512.
        normalize: L2-normalise the embeddings. Defaults to True.
        output_key: Key of the embedding when the encoder returns a dict.
            Defaults to `"embedding"`.

    Returns:
        `[n, dim]` float32 numpy array.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: "
                         f"batch_size={batch_size!r}")
    if isinstance(images, tf.data.Dataset):
        ds = images
        first = tf.nest.flatten(ds.element_spec)
        if isinstance(ds.element_spec, tuple):
            ds = ds.map(lambda x, *rest: x)
            first = [ds.element_spec]
        if first[0].shape.rank == 3:
            ds = ds.batch(batch_size)
    else:
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(images)).batch(batch_size)
    out = []
    for batch in ds:
        z = encoder(batch)
        if isinstance(z, dict):
            if output_key not in z:
                raise ValueError(f"The encoder returned outputs {sorted(z)}, without "
                                 f"`output_key`={output_key!r}")
            z = z[output_key]
        z = tf.cast(tf.convert_to_tensor(z), tf.float32)
        if normalize:
            z = tf.math.l2_normalize(z, axis=-1)
        out.append(z.numpy())
    if not out:
        raise ValueError("`images` is empty.")
    return np.concatenate(out)


def linear_probe(train_embeddings, train_labels, test_embeddings, test_labels,
                 num_classes=None, steps=500, learning_rate=0.1, weight_decay=1e-4):
    """Top-1 accuracy of a linear classifier trained on frozen embeddings.

    The features are standardised with the training set's mean and standard
    deviation (a fixed affine map, so the classifier stays linear), then a
    softmax regression with L2 penalty `weight_decay` is trained full-batch
    with Adam from zero weights for `steps` steps, the learning rate decaying
    to 0 on a cosine. No randomness: identical inputs give identical results.

    Args:
        train_embeddings: `[n, dim]` training features.
        train_labels: `[n]` integer class ids.
        test_embeddings: `[m, dim]` test features.
        test_labels: `[m]` integer class ids.
        num_classes: Number of classes. Defaults to None (from the labels).
        steps: Full-batch optimisation steps. Defaults to 500.
        learning_rate: Peak Adam learning rate. Defaults to 0.1.
        weight_decay: L2 penalty on the weights. Defaults to 1e-4.

    Returns:
        A dict: `top1` (test accuracy in [0, 1]), `train_top1`, `steps`.
    """
    x, y = _check_pair(train_embeddings, train_labels, "train_embeddings", "train_labels")
    xt, yt = _check_pair(test_embeddings, test_labels, "test_embeddings", "test_labels")
    if xt.shape[1] != x.shape[1]:
        raise ValueError("Train and test embeddings must have the same dim. Received: "
                         f"{x.shape[1]} and {xt.shape[1]}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer. Received: steps={steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate}")
    classes = int(num_classes or max(y.max(), yt.max()) + 1)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    x = tf.constant((x - mean) / std)
    xt = tf.constant((xt - mean) / std)
    y_t = tf.constant(y)
    w = tf.Variable(tf.zeros([x.shape[1], classes]))
    b = tf.Variable(tf.zeros([classes]))
    # Plain Adam written out: no Keras optimizer state to seed or to leak.
    m = [tf.Variable(tf.zeros_like(v)) for v in (w, b)]
    v2 = [tf.Variable(tf.zeros_like(v)) for v in (w, b)]

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            logits = tf.matmul(x, w) + b
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y_t, logits=logits)) + 0.5 * weight_decay * tf.reduce_sum(w * w)
        grads = tape.gradient(loss, [w, b])
        lr = learning_rate * 0.5 * (1 + tf.cos(np.pi * t / steps))
        for var, g, m_, v_ in zip((w, b), grads, m, v2):
            m_.assign(0.9 * m_ + 0.1 * g)
            v_.assign(0.999 * v_ + 0.001 * g * g)
            m_hat = m_ / (1 - 0.9 ** (t + 1))
            v_hat = v_ / (1 - 0.999 ** (t + 1))
            var.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + 1e-8))

    for t in range(steps):
        step(tf.constant(t, tf.float32))

    def accuracy(features, labels):
        predicted = tf.argmax(tf.matmul(features, w) + b, axis=1).numpy()
        return float(np.mean(predicted == labels))

    return {"top1": accuracy(xt, yt), "train_top1": accuracy(x, y), "steps": steps}


def knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels,
                 k=20, temperature=0.07, num_classes=None, chunk=1024):
    """Top-1 accuracy of weighted k-nearest-neighbour classification.

    Cosine similarity (embeddings are L2-normalised here); each test sample's
    `k` most similar training samples vote for their class with weight
    `exp(similarity / temperature)` (Wu et al., 2018, as in solo-learn and
    lightly).

    Args:
        train_embeddings: `[n, dim]` reference features.
        train_labels: `[n]` integer class ids.
        test_embeddings: `[m, dim]` query features.
        test_labels: `[m]` integer class ids.
        k: Neighbours. Defaults to 20.
        temperature: Vote temperature > 0. Defaults to 0.07.
        num_classes: Number of classes. Defaults to None (from the labels).
        chunk: Queries per similarity block (memory: `chunk * n` floats).
            Defaults to 1024.

    Returns:
        The accuracy in [0, 1].
    """
    x, y = _check_pair(train_embeddings, train_labels, "train_embeddings", "train_labels")
    xt, yt = _check_pair(test_embeddings, test_labels, "test_embeddings", "test_labels")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(x):
        raise ValueError(f"`k` must be an integer in [1, {len(x)}]. Received: k={k!r}")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
    classes = int(num_classes or max(y.max(), yt.max()) + 1)
    x = tf.math.l2_normalize(tf.constant(x), axis=1)
    one_hot = tf.one_hot(y, classes)
    correct = 0
    for start in range(0, len(xt), chunk):
        q = tf.math.l2_normalize(tf.constant(xt[start:start + chunk]), axis=1)
        sim, idx = tf.math.top_k(tf.matmul(q, x, transpose_b=True), k=k)
        votes = tf.reduce_sum(tf.gather(one_hot, idx) * tf.exp(sim / temperature)[..., None],
                              axis=1)
        correct += int(np.sum(tf.argmax(votes, axis=1).numpy() == yt[start:start + chunk]))
    return correct / len(xt)



def frechet_distance(features_a, features_b):
    """The Fréchet distance between Gaussians fitted to two feature sets:
    `|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))` (FID's formula,
    Heusel et al., 2017), in float64. The trace of the matrix square root is
    the sum of the square roots of the eigenvalues of `S_a^(1/2) S_b S_a^(1/2)`
    (symmetric, so no complex round-off). FID proper uses Inception-v3
    features; this function takes any.

    Args:
        features_a: `[n, dim]`, n >= 2.
        features_b: `[m, dim]`, m >= 2.

    Returns:
        A float >= 0.
    """
    a, b = _as_matrix(features_a, "features_a"), _as_matrix(features_b, "features_b")
    if a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError("`features_a` and `features_b` must be [n, dim] with the same dim "
                         f"and n >= 2. Received: shapes {a.shape} and {b.shape}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    mean = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(mean @ mean + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def per_class_accuracy(labels, predictions, num_classes=None):
    """Accuracy of each class: the share of its test examples predicted as it.

    Args:
        labels: `[n]` integer class ids.
        predictions: `[n]` predicted class ids, or `[n, classes]` scores (argmax).
        num_classes: Number of classes. Defaults to None (from the labels and
            predictions).

    Returns:
        A float array `[num_classes]`; NaN for a class with no test example.
    """
    y = _as_labels(labels, "labels")
    p = np.asarray(predictions)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    p = _as_labels(p, "predictions")
    if len(p) != len(y) or len(y) == 0:
        raise ValueError("`labels` and `predictions` must be non-empty and of the same length. "
                         f"Received: {len(y)} and {len(p)}")
    classes = int(num_classes or max(y.max(), p.max()) + 1)
    if y.max() >= classes or y.min() < 0:
        raise ValueError(f"`labels` must be class ids in [0, {classes}). "
                         f"Received ids from {y.min()} to {y.max()}")
    total = np.bincount(y, minlength=classes).astype(np.float64)
    hit = np.bincount(y[p == y], minlength=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hit / np.maximum(total, 1), np.nan)


def shot_thresholds(train_counts, reference_max=1280):
    """Many/few-shot thresholds scaled to a dataset's largest class.

    The long-tail literature (ImageNet-LT: at most 1280 training images per
    class) calls a class many-shot above 100 training examples and few-shot
    below 20. On a dataset whose largest class has `n_max` examples these
    become `100 * n_max / 1280` and `20 * n_max / 1280` (for long-tailed
    Fashion-MNIST, n_max 6000: 469 and 94).

    Args:
        train_counts: Training examples per class.
        reference_max: Largest class of the dataset the thresholds 100 and 20
            were made for. Defaults to 1280 (ImageNet-LT); pass
            `max(train_counts)` to keep 100 and 20.

    Returns:
        `(many, few)`: many-shot means more than `many` training examples,
        few-shot fewer than `few`, medium-shot the rest.
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or len(counts) == 0 or counts.min() < 0:
        raise ValueError("`train_counts` must be a non-empty list of counts >= 0. "
                         f"Received: {train_counts!r}")
    if not reference_max > 0:
        raise ValueError(f"`reference_max` must be > 0. Received: reference_max={reference_max!r}")
    scale = counts.max() / reference_max
    return 100 * scale, 20 * scale


def shot_accuracy(labels, predictions, train_counts, thresholds=None):
    """Overall, per-class and many/medium/few-shot accuracy on a (balanced) test set.

    Args:
        labels: `[n]` integer class ids of the test examples.
        predictions: `[n]` predicted class ids, or `[n, classes]` scores.
        train_counts: Training examples per class (e.g.
            `np.bincount(train_labels)`), which decide each class's group.
        thresholds: `(many, few)`: a class is many-shot above `many` training
            examples, few-shot below `few`, medium-shot otherwise. Defaults to
            None: `shot_thresholds(train_counts)` (100 and 20 scaled to the
            largest class).

    Returns:
        A dict with `overall` (accuracy over all test examples), `per_class`
        (a list; NaN for a class without test examples), `many`, `medium`, `few` (the mean of the group's per-class
        accuracies; NaN for an empty group), `groups` (the class ids of each
        group) and `thresholds`.
    """
    counts = np.asarray(train_counts)
    acc = per_class_accuracy(labels, predictions, num_classes=len(counts))
    many, few = shot_thresholds(counts) if thresholds is None else thresholds
    if not few <= many:
        raise ValueError(f"`thresholds` must be (many, few) with few <= many. "
                         f"Received: thresholds={thresholds!r}")
    groups = {"many": np.flatnonzero(counts > many),
              "medium": np.flatnonzero((counts <= many) & (counts >= few)),
              "few": np.flatnonzero(counts < few)}
    y = _as_labels(labels, "labels")
    p = np.asarray(predictions)
    p = p.argmax(axis=1) if p.ndim == 2 else p
    out = {"overall": float(np.mean(p == y)), "per_class": acc.tolist(),
           "groups": {k: v.tolist() for k, v in groups.items()},
           "thresholds": (float(many), float(few))}
    for name, ids in groups.items():
        out[name] = float(np.nanmean(acc[ids])) if len(ids) and not np.all(np.isnan(acc[ids])) \
            else float("nan")
    return out



def classifier_accuracy(classifier, dataset, train_counts=None, thresholds=None):
    """Top-1 and per-class accuracy of a classifier on a labelled dataset,
    and with `train_counts` the many/medium/few-shot split (`shot_accuracy`).

    Args:
        classifier: A callable from images to logits `[batch, classes]` (e.g. a
            `LinearClassifier`).
        dataset: A `tf.data.Dataset` of batches `(images, labels)`.
        train_counts: Training examples per class, or None. Defaults to None.
        thresholds: `(many, few)` for `shot_accuracy`. Defaults to None.

    Returns:
        `shot_accuracy`'s dict with `train_counts`; otherwise a dict with
        `overall` and `per_class`.
    """
    labels, preds = [], []
    logits = tf.function(lambda x: classifier(x, training=False))
    for x, y in dataset:
        preds.append(np.argmax(np.asarray(logits(x)), axis=-1))
        labels.append(np.asarray(y).reshape(-1))
    labels, preds = np.concatenate(labels), np.concatenate(preds)
    if train_counts is not None:
        return shot_accuracy(labels, preds, train_counts, thresholds)
    return {"overall": float(np.mean(labels == preds)),
            "per_class": per_class_accuracy(labels, preds).tolist()}



def describe_accuracy(report):
    """`classifier_accuracy`'s or `shot_accuracy`'s dict as two lines of text:
    per-class accuracy, then (when present) the many/medium/few-shot split."""
    per_class = " ".join(f"{c}:{100 * a:.1f}" for c, a in enumerate(report["per_class"]))
    lines = [f"per-class top-1 (%): {per_class}"]
    if "many" in report:
        many, few = report["thresholds"]
        parts = [f"{name} ({len(report['groups'][name])} classes) {100 * report[name]:.2f}%"
                 for name in ("many", "medium", "few")]
        lines.append(f"many/medium/few-shot (> {many:.0f}, {few:.0f}-{many:.0f}, < {few:.0f} "
                     "training examples): " + ", ".join(parts))
    return "\n".join(lines)


def embedding_plot(embeddings, labels, path, class_names=None, title=None,
                   max_points=5000):
    """Saves a 2-D PCA projection of `embeddings`, coloured by class, as a PNG.

    Written atomically (temporary file, then rename). Needs matplotlib
    (`pip install "supcon_tf[plot]"`).

    Args:
        embeddings: `[n, dim]` features.
        labels: `[n]` integer class ids.
        path: Output `.png` path.
        class_names: Optional names for the legend. Defaults to None (ids).
        title: Plot title. Defaults to None.
        max_points: Plot at most this many points (the first ones).
            Defaults to 5000.

    Returns:
        `path`.
    """
    x, y = _check_pair(embeddings, labels, "embeddings", "labels")
    if not str(path).endswith(".png"):
        raise ValueError(f"`path` must end with .png. Received: path={path!r}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("embedding_plot needs matplotlib: "
                          "pip install 'supcon_tf[plot]'") from err
    x, y = x[:max_points], y[:max_points]
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    cmap = plt.get_cmap("tab10" if y.max() < 10 else "tab20")
    for c in np.unique(y):
        sel = y == c
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=cmap(int(c) % cmap.N),
                   label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if title:
        ax.set_title(title)
    ax.legend(markerscale=4, fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
