"""InfoMin's augmentation on SimCLR, Fashion-MNIST: the zoo's
fashion_mnist_resnet18_infomin. The recipe is SimCLR's config with the
`infomin` augmentation (RandAugment per image on top of crop, flip and
colour jitter), so the two differ in their views alone.

    python examples/pretrain.py --config configs/fashion_mnist/infomin.py --model_dir runs/infomin

Override any value on the command line, e.g. `--config.augment.magnitude=5`.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.augment = dict(recipe="infomin", crop_min_scale=0.3, magnitude=10.0)
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(views=2)
    c.loss = dict(name="SupConLoss", temperature=0.2)
    return with_budget(c)
