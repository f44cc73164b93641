"""LoCo on Fashion-MNIST at the recipe budget: SimCLR's recipe (augmentation,
head 512 -> 128, NT-Xent at T 0.2) with the encoder trained stage by stage.

    python examples/pretrain.py --config configs/fashion_mnist/loco.py --model_dir runs/loco

The ResNet-18's four stages (the stem in the first) make three overlapping
units (stages 1-2, 2-3, 3-4), each with its own head and loss. Greedy
InfoMax, four isolated units: `--config.model.overlap=False`. It runs
without XLA (`jit_compile="false"`): compiled as one program, the step keeps
every unit's activations alive.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "loco"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(overlap=True)
    c.loss = dict(name="SupConLoss", temperature=0.2)
    # Without XLA: XLA compiles the step as one program and keeps every
    # unit's activations (benchmarks/local_memory.py), which local learning
    # is there to avoid.
    return with_budget(c, jit_compile="false")
