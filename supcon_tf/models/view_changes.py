"""How a model changes its own views while training: i-Mix (mixing view 0
within the batch, with virtual labels) and CLAE's adversarial views.
`ContrastiveModel` takes both as constructor arguments (`imix`,
`adversarial_eps`); this mixin holds their steps."""

import numbers

import keras
import tensorflow as tf


def imix_layer(imix, alpha, views, name, supports_imix):
    """The Keras layer that mixes view 0 for i-Mix (None without i-Mix)."""
    if imix is None:
        return None
    if imix not in ("mixup", "cutmix"):
        raise ValueError(f"`imix` must be None, 'mixup' or 'cutmix'. Received: imix={imix!r}")
    if not supports_imix:
        raise ValueError(f"{name} does not support i-Mix: its loss is a statistic of the "
                         f"whole batch, with no per-sample values to weight. "
                         f"Received: imix={imix!r}")
    if views != 2:
        raise ValueError(f"i-Mix mixes view 0 and pairs it with view 1: {name} with "
                         f"`imix` needs views=2. Received: views={views!r}, imix={imix!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"`imix_alpha` must be a number > 0. Received: imix_alpha={alpha!r}")
    if imix == "mixup":
        layer = keras.layers.MixUp(alpha=float(alpha), name="imix")
    else:
        if alpha > 1:
            raise ValueError("`imix_alpha` must be <= 1 with imix='cutmix' (Keras's CutMix "
                             f"draws Beta(a, a) for a in its factor range [0, 1]). "
                             f"Received: imix_alpha={alpha}")
        layer = keras.layers.CutMix(factor=(float(alpha), float(alpha)), name="imix")
    # Both draw lam with a Beta sampler (TensorFlow's stateless gamma) that XLA
    # cannot compile: marking the layer tells Keras, so `compile(jit_compile=True)`
    # warns and trains without XLA, and "auto" never picks XLA, instead of the
    # first step failing to compile.
    layer.supports_jit = False
    return layer


def check_adversarial(eps, weight, views, imix):
    """CLAE's `adversarial_eps` and `adversarial_weight` as floats."""
    for name, value in (("adversarial_eps", eps), ("adversarial_weight", weight)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                value >= 0 and value < float("inf")):
            raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    if eps > 0 and views != 2:
        raise ValueError("Adversarial views pair view 0 with its FGSM copy: they need views=2. "
                         f"Received: views={views!r}")
    if eps > 0 and imix is not None:
        raise ValueError("Use i-Mix or adversarial views, not both in one model. Received: "
                         f"imix={imix!r}, adversarial_eps={eps}")
    return float(eps), float(weight)


def check_value_range(value_range):
    """`value_range` as a tuple of two finite floats `(low, high)`, low < high."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError("`value_range` must be a pair (low, high) of numbers. "
                         f"Received: value_range={value_range!r}") from None
    if not (low < high and high - low < float("inf")):
        raise ValueError("`value_range` must be a finite pair (low, high) with low < high. "
                         f"Received: value_range={value_range!r}")
    return (low, high)


class ViewChanges:
    """i-Mix and adversarial views for `ContrastiveModel` (which sets
    `imix_layer`, `adversarial_eps` and `adversarial_weight`, and calls these
    from its step)."""

    def imix_mix(self, views):
        """i-Mix's draw: `(views with view 0 mixed, lam [B], order [B])`, where
        mixed view 0 of sample i is `lam_i x_i + (1 - lam_i) x_order[i]`
        (mixup; for cutmix a box of `x_order[i]` covering `1 - lam_i` of the
        image), by the Keras layer."""
        first = views[:, 0]
        transformation = self.imix_layer.get_random_transformation(first, training=True)
        mixed = tf.cast(self.imix_layer.transform_images(first, transformation, training=True),
                        views.dtype)
        if "batch_masks" in transformation:
            # CutMix: the share of pixels left to sample i. (Keras's own
            # `mix_weight` is the box's real-valued area, which can differ
            # from the pixels pasted by a row or a column.)
            pasted = tf.cast(transformation["batch_masks"], tf.float32)
            lam = 1.0 - tf.reduce_mean(tf.reshape(pasted, [tf.shape(pasted)[0], -1]), axis=1)
        else:
            lam = tf.reshape(tf.cast(transformation["mix_weight"], tf.float32), [-1])
        order = tf.cast(transformation["permutation_order"], tf.int32)
        return tf.concat([mixed[:, None], views[:, 1:]], axis=1), lam, order

    def partners_permuted(self, out, order):
        """`out` with every output of view 1 (the partner of the mixed view 0)
        taken from sample `order[i]` in row i: i-Mix's virtual labels. The base:
        `projections[:, 1]`."""
        projections = out["projections"]
        return {**out, "projections": tf.concat(
            [projections[:, :1], tf.gather(projections[:, 1:], order)], axis=1)}

    def imix_loss(self, x, y, out, sample_weight, training, lam, order):
        """`lam * loss(i) + (1 - lam) * loss(order(i))` per sample, as the
        method's `contrastive_loss` weighted by `sample_weight * lam` and by
        `sample_weight * (1 - lam)` (the partners permuted, and the labels with
        them)."""
        weight = lam if sample_weight is None else lam * tf.cast(
            tf.reshape(sample_weight, [-1]), tf.float32)
        rest = (1.0 - lam) if sample_weight is None else (1.0 - lam) * tf.cast(
            tf.reshape(sample_weight, [-1]), tf.float32)
        own = self.contrastive_loss(x, y, out, weight, training)
        y_other = None if y is None else tf.gather(y, order)
        other = self.contrastive_loss(x, y_other, self.partners_permuted(out, order), rest,
                                      training)
        return own + other

    def adversarial_view(self, x, y, views, sample_weight):
        """CLAE's FGSM view of view 0: `x_0 + eps * (high - low) * sign(grad)`
        (`eps` a fraction of the pixel range `value_range`), the gradient
        of the method's loss between view 0 and a copy of it that is being
        perturbed, with respect to the copy (no gradient flows back through
        it). Not clipped, as in CLAE's code."""
        clean = tf.stop_gradient(views[:, 0])
        start = tf.identity(clean)
        with tf.GradientTape() as tape:
            tape.watch(start)
            # The copy in the first position: MoCo's query, BYOL's online
            # branch (the second position's outputs are stop-gradient targets).
            out = self.forward(tf.stack([start, clean], axis=1), True)
            loss = self.contrastive_loss(x, y, out, sample_weight, True)
        grad = tape.gradient(loss, start)
        if grad is None:
            raise ValueError(f"{type(self).__name__}'s loss has no gradient with respect to "
                             "view 0, so adversarial views cannot be made for it.")
        low, high = self.value_range
        step = self.adversarial_eps * (high - low)
        return tf.stop_gradient(clean + step * tf.cast(tf.sign(grad), clean.dtype))

    def adversarial_loss(self, x, y, views, sample_weight):
        """`adversarial_weight * loss(FGSM view, view 0)` (CLAE), the FGSM view
        in the first position as when it was made."""
        adversarial = self.adversarial_view(x, y, views, sample_weight)
        out = self.forward(tf.stack([adversarial, views[:, 0]], axis=1), True)
        return self.adversarial_weight * self.contrastive_loss(x, y, out, sample_weight, True)
