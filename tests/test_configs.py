"""The recipes under configs/: each builds its model and trains a step on
real images, and each zoo entry's config holds the values its run recorded."""

import glob
import json
import os

import numpy as np
import pytest

import supcon_tf as sct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, ROOT)
                 for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
                 if "def get_config" in open(p).read() and os.path.basename(p) != "ce.py")
# (configs/fashion_mnist/ce.py is examples/train_ce.py's: tests/test_examples.py runs it.)
REGISTRY = json.load(open(os.path.join(ROOT, "supcon_tf", "zoo", "registry.json")))

# A value examples/pretrain.py recorded under its older flags -> where the
# recipe keeps it (the first path the recipe has; a flag the method does not
# use has none).
FLAG_PATHS = {
    "epochs": ["epochs"], "batch_size": ["batch_size"], "seed": ["seed"],
    "optimizer": ["optimizer.name"], "lr": ["optimizer.lr"],
    "weight_decay": ["optimizer.weight_decay"], "warmup_epochs": ["optimizer.warmup_epochs"],
    "encoder": ["encoder.name"], "width": ["encoder.width"], "augment": ["augment.recipe"],
    "crop_min_scale": ["augment.crop_min_scale"], "color_strength": ["augment.color_strength"],
    "projection_dim": ["head.dim"], "projection_hidden_dims": ["head.hidden_dims"],
    "dataset": ["data.dataset"], "train_size": ["data.train_size"],
    "mixed_precision": ["mixed_precision"], "distribute": ["distribute"],
    "temperature": ["loss.temperature", "model.temperature"],
    "queue_size": ["model.queue_size"], "momentum": ["model.momentum"],
    "symmetric": ["model.symmetric"], "bn_groups": ["model.bn_groups"],
    "predictor_hidden_dim": ["model.predictor_hidden_dim"],
    "barlow_lambda": ["model.lambda_"], "vicreg_sim": ["model.sim_coeff"],
    "vicreg_std": ["model.std_coeff"], "vicreg_cov": ["model.cov_coeff"],
    "tau_plus": ["loss.tau_plus"], "beta": ["loss.beta"],
    "npid_loss": ["model.loss"], "npid_negatives": ["model.num_negatives"],
    "num_clusters": ["model.num_clusters"], "pcl_warmup_epochs": ["model.warmup_epochs"],
    "pcl_negatives": ["model.num_prototype_negatives"],
    "num_prototypes": ["model.num_prototypes"], "sinkhorn_epsilon": ["model.epsilon"],
    "swav_queue_start_epoch": ["model.queue_start_epoch"],
    "freeze_prototypes_steps": ["model.freeze_prototypes_steps"],
}


def _lookup(recipe, path):
    value = recipe
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def _same(a, b):
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return [float(v) for v in (a or [])] == [float(v) for v in (b or [])]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_zoo_entry_names_the_config_that_holds_its_recorded_values(name):
    entry = REGISTRY[name]
    recipe = sct.methods.recipe_from_file(os.path.join(ROOT, entry["config"]))
    ce = entry["method"] == "ce"             # examples/train_ce.py's, not a registered method
    script = "train_ce.py" if ce else "pretrain.py"
    if not ce:
        recipe = sct.methods.resolve(recipe)
    assert entry["command"].startswith(f"python examples/{script} --config {entry['config']}")
    assert sct.methods.overrides(recipe, entry["recipe"], resolved=not ce) == []
    assert recipe["method"] == entry["method"] or ce
    if "training_flags" not in entry:         # trained from its config file
        return
    # Trained with examples/pretrain.py's older flags: the values they recorded.
    flags = entry["training_flags"]
    assert recipe["method"] == flags.get("method", "ce")
    assert (recipe.get("loss", {}).get("name") == "HardNegativeLoss") == (flags.get("loss") == "hcl")
    compared = 0
    for flag, paths in FLAG_PATHS.items():
        if flag not in flags:
            continue
        for path in paths:
            try:
                value = _lookup(recipe, path)
            except KeyError:
                continue
            assert _same(value, flags[flag]), (flag, path, value, flags[flag])
            compared += 1
            break
    assert compared >= 12


def test_a_config_key_the_recipe_does_not_know_is_an_error():
    with pytest.raises(ValueError, match="Unknown recipe key 'epoch'"):
        sct.methods.resolve({"method": "simclr", "epoch": 3})
    with pytest.raises(ValueError, match=r"\['lr_'\] in recipe\['optimizer'\]"):
        sct.methods.resolve({"method": "simclr", "optimizer": {"lr_": 1.0}})
    with pytest.raises(ValueError, match="Unknown method 'simclr2'. Registered: barlow"):
        sct.methods.resolve({"method": "simclr2"})


@pytest.fixture(scope="module")
def images():
    data = sct.data.load("fashion_mnist", "train[:64]")
    return data


@pytest.mark.parametrize("path", CONFIGS)
def test_each_config_builds_its_model_and_trains_a_step(path, images):
    recipe = sct.methods.recipe_from_file(os.path.join(ROOT, path))
    recipe["encoder"]["width"] = 0.0625               # the recipe, on a smaller encoder
    recipe["batch_size"] = 32
    if recipe["method"] == "pcl":
        recipe["model"]["warmup_epochs"] = 0          # so the step uses its clusterings
    if recipe["method"] == "mice":
        recipe["model"]["queue_size"] = 256           # (16384 keys of 11 x 128: smaller too)
    cls = sct.methods.get(recipe["method"])
    model, loss = sct.methods.build(recipe, (28, 28, 1), num_examples=64, num_classes=10)
    assert type(model) is cls
    # Eagerly: tracing a ResNet-18 train step was most of each test's time
    # (7.5 s of a Barlow Twins config's 7.8 s; eagerly 2.0 s). The contract
    # test traces every method's train step, with XLA, and the example tests
    # run examples/pretrain.py's compiled step on several of these configs.
    model.compile(optimizer=sct.methods.optimizer(recipe, steps_per_epoch=2), loss=loss,
                  run_eagerly=True)
    batches = sct.data.batches(sct.methods.training_data(cls, images), 32, training=True, seed=0)
    history = model.fit(batches, epochs=1, verbose=0,
                        callbacks=model.recipe_callbacks(images.map(lambda x, y: x)))
    assert np.isfinite(history.history["loss"][0])
    assert model.optimizer.iterations.numpy() == 2


def test_a_pcl_recipe_shorter_than_its_warm_up_is_refused():
    """It would train MoCo alone (pretrain.py turns this into a usage error)."""
    recipe = sct.methods.recipe_from_file(os.path.join(ROOT, "configs/fashion_mnist/pcl.py"))
    recipe.update(epochs=4)
    recipe["encoder"]["width"] = 0.0625
    with pytest.raises(ValueError, match="would train MoCo alone"):
        sct.methods.build(recipe, (28, 28, 1), num_examples=64, num_classes=10)
