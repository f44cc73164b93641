"""A guard against a crash in TensorFlow 2.21's XLA:CPU.

TensorFlow 2.21 runs some XLA reductions through YNNPACK ("YNN fusions").
Building a YNNPACK executable for such a fusion is not thread safe: when two
ops that run the same compiled XLA function execute at the same moment and
both need a new executable (the first steps of a graph that calls a loss
twice, e.g. `MoCoModel(symmetric=True)`), they write into one shared vector
and the process dies with a segmentation fault or `std::bad_alloc`
(`xla::cpu::EmitYnnSubgraph` under `YnnFusionThunk::CreateYnnExecutable` in
the core dump; 3 of 10 short symmetric-queue runs on an idle 2-core
machine, 0 of 20 with the flag below: docs/losses.md has the command).

The XLA functions of `supcon_tf.losses` (`_fused`, `_general`) have row
reductions that XLA 2.21 hands to YNNPACK at large enough sizes. Before
anything is compiled, this module removes the reduction from the YNN fusion
types (`--xla_cpu_experimental_ynn_fusion_type=-reduce`); XLA then emits its
own loops (docs/losses.md says how to compare their speed).

It touches `XLA_FLAGS` only
- on TensorFlow 2.21 (older versions have no such flag, and XLA aborts on an
  unknown flag; newer ones are not known to need it);
- when `XLA_FLAGS` does not already set `xla_cpu_experimental_ynn_fusion_type`
  (the user's choice wins);
- when `SUPCON_TF_KEEP_XLA_FLAGS` is not set (set it to opt out).

XLA reads `XLA_FLAGS` once, at its first compilation in the process: import
`supcon_tf` before compiling anything with XLA for the guard to apply.
"""

import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def needs_guard(tf_version, environ):
    """Whether `FLAG` should be added to `environ["XLA_FLAGS"]`."""
    if environ.get("SUPCON_TF_KEEP_XLA_FLAGS"):
        return False
    if "xla_cpu_experimental_ynn_fusion_type" in environ.get("XLA_FLAGS", ""):
        return False
    return tf_version.split(".")[:2] == ["2", "21"]


def apply(tf_version, environ=os.environ):
    """Adds `FLAG` to `environ["XLA_FLAGS"]` when `needs_guard`; returns
    whether it did."""
    if not needs_guard(tf_version, environ):
        return False
    environ["XLA_FLAGS"] = (environ.get("XLA_FLAGS", "") + " " + FLAG).strip()
    return True
