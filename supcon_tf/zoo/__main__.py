"""Command line of the model zoo.

    python -m supcon_tf.zoo list
    python -m supcon_tf.zoo eval NAME [--train_size N] [--test_size N] [--data_dir DIR]
    python -m supcon_tf.zoo eval PATH.keras [--dataset D] [--train_size N] ...

`eval` loads NAME exactly as `supcon_tf.zoo.load` does (sha256 checked),
recomputes its linear-probe and kNN top-1 on the test set and prints them
beside the recorded values, then the clustering scores of the test
embeddings (spherical k-means with k = the classes: Hungarian-matched
accuracy, NMI, ARI), and for a method that clusters the images itself (MiCE:
`zoo.OWN_CLUSTERING`) that clustering's scores beside the recorded ones.

`eval PATH.keras` scores an encoder saved by `examples/pretrain.py` (its
`encoder.keras`) with the same protocols, on `--dataset` (default
fashion_mnist), with nothing recorded to compare against.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from supcon_tf import zoo  # noqa: E402


def _list(_):
    rows = zoo.list()
    if not rows:
        print("The zoo is empty.")
        return 0
    header = ("name", "method", "encoder", "params", "linear", "kNN", "epochs")
    table = [header] + [(
        r["name"], r["method"], f"{r['encoder']} w{r.get('width', '')}",
        f"{r.get('parameters', 0):,}", f"{100 * r.get('linear_top1', float('nan')):.2f}%",
        f"{100 * r.get('knn_top1', float('nan')):.2f}%", str(r.get("epochs", "")))
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _progress():
    start = time.time()

    def progress(line):
        print(f"  [{time.time() - start:5.0f} s] {line} ...", file=sys.stderr, flush=True)
    return progress


def _print_clustering(result):
    print(f"  clustering    accuracy {100 * result['cluster_accuracy']:6.2f}%   "
          f"NMI {result['nmi']:.3f}   ARI {result['ari']:.3f}   "
          "(k-means of the test embeddings, k = classes)")


def _eval(args):
    if args.name.endswith(".keras"):
        return _eval_file(args)
    if args.dataset is not None:
        raise ValueError("--dataset is for a saved encoder (PATH.keras); a zoo entry is "
                         f"scored on its own dataset. Received: --dataset={args.dataset}")
    entry = zoo.get(args.name)
    model = zoo.load(args.name)
    progress = _progress()
    result = zoo.evaluate(model, dataset=entry["dataset"], train_size=args.train_size,
                          test_size=args.test_size, data_dir=args.data_dir, progress=progress)
    subset = args.train_size is not None or args.test_size is not None
    print(f"{args.name}: {entry['dataset']} test set, {result['test_size']} test and "
          f"{result['train_size']} training images"
          + (" (a subset: the recorded values are on the full sets)" if subset else ""))
    for key, label in (("linear_top1", "linear top-1"), ("knn_top1", "kNN top-1")):
        got, recorded = 100 * result[key], 100 * entry[key]
        print(f"  {label:<13} {got:6.2f}%   recorded {recorded:6.2f}%   "
              f"difference {got - recorded:+.2f} points")
    _print_clustering(result)
    recorded = entry.get("own_clustering")
    if recorded is not None:
        progress(f"{entry['method']}'s own clustering")
        own = zoo.own_clustering(args.name, test_size=args.test_size, data_dir=args.data_dir)
        got = 100 * own["accuracy"]
        print(f"  own clustering accuracy {got:6.2f}%   recorded {100 * recorded['accuracy']:6.2f}%   "
              f"difference {got - 100 * recorded['accuracy']:+.2f} points   NMI {own['nmi']:.3f}   "
              f"ARI {own['ari']:.3f}   ({entry['method']}: "
              f"{zoo.OWN_CLUSTERING[entry['method']]})")
    return 0


def _eval_file(args):
    """`eval PATH.keras`: an encoder saved by examples/pretrain.py."""
    if not os.path.isfile(args.name):
        raise FileNotFoundError(f"No saved encoder at {args.name!r} (eval takes a zoo name or "
                                "the path of an encoder.keras).")
    import keras
    model = keras.models.load_model(args.name)
    dataset = args.dataset or "fashion_mnist"
    result = zoo.evaluate(model, dataset=dataset, train_size=args.train_size,
                          test_size=args.test_size, data_dir=args.data_dir,
                          progress=_progress())
    print(f"{args.name}: {dataset} test set, {result['test_size']} test and "
          f"{result['train_size']} training images")
    print(f"  linear top-1  {100 * result['linear_top1']:6.2f}%")
    print(f"  kNN top-1     {100 * result['knn_top1']:6.2f}%")
    _print_clustering(result)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m supcon_tf.zoo",
                                     description="supcon_tf's model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="List the zoo's models.").set_defaults(run=_list)
    ev = commands.add_parser("eval", help="Recompute a model's linear and kNN top-1 (a zoo "
                             "name), or score a saved encoder (PATH.keras).")
    ev.add_argument("name", help="A zoo name, or the path of an encoder.keras.")
    ev.add_argument("--train_size", type=int, default=None,
                    help="Use the first N training images (default: all).")
    ev.add_argument("--test_size", type=int, default=None,
                    help="Use the first N test images (default: all).")
    ev.add_argument("--data_dir", default=None, help="Optional data folder.")
    ev.add_argument("--dataset", default=None,
                    help="The dataset of a saved encoder (PATH.keras; default fashion_mnist).")
    ev.set_defaults(run=_eval)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
