"""Plots a sweep of pretraining runs: linear-evaluation top-1 against the
swept value, with the InfoNCE estimate of the information the two views
share beside it (InfoMin's "sweet spot" figure).

    python examples/plot_sweep.py --runs runs/crop_0.08,runs/crop_0.2,runs/crop_0.4 \\
        --values 0.08,0.2,0.4 --xlabel "crop lower bound" --out sweep.png

Each run folder holds `pretrain.json` (examples/pretrain.py) and
`linear/linear_eval.json` (examples/linear_eval.py). The estimate is
InfoNCE's lower bound log(2B - 1) - L from the final epoch's loss L of a
two-view NT-Xent at global batch B (every other view of the batch a
negative): more shared information between the views gives a larger value.
"""

import json
import math
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "Run folders, in sweep order.")
flags.DEFINE_list("values", None, "The swept value of each run.")
flags.DEFINE_string("xlabel", "swept value", "The x axis' label.")
flags.DEFINE_string("title", None, "The figure's title.")
flags.DEFINE_string("out", "sweep.png", "Output PNG (written through a temporary name).")


def read(run):
    """`(top-1 in %, InfoNCE estimate in nats)` of a run folder."""
    with open(os.path.join(run, "pretrain.json")) as f:
        record = json.load(f)
    with open(os.path.join(run, "linear", "linear_eval.json")) as f:
        top1 = 100 * json.load(f)["test_top1"]
    batch = record["config"]["batch_size"]
    return top1, math.log(2 * batch - 1) - record["history"]["loss"][-1]


def plot(runs, values, xlabel, out, title=None):
    """Writes the figure to `out`; returns the rows `(value, top-1, estimate)`."""
    if len(runs) != len(values) or not runs:
        raise ValueError("`runs` and `values` must be lists of the same, non-zero length. "
                         f"Received: {len(runs)} runs, {len(values)} values")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [(float(v),) + read(r) for r, v in zip(runs, values)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    xs = [r[0] for r in rows]
    ax.plot(xs, [r[1] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("linear eval top-1 (%)", color="tab:blue")
    twin = ax.twinx()
    twin.plot(xs, [r[2] for r in rows], "s--", color="tab:orange")
    twin.set_ylabel("InfoNCE estimate of shared info (nats)", color="tab:orange")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    temporary = out + ".tmp.png"
    fig.savefig(temporary)
    plt.close(fig)
    os.replace(temporary, out)
    return rows


def main(argv):
    del argv
    for value, top1, estimate in plot(FLAGS.runs, FLAGS.values, FLAGS.xlabel, FLAGS.out,
                                      FLAGS.title):
        print(f"{value:g}: top-1 {top1:.2f}%, InfoNCE estimate {estimate:.3f} nats")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["runs", "values"])
    app.run(main)
