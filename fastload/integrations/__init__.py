"""Bridges from a :class:`~fastload.Loader` to training frameworks, each imported on use.

- :mod:`fastload.integrations.keras`: ``KerasDataset(loader)``, the loader as a Keras data
  adapter, which ``model.fit`` takes on the torch, JAX and TensorFlow backends.
- :mod:`fastload.integrations.jax`: ``device_put(batch)``, batches as ``jax.Array`` with
  integer labels narrowed explicitly (and checked) rather than silently.
- :mod:`fastload.integrations.tf`: ``as_dataset(loader)`` (``loader.tf_dataset()``), the
  loader as a ``tf.data.Dataset`` whose every pass is the loader's next epoch.

No framework is imported by ``import fastload``.
"""
