"""MiCE (mixture of contrastive experts) on Fashion-MNIST: ten experts and a
gate whose posterior clusters the images.

    python examples/pretrain.py --config configs/fashion_mnist/mice.py --model_dir runs/mice

The official defaults (TsungWeiTsai/MiCE): tau = kappa = 1.0, momentum
0.999, a queue of 16384 keys, 128 dimensions per expert; the views of the
`simclr` recipe at crop 0.3, as the family's other MoCo-style configs;
the recipe budget's optimizer and epochs. The clustering is the posterior's:
`MiCEModel.cluster` on the saved model.keras. The recipe's keys:
docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "mice"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3)
    c.head = dict(dim=128, hidden_dims=None)
    c.model = dict(num_experts=10, queue_size=16384, momentum=0.999, temperature=1.0,
                   kappa=1.0, bn_groups=2)
    return with_budget(c)
