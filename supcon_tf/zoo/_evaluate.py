"""The zoo's evaluations: `evaluate` (linear probe, kNN and k-means of a
model's embeddings, the settings the recorded values were measured with) and
`own_clustering` (the clustering a method makes itself, as MiCE's gate)."""

import numpy as np

from supcon_tf import clustering as _clustering
from supcon_tf import data as _data
from supcon_tf import evaluation as _evaluation

# What `evaluate` does, and so what the recorded accuracies mean.
LINEAR_PROBE = {"steps": 500, "learning_rate": 0.1, "weight_decay": 1e-4}
KNN = {"k": 20, "temperature": 0.07}
# The methods whose model clusters the images itself, and what a zoo entry
# of theirs serves of it (`own_clustering`).
OWN_CLUSTERING = {
    "mice": "the gate's clusters (`clustering.mice_gate_clusters`) from the projection output",
}


def _arrays(dataset, split, size, data_dir):
    if size is not None:
        split = f"{split}[:{int(size)}]"
    ds = _data.load(dataset, split, data_dir=data_dir)
    images, labels = [], []
    for image, label in ds.batch(4096):
        images.append(image.numpy())
        labels.append(label.numpy())
    return np.concatenate(images).astype("float32"), np.concatenate(labels)


def evaluate(model, dataset="fashion_mnist", train_size=None, test_size=None,
             data_dir=None, progress=None):
    """Linear-probe and kNN top-1 of `model`'s embeddings on `dataset`'s test
    set, with the settings the zoo's recorded values were measured with
    (`LINEAR_PROBE`, `KNN`; reference set: the training split).

    Args:
        model: A zoo model (`load`) or any callable from images to embeddings.
        dataset: Dataset name for `supcon_tf.data`. Defaults to "fashion_mnist".
        train_size: Use the first N training images. Defaults to None (all).
        test_size: Use the first N test images. Defaults to None (all).
        data_dir: Optional data folder. Defaults to None.
        progress: None, or a function called with a line of text as each
            stage starts (loading, embedding, linear probe, kNN, clustering;
            e.g. `print`). Defaults to None.

    Returns:
        A dict with `linear_top1`, `knn_top1`, the clustering scores of the
        test embeddings (`evaluation.cluster_scores` with k = the number of
        classes: `cluster_accuracy`, `nmi`, `ari`), `train_size`,
        `test_size`, and the test embeddings and labels (`test_embeddings`,
        `test_labels`).
    """
    say = progress if progress is not None else (lambda line: None)
    say(f"loading {dataset}")
    x_train, y_train = _arrays(dataset, "train", train_size, data_dir)
    x_test, y_test = _arrays(dataset, "test", test_size, data_dir)
    say(f"embedding {len(x_train)} training and {len(x_test)} test images")
    z_train = _evaluation.embed(model, x_train)
    z_test = _evaluation.embed(model, x_test)
    classes = _data.num_classes(dataset)
    say(f"linear probe ({LINEAR_PROBE['steps']} steps)")
    linear = _evaluation.linear_probe(z_train, y_train, z_test, y_test,
                                      num_classes=classes, **LINEAR_PROBE)
    say("kNN")
    knn = _evaluation.knn_accuracy(z_train, y_train, z_test, y_test,
                                   num_classes=classes, **KNN)
    say(f"clustering (k-means, k = {classes})")
    clusters = _evaluation.cluster_scores(z_test, y_test, k=classes)
    return {"linear_top1": linear["top1"], "knn_top1": knn,
            "cluster_accuracy": clusters["accuracy"], "nmi": clusters["nmi"],
            "ari": clusters["ari"],
            "train_size": len(y_train), "test_size": len(y_test),
            "test_embeddings": z_test, "test_labels": y_test}


def own_clustering(name, test_size=None, data_dir=None, cache=None):
    """The clustering of the test set that the zoo entry `name`'s method
    makes itself (`OWN_CLUSTERING`: MiCE's gate), from its archive (loaded as
    `load` does, sha256 checked), scored as `evaluation.cluster_scores`
    scores k-means.

    Args:
        name: A zoo entry of a method in `OWN_CLUSTERING`, exported with its
            projection head.
        test_size: Use the first N test images. Defaults to None (all).
        data_dir: Optional data folder. Defaults to None.
        cache: As `load`. Defaults to None.

    Returns:
        A dict: `accuracy` (Hungarian-matched), `nmi`, `ari`,
        `clusters_used` (how many clusters hold an image), `test_size`.
    """
    from supcon_tf import zoo

    entry = zoo.get(name)
    method = entry["method"]
    if method not in OWN_CLUSTERING:
        raise ValueError(f"{name} is a {method} model, which makes no clustering of its own "
                         f"(the methods that do: {sorted(OWN_CLUSTERING)}); "
                         "`evaluate` scores k-means of any entry's embeddings.")
    if not entry.get("has_projection"):
        raise ValueError(f"{name} was exported without its projection head, which holds "
                         f"{OWN_CLUSTERING[method]}; export it again with --projection.")
    images, labels = _arrays(entry["dataset"], "test", test_size, data_dir)
    projection = _evaluation.embed(zoo.load(name, output="projection", cache=cache), images)
    clusters = _clustering.mice_gate_clusters(projection, entry["recipe"]["model"]["num_experts"])
    return {"accuracy": _clustering.clustering_accuracy(labels, clusters),
            "nmi": _clustering.nmi(labels, clusters), "ari": _clustering.ari(labels, clusters),
            "clusters_used": int(len(np.unique(clusters))), "test_size": len(labels)}
