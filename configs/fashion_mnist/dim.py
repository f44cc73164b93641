"""Deep InfoMax's local objective (Hjelm et al., ICLR 2019) on Fashion-MNIST
at the recipe budget.

    python examples/pretrain.py --config configs/fashion_mnist/dim.py --model_dir runs/dim

One view per image (the simclr recipe at crop 0.3, the family's); each
image's global embedding against the batch's embeddings of the 14 x 14
locations at the end of the ResNet's second stage (``stage2_block2_out``),
its own positive, with the Jensen-Shannon estimator (the paper's choice).
The paper's encoders take their locals from a map before the last, where a
location sees part of the image; the last map's 4 x 4 locations each see it
all, and the objective is then met by features that only tell images apart
(docs/results/local_dense.md has the 12-epoch proxies behind this choice).
Embeddings of 64 from heads with a hidden layer of 128, not normalised (the
model's defaults). The recipe's keys: docs/methods.md
(supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections
from ml_collections.config_dict import placeholder

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "dim"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=placeholder(float))
    c.head = dict(dim=64, hidden_dims=(128,))
    c.model = dict(objective="dim", local_map="stage2_block2_out")
    return with_budget(c)
