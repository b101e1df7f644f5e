"""The losses of the lab's workloads in TensorFlow and JAX, matching torch.nn.functional's
`cross_entropy` (integer class targets, mean over the batch) and `mse_loss` (mean)."""

from __future__ import annotations


def tf_cross_entropy(logits, target):
    import tensorflow as tf

    per_item = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.reduce_mean(per_item)


def tf_mse(output, target):
    import tensorflow as tf

    return tf.reduce_mean(tf.square(output - target))


def jax_cross_entropy(logits, target):
    import jax
    import jax.numpy as jnp

    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, target[:, None], axis=-1))


def jax_mse(output, target):
    import jax.numpy as jnp

    return jnp.mean(jnp.square(output - target))
