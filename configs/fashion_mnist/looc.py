"""Leave-one-out Contrastive Learning on Fashion-MNIST: the zoo's
fashion_mnist_resnet18_looc.

    python examples/pretrain.py --config configs/fashion_mnist/looc.py --model_dir runs/looc

Two augmentation families, rotation (quarter turns) and colour (the simclr
recipe's brightness and contrast distortion at strength 1, p 0.8), give a
query and three keys per image (k_0 independent, k_rotation sharing the
query's turn, k_color its colour draw) and three embedding spaces on one
ResNet-18 (invariant, rotation, colour), each with SimCLR's head; the
augmenter makes the crop and flip of every view (colour off: it is a
family). run/encoder.keras is LooC (the backbone), run/encoder_concat.keras
LooC++ (the three spaces side by side). Its all-invariant baseline with the
same augmentations is SimCLR with quarter turns:
`--config configs/fashion_mnist/simclr.py --config.augment.rotate90=True
--config.augment.color_strength=1.0`.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

import ml_collections

# The budget shared by these configs (a file beside this one).
with_budget = runpy.run_path(os.path.join(os.path.dirname(__file__), "budget.py"))["with_budget"]


def get_config():
    c = ml_collections.ConfigDict()
    c.method = "looc"
    c.augment = dict(recipe="simclr", crop_min_scale=0.3, color_strength=0.0)
    c.head = dict(dim=128, hidden_dims=(512,))
    c.model = dict(families=("rotation", "color"), temperature=0.2, seed=0)
    c.loss = dict(name="LooCLoss", temperature=0.2)
    return with_budget(c)
