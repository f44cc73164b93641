"""SimCLR with HCL's hard negatives (beta 0: the debiased loss) on Fashion-MNIST:
the zoo's fashion_mnist_resnet18_hcl. SimCLR's recipe (simclr.py) with the loss
replaced.

    python examples/pretrain.py --config configs/fashion_mnist/hcl.py --model_dir runs/hcl

Override any value on the command line, e.g. `--config.loss.beta=0`.
The recipe's keys: docs/methods.md (supcon_tf.methods.DEFAULTS).
"""

import os
import runpy

simclr = runpy.run_path(os.path.join(os.path.dirname(__file__), "simclr.py"))["get_config"]


def get_config():
    c = simclr()
    c.loss = dict(name="HardNegativeLoss", temperature=0.2, tau_plus=0.1, beta=1.0)
    return c
