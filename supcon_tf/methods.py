"""The family's registry, and models built from recipes.

Every method of the family is a `ContrastiveModel` subclass that declares
its `method_name`; `get(name)` returns the class and `names()` lists them.
A recipe is a plain dict (the config files under `configs/` hold one each)
that says everything a pretraining run needs: the method and its
constructor arguments, encoder, head, augmentation, loss, optimizer,
schedule, epochs and batch. `build` turns a recipe into a compiled-ready
model and its loss, `optimizer` into the optimizer of its schedule:
`examples/pretrain.py` runs every registered method through these two.

A method of your own joins with `register`:

>>> import supcon_tf as sct
>>> @sct.methods.register
... class MySimCLR(sct.models.SupConModel):
...     method_name = "my_simclr"
>>> sct.methods.get("my_simclr") is MySimCLR
True

The recipe's keys and their defaults are `DEFAULTS`; docs/methods.md
describes each, and the class's `from_recipe` says which of `model`'s keys
are not constructor arguments.
"""

import copy
import importlib.util
import os

import keras

from supcon_tf import augment, data, encoders, losses, models, optimizers
from supcon_tf.heads import ProjectionHead

_REGISTRY = {}

DEFAULTS = {
    "method": None,
    # Constructor arguments of the method's class (see `from_recipe`).
    "model": {},
    # ProjectionHead(dim, hidden_dims=...) with the method's `head_options`;
    # hidden_dims None: one hidden layer as wide as the encoder's features.
    "head": {"dim": 128, "hidden_dims": None},
    # A `supcon_tf.losses` class name and its arguments; None: the method's own.
    "loss": {"name": None},
    "encoder": {"name": "resnet18", "width": 0.25, "synchronized_bn": None},
    # `supcon_tf.augment.<recipe>`; None keeps the recipe's default.
    "augment": {"recipe": "supcon", "crop_min_scale": None, "color_strength": None,
                "magnitude": None, "rotate90": False},
    "optimizer": {"name": "sgd", "lr": 0.5, "weight_decay": 1e-4, "warmup_epochs": 1.0},
    "data": {"dataset": "fashion_mnist", "train_size": None, "long_tailed_ratio": None,
             "long_tailed_profile": "exponential"},
    "epochs": 2,
    "batch_size": 256,
    "seed": 0,
    "jit_compile": "auto",
    "mixed_precision": "none",
    "distribute": "none",
}


def register(cls):
    """Registers a `ContrastiveModel` subclass under its `method_name`
    (usable as a class decorator). Re-registering a name replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, models.ContrastiveModel)):
        raise TypeError("`register` takes a ContrastiveModel subclass. "
                        f"Received: {cls!r}")
    name = getattr(cls, "method_name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__} needs a `method_name` (an identifier) to be "
                         f"registered. Received: method_name={name!r}")
    _REGISTRY[name] = cls
    return cls


def get(name):
    """The registered class of the method `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown method {name!r}. Registered: {', '.join(names())}")
    return _REGISTRY[name]


def names():
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def resolve(recipe):
    """`recipe` (a dict, or anything with `to_dict()`) completed with
    `DEFAULTS`; a `ValueError` names a key that is not a recipe key."""
    if hasattr(recipe, "to_dict"):
        recipe = recipe.to_dict()
    if not isinstance(recipe, dict):
        raise TypeError(f"A recipe is a dict. Received: {type(recipe).__name__}")
    full = copy.deepcopy(DEFAULTS)
    for key, value in recipe.items():
        if key not in DEFAULTS:
            raise ValueError(f"Unknown recipe key {key!r}. Known: {', '.join(DEFAULTS)}")
        if isinstance(DEFAULTS[key], dict) and key not in ("model", "loss"):
            unknown = set(value) - set(DEFAULTS[key])
            if unknown:
                raise ValueError(f"Unknown key(s) {sorted(unknown)} in recipe[{key!r}]. "
                                 f"Known: {', '.join(DEFAULTS[key])}")
        full[key] = ({**full[key], **value} if isinstance(DEFAULTS[key], dict)
                     else value)
    get(full["method"])
    return full


def recipe_from_file(path):
    """The recipe of a config file: the dict of its `get_config()` (the
    files under `configs/` return an `ml_collections.ConfigDict`)."""
    spec = importlib.util.spec_from_file_location("_supcon_tf_config", path)
    if spec is None or not os.path.isfile(path):
        raise ValueError(f"No config file at {path!r}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def training_data(method, dataset):
    """`dataset` of `(image, label)` pairs as the method's `fit` takes it:
    labels dropped when the class's `labels` is `"drop"`, each example's
    index added (`supcon_tf.data.with_index`) when it is `indexed`."""
    cls = get(method) if isinstance(method, str) else method
    if cls.labels == "drop":
        dataset = dataset.map(_image_only)
    return data.with_index(dataset) if cls.indexed else dataset


def _image_only(image, label):
    return image


def augmenter(recipe, image_shape, seed=None, **overrides):
    """The recipe's augmentation layer for images of `image_shape`
    (`supcon_tf.augment.from_spec`)."""
    return augment.from_spec(resolve(recipe)["augment"], image_shape, seed=seed, **overrides)


def make_loss(spec):
    """The loss of `recipe["loss"]`: `{"name": <supcon_tf.losses class>,
    **arguments}`, or None (the method's own) when the name is None. An
    argument set to None takes the class's default."""
    spec = {k: v for k, v in spec.items() if v is not None or k == "name"}
    name = spec.pop("name", None)
    if name is None:
        if spec:
            raise ValueError(f"recipe['loss'] has arguments {sorted(spec)} but no name.")
        return None
    cls = getattr(losses, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.losses.Loss)):
        raise ValueError(f"recipe['loss']['name'] must name a supcon_tf.losses class. "
                         f"Received: {name!r}")
    return cls(**spec)


def build(recipe, image_shape, num_examples=None, num_classes=None):
    """The model and loss of `recipe` (call it inside a strategy's scope).

    Args:
        recipe: A recipe dict (see `DEFAULTS`).
        image_shape: The training images' shape `(H, W, C)`.
        num_examples: Training examples (the memory of NPID and PCL).
        num_classes: Classes of the online probe, for methods fed labels.

    Returns:
        `(model, loss)`; `loss` is None where the method computes its own or
        compiles its default.
    """
    recipe = resolve(recipe)
    cls = get(recipe["method"])
    enc = recipe["encoder"]
    sync_bn = (recipe["distribute"] != "none" if enc["synchronized_bn"] is None
               else bool(enc["synchronized_bn"]))
    encoder = encoders.get(enc["name"], cls.encoder_shape(image_shape, recipe["model"]),
                           width=enc["width"], synchronized_bn=sync_bn,
                           **cls.encoder_options(recipe["model"]))
    hidden = recipe["head"]["hidden_dims"]
    head = ProjectionHead(recipe["head"]["dim"],
                          hidden_dims=None if hidden is None else tuple(hidden),
                          synchronized_bn=sync_bn,
                          **{**cls.head_options,
                             **{k: v for k, v in recipe["head"].items()
                                if k not in ("dim", "hidden_dims")}})
    context = {"recipe": recipe, "image_shape": tuple(image_shape),
               "num_examples": num_examples, "synchronized_bn": sync_bn}
    probe = num_classes if cls.labels != "drop" else None
    model = cls.from_recipe(encoder, head=head,
                            augmenter=augmenter(recipe, image_shape, seed=recipe["seed"]),
                            probe_classes=probe, context=context, **recipe["model"])
    return model, make_loss(recipe["loss"])


def optimizer(recipe, steps_per_epoch):
    """The recipe's optimizer: linear warm-up then cosine decay to 0 over
    `epochs * steps_per_epoch` steps, peak `lr` (not rescaled by batch)."""
    recipe = resolve(recipe)
    spec = recipe["optimizer"]
    total = recipe["epochs"] * steps_per_epoch
    schedule = optimizers.warmup_cosine(
        spec["lr"], total_steps=total,
        warmup_steps=min(int(spec["warmup_epochs"] * steps_per_epoch), total - 1))
    kinds = {"sgd": lambda: keras.optimizers.SGD(schedule, momentum=0.9,
                                                   weight_decay=spec["weight_decay"]),
             "lars": lambda: optimizers.LARS(schedule, momentum=0.9,
                                             weight_decay=spec["weight_decay"]),
             "adamw": lambda: keras.optimizers.AdamW(schedule,
                                                     weight_decay=spec["weight_decay"])}
    if spec["name"] not in kinds:
        raise ValueError(f"recipe['optimizer']['name'] must be one of {sorted(kinds)}. "
                         f"Received: {spec['name']!r}")
    return kinds[spec["name"]]()


def jit_compile(recipe):
    """`compile(jit_compile=...)` of the recipe's "auto" / "true" / "false"."""
    value = resolve(recipe)["jit_compile"]
    return {"auto": "auto", "true": True, "false": False, True: True, False: False}[value]


def _flat(recipe, prefix=""):
    out = {}
    for key, value in recipe.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def _flag_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "'(" + ", ".join(map(str, value)) + ("," if len(value) == 1 else "") + ")'"
    return str(value)


def overrides(base, recipe, resolved=True):
    """The `--config.<key>=<value>` flags that turn recipe `base` (a config
    file's) into `recipe`, in key order: what a run's command line added.
    `resolved=False` compares the dicts as they are (a recipe of another
    script, e.g. examples/train_ce.py's)."""
    if resolved:
        base, recipe = resolve(base), resolve(recipe)
    old, new = _flat(base), _flat(recipe)
    return [f"--config.{key}={_flag_value(new[key])}" for key in sorted(new)
            if old.get(key, object()) != new[key]]


def describe(recipe):
    """`(label, title)` of a recipe for the zoo: e.g. `("simclr + HCL",
    "Self-supervised contrastive (SimCLR) with hard negatives (HCL, ...)")`."""
    recipe = resolve(recipe)
    cls, model, loss = get(recipe["method"]), recipe["model"], recipe["loss"]
    options = []
    if loss.get("name") == "HardNegativeLoss":
        beta, tau_plus = loss.get("beta", 1.0), loss.get("tau_plus", 0.1)
        options.append(("DCL", f"the debiased loss (DCL, tau+ {tau_plus:g})") if beta == 0
                       else ("HCL", f"hard negatives (HCL, beta {beta:g}, tau+ {tau_plus:g})"))
    if model.get("mochi_n"):
        options.append(("MoCHi", "synthetic hard negatives (MoCHi)"))
    if model.get("imix"):
        options.append(("i-Mix", f"i-Mix ({model['imix']})"))
    if model.get("adversarial_eps"):
        options.append(("CLAE", f"adversarial views (CLAE, eps {model['adversarial_eps']:g})"))
    if recipe.get("augment", {}).get("recipe") == "infomin":
        options.append(("InfoMin aug.", "InfoMin's augmentation (RandAugment per image)"))
    label = " + ".join([recipe["method"]] + [short for short, _ in options])
    title = cls.method_title or cls.__name__
    extras = [long for _, long in options]
    return label, title + (" with " + " and ".join(extras) if extras else "")


for _cls in (models.SupConModel, models.SimCLRModel, models.MoCoModel,
             models.SupConQueueModel, models.BYOLModel, models.SimSiamModel,
             models.BarlowTwinsModel, models.VICRegModel, models.NPIDModel, models.PCLModel,
             models.SwAVModel, models.CMCModel, models.InfoMinModel,
             models.LooCModel, models.SpCLModel, models.MiCEModel, models.DIMModel,
             models.PixProModel, models.CPCModel, models.LoCoModel):
    register(_cls)
del _cls
