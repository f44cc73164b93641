"""Plots sweeps of pretraining runs: linear-evaluation top-1 against the
swept value, with the InfoNCE estimate of the information the two views
share beside it (InfoMin's "sweet spot" figure). One line per series.

    python examples/plot_sweep.py --xlabel "crop lower bound" --out sweep.png \\
        --series "infomin:runs/crop_0.08=0.08,runs/crop_0.2=0.2,runs/crop_1.0=1.0" \\
        --series "simclr:runs/simclr_crop_0.08=0.08,runs/simclr_crop_1.0=1.0"

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
flags.DEFINE_multi_string("series", None, 'A series, "label:run=value,run=value,...".')
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


def parse(series):
    """`"label:run=value,..."` -> `(label, [(run, value), ...])`."""
    label, sep, points = series.partition(":")
    try:
        pairs = [(run, float(value)) for run, value in
                 (point.rsplit("=", 1) for point in points.split(",") if point)]
    except ValueError:
        pairs = None
    if not sep or not pairs:
        raise ValueError('A series is "label:run=value,run=value,...". '
                         f"Received: {series!r}")
    return label, pairs


def plot(series, xlabel, out, title=None):
    """Writes the figure of `series` (`[(label, [(run, value), ...]), ...]`)
    to `out`; returns `{label: [(value, top-1, estimate), ...]}` (by value)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    twin = ax.twinx()
    table = {}
    for k, (label, points) in enumerate(series):
        rows = sorted((value,) + read(run) for run, value in points)
        table[label] = rows
        color = f"C{k}"
        xs = [r[0] for r in rows]
        ax.plot(xs, [r[1] for r in rows], "o-", color=color, label=f"{label}: top-1")
        twin.plot(xs, [r[2] for r in rows], "s:", color=color, alpha=0.6,
                  label=f"{label}: InfoNCE estimate")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("linear eval top-1 (%), solid")
    twin.set_ylabel("InfoNCE estimate of shared info (nats), dotted")
    lines = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="lower center")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    temporary = out + ".tmp.png"
    fig.savefig(temporary)
    plt.close(fig)
    os.replace(temporary, out)
    return table


def main(argv):
    del argv
    if not FLAGS.series:
        raise app.UsageError("Give at least one --series.")
    table = plot([parse(s) for s in FLAGS.series], FLAGS.xlabel, FLAGS.out, FLAGS.title)
    for label, rows in table.items():
        for value, top1, estimate in rows:
            print(f"{label} {value:g}: top-1 {top1:.2f}%, InfoNCE estimate {estimate:.3f} nats")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
