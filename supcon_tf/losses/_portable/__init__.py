"""The losses' maths in `keras.ops`, for Keras's JAX and PyTorch backends.

Each function here computes the definition of the public function of the
same name in `supcon_tf.losses` (or `clustering.sinkhorn`), which checks the
options and calls it when Keras does not run on TensorFlow; the errors a
user sees are the public function's. They are the single-device maths (dense,
the whole `N x N` logits at once): `block_size` is accepted and gives the same
values, but bounds memory only on TensorFlow; there is no `tf.distribute`
global batch. Checks of values (labels that are not whole class ids or 0/1,
a queue's label count) raise `ValueError` when the values are known, and make
the loss NaN inside a traced function (`jax.jit`), where nothing can raise.
"""
