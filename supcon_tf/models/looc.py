"""Leave-one-out Contrastive Learning: one backbone, an embedding space per
augmentation family that keeps what the family changes, and one invariant
to all of them (Xiao, Wang, Efros, Darrell, ICLR 2021)."""

import keras
import tensorflow as tf

from supcon_tf import _cross_replica
from supcon_tf._checks import check_positive
from supcon_tf.augment import rotate90
from supcon_tf.heads import ProjectionHead
from supcon_tf.losses import LooCLoss
from supcon_tf.metrics import contrastive_accuracy
from supcon_tf.models.base import ContrastiveModel
from supcon_tf.models.building import refuse_mixing
from supcon_tf.models.cmc import MultiViewHead

_PACKAGE = "supcon_tf"
FAMILIES = ("rotation", "color")


def _draw(family, batch, seed):
    """One parameter draw per image of `family`: `[batch, k]` floats, this
    replica's rows of one draw for the global batch (so that replicas draw
    independently of each other and two replicas draw what one device does)."""
    total = batch * _cross_replica.num_replicas()
    if family == "rotation":
        params = tf.cast(keras.random.randint((total, 1), 0, 4, seed=seed), tf.float32)
    else:
        # As the simclr recipe's colour distortion at strength 1 on one channel:
        # p 0.8, brightness shift U(-0.8, 0.8) * 255, contrast factor U(0.2, 1.8).
        apply = tf.cast(keras.random.uniform((total, 1), seed=seed) < 0.8, tf.float32)
        shift = keras.random.uniform((total, 1), -0.8 * 255.0, 0.8 * 255.0, seed=seed)
        factor = keras.random.uniform((total, 1), 0.2, 1.8, seed=seed)
        params = tf.concat([apply, shift, factor], axis=1)
    return tf.gather(params, _cross_replica.unique_ids(batch))


def _apply(family, images, params):
    if family == "rotation":
        return rotate90(images, tf.cast(params[:, 0], tf.int32))
    apply, shift, factor = (params[:, k, None, None, None] for k in range(3))
    out = tf.clip_by_value(images + shift, 0.0, 255.0)
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = tf.clip_by_value((out - mean) * factor + mean, 0.0, 255.0)
    return tf.where(apply > 0, out, images)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LooCModel(ContrastiveModel):
    """Leave-one-out Contrastive Learning (Xiao et al., ICLR 2021).

    Each image gets a query view q and n + 1 key views: k_0 drawn
    independently of q in every augmentation family, and for each family i
    a key k_i that shares q's parameters of family i (the same quarter turn,
    the same colour shift) and is independent in the others. One backbone
    embeds all views; n + 1 heads give n + 1 embedding spaces: space 0,
    where every key is q's positive (invariant to every family, the usual
    contrastive space), and space i, where only k_i is and q's other keys
    are negatives, so it keeps what family i changes while staying invariant
    to the rest (`LooCLoss`). The families are applied by the model on top of
    the views the `augmenter` makes (crop and flip: give it no colour
    distortion, `simclr` with `strength=0`, so that colour is a family).

    `encoder` (the backbone, what the probe, linear evaluation and export
    read) is LooC's representation; `concat_encoder()` is LooC++, the n + 1
    spaces' embeddings side by side.

    Args:
        encoder: A backbone (`[batch, F]` features).
        head: The head of each space (copied per space). Defaults to
            `ProjectionHead(128)`.
        families: Augmentation families from `FAMILIES`, at least 1, in the
            order of their spaces. Defaults to `("rotation", "color")`.
            Rotation turns by quarter turns: square images only.
        temperature: `LooCLoss`'s default temperature. Defaults to 0.2.
        seed: Seed of the families' draws. Defaults to None.
        augmenter, probe_classes: As `ContrastiveModel`. `views` is
            `len(families) + 2` (a query and the keys); another value is an
            error.

    Reference:
        Xiao, Wang, Efros, Darrell, "What Should Not Be Contrastive in
        Contrastive Learning", ICLR 2021.
    """

    method_name = "looc"
    method_title = "Leave-one-out Contrastive Learning (LooC)"
    labels = "probe"

    def __init__(self, encoder, head=None, augmenter=None, views=None, probe_classes=None,
                 families=("rotation", "color"), temperature=0.2, seed=None, **kwargs):
        families = tuple(families)
        if not families or len(set(families)) != len(families) or any(
                f not in FAMILIES for f in families):
            raise ValueError(f"`families` must name different families of {FAMILIES}, at "
                             f"least one. Received: families={families!r}")
        refuse_mixing("LooCModel", kwargs,
                      "both pair two crops, LooC's views are a query and its keys")
        expected = len(families) + 2
        if views is not None and views != expected:
            raise ValueError(f"LooCModel with {len(families)} families reads {expected} views "
                             f"per image (a query and {expected - 1} keys). "
                             f"Received: views={views!r}")
        temperature = check_positive(temperature, "temperature")
        if not isinstance(head, MultiViewHead):
            template = head if head is not None else ProjectionHead(128)
            config = template.get_config()
            head = MultiViewHead([type(template).from_config({**config, "name": f"{space}_head"})
                                  for space in ("invariant",) + families],
                                 split=False, name="space_heads")
        elif len(head.heads) != len(families) + 1 or head.split:
            raise ValueError(f"`head` must hold {len(families) + 1} heads on the shared "
                             f"features (split=False). Received: {len(head.heads)} heads, "
                             f"split={head.split}")
        super().__init__(encoder, head=head, augmenter=augmenter, views=expected,
                         probe_classes=probe_classes, **kwargs)
        self.families, self.temperature, self.seed = families, float(temperature), seed
        self.family_seed = keras.random.SeedGenerator(seed)

    def default_loss(self):
        return LooCLoss(temperature=self.temperature)

    def make_views(self, x):
        """The augmenter's views (or pre-made ones, `[batch, n + 2, H, W,
        C]`), then each family: the query's draw shared by the query and
        the family's key, an independent draw for every other view."""
        views = super().make_views(x)
        if views.shape[1] is not None and views.shape[1] != self.views:
            raise ValueError(f"LooCModel reads {self.views} views per image (a query and "
                             f"{self.views - 1} keys). Received: views.shape={views.shape}")
        batch = tf.shape(views)[0]
        out = [tf.cast(views[:, v], tf.float32) for v in range(self.views)]
        for i, family in enumerate(self.families):
            query = _draw(family, batch, self.family_seed)
            for v in range(self.views):
                params = query if v in (0, i + 2) else _draw(family, batch, self.family_seed)
                out[v] = _apply(family, out[v], params)
        return tf.cast(tf.stack(out, axis=1), views.dtype)

    def update_metrics(self, y, out):
        """`contrastive_accuracy` in the invariant space."""
        self.contrastive_accuracy_tracker.update_state(
            contrastive_accuracy(y, out["projections"][:, :, 0]))

    def concat_encoder(self, name="looc_plus_plus_encoder"):
        """LooC++: images -> the n + 1 spaces' embeddings side by side
        (`[batch, (n + 1) * D]`), a Keras model sharing this model's layers."""
        images = keras.Input(tuple(self.encoder.input_shape[1:]), name="images")
        features = self.encoder(images)
        return keras.Model(images, keras.layers.Concatenate(name="spaces")(
            [head(features) for head in self.head.heads]), name=name)

    def extra_encoders(self):
        return {"encoder_concat": self.concat_encoder()}

    def get_config(self):
        config = super().get_config()
        config.update({"families": list(self.families), "temperature": self.temperature,
                       "seed": self.seed})
        return config
