"""MiCE's loss: the negative ELBO of a mixture of contrastive experts.

Reference: Tsai, Wu, Zhu, "MiCE: Mixture of Contrastive Experts for
Unsupervised Image Clustering", ICLR 2021 (https://arxiv.org/abs/2105.01899);
the loss as the official code computes it (TsungWeiTsai/MiCE, ELBO.py,
`MiCE_ELBO.forward`).

For an image, K experts each embed it (`f_k`, the online network), its
second view's keys come from the momentum network (`v_k`), and a gating
embedding of a third view (`g`) chooses among the experts:

    log pi_k  = log_softmax_k( omega_k . g / kappa )          (the gate, p(z | x))
    s_k       = ( f_k . v_k + v_k . mu_k ) / tau               (the positive)
    n_{k,q}   = ( f_k . u_{q,k} + u_{q,k} . mu_k ) / tau       (queue key u_q)
    log phi_k = s_k - log( exp(s_k) + sum_q exp(n_{k,q}) )      (p(y | x, z = k))
    q_k       = softmax_k( log pi_k + log phi_k )               (the posterior, E-step)
    loss      = - sum_k q_k ( log pi_k + log phi_k - log q_k )  (the negative ELBO, M-step)

with `omega` the gating prototypes (fixed), `mu` the experts' prototypes
(normalised here). With `q` the exact posterior the ELBO is the
log-likelihood `log sum_k pi_k phi_k`, and its gradient equals the
official code's (which differentiates through `q`: the terms in `q`
cancel at the exact posterior), so it is computed as `-logsumexp_k(log pi_k
+ log phi_k)`, without the official 1e-18 terms.

Written once in `keras.ops` (every Keras backend); every input but `f`, `g`
and `mu` is taken without gradient, as the official code does.
"""

import keras
import numpy as np
from keras import ops

from supcon_tf._checks import check_int, check_positive
from supcon_tf.losses._portable.common import l2_normalize, shape_of, shown
from supcon_tf.losses.base import ContrastiveLoss


def simplex_prototypes(num, dim):
    """`num` unit vectors in `dim` dimensions with every pairwise inner
    product -1 / (num - 1): the vertices of a regular simplex, MiCE's gating
    prototypes (the official kernel_paras/craft_MMcenters.m, the centres of
    the max-Mahalanobis linear discriminant, Pang et al., ICML 2018).

    Example:

    >>> p = simplex_prototypes(4, 8)
    >>> [round(float(v), 4) for v in (p @ p.T)[0]]
    [1.0, -0.3333, -0.3333, -0.3333]
    """
    num, dim = check_int(num, "num", 2), check_int(dim, "dim", 1)
    if dim < num - 1:
        raise ValueError(f"{num} simplex vertices need `dim` >= {num - 1}. Received: dim={dim}")
    m = np.zeros((num, dim))
    m[0, 0] = 1.0
    for k in range(1, num):
        for j in range(k):
            m[k, j] = -(1.0 / (num - 1) + m[k] @ m[j]) / m[j, j]
        if k < dim:                       # (with dim = num - 1 the last one is complete)
            m[k, k] = np.sqrt(abs(1.0 - np.sum(m[k] ** 2)))
    return m.astype(np.float32)


def _checked(y_pred, keys, gating, gating_prototypes, expert_prototypes, queue):
    f = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(f.shape) != 3:
        raise ValueError("MiCE's loss needs `y_pred` of shape [batch, experts, dim]. "
                         f"Received: y_pred.shape={shown(shape_of(f))}")
    k, d = f.shape[1], f.shape[2]
    tensors = {"keys": keys, "gating": gating, "gating_prototypes": gating_prototypes,
               "expert_prototypes": expert_prototypes, "queue": queue}
    shapes = {"keys": (f.shape[0], k, d), "gating": (f.shape[0], d),
              "gating_prototypes": (k, d), "expert_prototypes": (k, d), "queue": (None, k, d)}
    out = {}
    for name, value in tensors.items():
        t = ops.cast(ops.convert_to_tensor(value), "float32")
        want = shapes[name]
        got = shape_of(t)
        if len(got) != len(want) or any(w is not None and g is not None and w != g
                                        for w, g in zip(want, got)):
            raise ValueError(f"`{name}` must be of shape {shown(want)} for y_pred of shape "
                             f"{shown(shape_of(f))}. Received: {name}.shape={shown(got)}")
        out[name] = t
    return f, out


def mice_log_terms(y_pred, keys, gating, gating_prototypes, expert_prototypes, queue,
                   temperature=1.0, kappa=1.0, with_scores=False):
    """`(log_pi, log_phi)`, each `[batch, experts]`: the gate's log-probabilities
    and each expert's log-probability of the positive key (the module
    docstring's; arguments as `mice_loss`). With `with_scores`, also each
    expert's positive score and its highest queue score (-inf for an empty
    queue), `[batch, experts]` each."""
    temperature = check_positive(temperature, "temperature")
    kappa = check_positive(kappa, "kappa")
    f, t = _checked(y_pred, keys, gating, gating_prototypes, expert_prototypes, queue)
    f = l2_normalize(f)
    v = ops.stop_gradient(l2_normalize(t["keys"]))
    g = l2_normalize(t["gating"])
    omega = ops.stop_gradient(t["gating_prototypes"])
    mu = l2_normalize(t["expert_prototypes"])
    u = ops.stop_gradient(l2_normalize(t["queue"]))                     # [n, K, D]
    log_pi = ops.log_softmax(ops.matmul(g, ops.transpose(omega)) / kappa, axis=1)
    positive = (ops.sum(f * v, axis=-1) + ops.sum(v * mu[None], axis=-1)) / temperature
    # [K, B, n]: each expert's query against its own keys in the queue.
    per_expert = ops.transpose(u, (1, 2, 0))                            # [K, D, n]
    negative = (ops.matmul(ops.transpose(f, (1, 0, 2)), per_expert)
                + ops.sum(per_expert * mu[:, :, None], axis=1)[:, None, :]) / temperature
    negative = ops.transpose(negative, (1, 0, 2))                       # [B, K, n]
    both = ops.concatenate([positive[:, :, None], negative], axis=2)
    top = ops.stop_gradient(ops.max(both, axis=2))
    lse = top + ops.log(ops.sum(ops.exp(both - top[:, :, None]), axis=2))
    if with_scores:
        best = ops.max(ops.concatenate([negative, ops.full_like(positive[:, :, None],
                                                               float("-inf"))], axis=2), axis=2)
        return log_pi, positive - lse, positive, best
    return log_pi, positive - lse


def negative_elbo(log_pi, log_phi):
    """Per image, `-log sum_k pi_k phi_k` from `mice_log_terms`: the negative
    ELBO at the exact posterior."""
    joint = log_pi + log_phi
    top = ops.stop_gradient(ops.max(joint, axis=1, keepdims=True))
    return -(top[:, 0] + ops.log(ops.sum(ops.exp(joint - top), axis=1)))


def mice_posterior(log_pi, log_phi):
    """The E-step: `q_k = softmax_k(log pi_k + log phi_k)`, `[batch, experts]`."""
    return ops.softmax(log_pi + log_phi, axis=1)


def mice_loss(y_pred, keys, gating, gating_prototypes, expert_prototypes, queue,
              temperature=1.0, kappa=1.0):
    """MiCE's negative ELBO per image (see the module docstring).

    Args:
        y_pred: `[batch, K, dim]` the experts' embeddings of the first view.
        keys: `[batch, K, dim]` the momentum network's expert embeddings of
            the second view.
        gating: `[batch, dim]` the gating embedding of the third view.
        gating_prototypes: `[K, dim]` omega (`simplex_prototypes`).
        expert_prototypes: `[K, dim]` mu.
        queue: `[n, K, dim]` past keys (n may be 0).
        temperature: tau, > 0. Defaults to 1.0 (the official's).
        kappa: The gate's temperature, > 0. Defaults to 1.0 (the official's).

    Returns:
        float32 `[batch]`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> f, v = rng.normal(size=(2, 4, 3, 8)).astype("float32")
    >>> g = rng.normal(size=(4, 8)).astype("float32")
    >>> mu, queue = rng.normal(size=(3, 8)), rng.normal(size=(16, 3, 8))
    >>> tuple(mice_loss(f, v, g, simplex_prototypes(3, 8), mu, queue).shape)
    (4,)

    Reference:
        Tsai, Wu, Zhu, "MiCE: Mixture of Contrastive Experts for Unsupervised
        Image Clustering", ICLR 2021.
    """
    return negative_elbo(*mice_log_terms(y_pred, keys, gating, gating_prototypes,
                                         expert_prototypes, queue, temperature, kappa))


@keras.saving.register_keras_serializable(package="supcon_tf")
class MiCELoss(ContrastiveLoss):
    """MiCE's negative ELBO as a Keras loss: `loss(None, experts, keys=...,
    gating=..., gating_prototypes=..., expert_prototypes=..., queue=...)`;
    `mice_loss` documents it. `supcon_tf.models.MiCEModel` passes them.

    Args:
        temperature: tau, > 0. Defaults to 1.0.
        kappa: The gate's temperature, > 0. Defaults to 1.0.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"mice_loss"`.
        dtype: Defaults to None (float32).

    Reference:
        Tsai, Wu, Zhu, "MiCE: Mixture of Contrastive Experts for Unsupervised
        Image Clustering", ICLR 2021.
    """

    def __init__(self, temperature=1.0, kappa=1.0, reduction="sum_over_batch_size",
                 name="mice_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")
        self.kappa = check_positive(kappa, "kappa")

    def call(self, y_true, y_pred, keys=None, gating=None, gating_prototypes=None,
             expert_prototypes=None, queue=None):
        missing = [name for name, v in (("keys", keys), ("gating", gating),
                                        ("gating_prototypes", gating_prototypes),
                                        ("expert_prototypes", expert_prototypes),
                                        ("queue", queue)) if v is None]
        if missing:
            raise ValueError(f"MiCELoss needs {', '.join(missing)} (keyword inputs).")
        return mice_loss(y_pred, keys, gating, gating_prototypes, expert_prototypes, queue,
                         self.temperature, self.kappa)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "kappa": self.kappa}
