"""JAX: batches as ``jax.Array``, placed with ``jax.device_put``, optionally sharded.

Images should be NHWC (``Loader(..., layout="NHWC")``), the layout of
``flax``/``jax`` convolutions. Integer arrays are int64 on the host; with
``jax_enable_x64`` off (JAX's default) JAX would narrow them to int32 silently,
so :func:`device_put` narrows them itself, after checking every value fits,
and says which array did not.

``jax.device_put`` of a host array may share its memory on the CPU backend and
copies asynchronously elsewhere, so the host arrays must stay unchanged until
JAX has read them: Loader batches do (each holds its slot's lease for as long as
any view, JAX's included, is alive). ``Loader(output="jax", device=...)`` calls
:func:`device_put` itself, with ``device=`` a jax Device or Sharding.
"""
from __future__ import annotations

import math

import jax
import numpy as np

__all__ = ["device_put", "batch_sharding", "batch_pieces"]

_NARROW = {np.dtype(np.int64): np.dtype(np.int32), np.dtype(np.uint64): np.dtype(np.uint32),
           np.dtype(np.float64): np.dtype(np.float32)}


def _host(name, value):
    if not isinstance(value, np.ndarray) or jax.config.jax_enable_x64:
        return value
    narrow = _NARROW.get(value.dtype)
    if narrow is None:
        return value
    if narrow.kind in "iu" and value.size:
        info = np.iinfo(narrow)
        lo, hi = value.min(), value.max()
        if lo < info.min or hi > info.max:
            raise OverflowError(f"{name}: values in [{lo}, {hi}] do not fit {narrow} (JAX without "
                                "jax_enable_x64); enable x64 or give the field a narrower dtype")
    return value.astype(narrow)


def batch_sharding(devices=None, axis: str = "batch"):
    """A sharding that splits the leading (batch) axis over ``devices`` (default: all local devices)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    devices = np.asarray(jax.local_devices() if devices is None else list(devices))
    return NamedSharding(Mesh(devices, (axis,)), PartitionSpec(axis))


def batch_pieces(target) -> int:
    """How many pieces a Sharding cuts the leading (batch) axis into: 1 for a device, or a
    sharding that leaves that axis whole."""
    spec, mesh = getattr(target, "spec", None), getattr(target, "mesh", None)
    if not spec or mesh is None or spec[0] is None:
        return 1
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return math.prod(mesh.shape[a] for a in axes)


def check_batches(target, batch_size: int, last: int | None, skip: bool = False) -> None:
    """Refuse, before the first batch, batches ``target`` cannot split: ``batch_size`` records,
    or ``last`` in the epoch's short last batch (None: a stream, whose last may be short), or
    (``skip``) a batch a failed record leaves short."""
    pieces = batch_pieces(target)
    if pieces == 1:
        return
    if batch_size % pieces:
        raise ValueError(f"batch_size={batch_size} cannot be split over the {pieces} devices of the sharding")
    if skip:   # found hours in, at the first bad file, rather than now
        raise ValueError(f"on_error='skip' drops a failed record from its batch, and a short batch cannot be "
                         f"split over the {pieces} devices of the sharding: use on_error='raise', or put "
                         f"batches on one device (device=jax.devices()[0]) and split them yourself")
    if last is None:
        raise ValueError(f"a stream's last batch may be short, and a short batch cannot be split over the "
                         f"{pieces} devices of the sharding: pass drop_last=True")
    if last % pieces:
        raise ValueError(f"the epoch's last batch holds {last} records, which cannot be split over the "
                         f"{pieces} devices of the sharding: pass drop_last=True")


def device_put(batch, device=None, *, sharding=None):
    """``batch`` (an array, a tuple or a dict of them, as a Loader yields) as ``jax.Array``s.

    ``device`` places every array on one device; ``sharding`` (e.g.
    :func:`batch_sharding`) splits the batch axis over several, which needs a
    batch size divisible by the device count. Non-array values (raw fields,
    lists of strings) pass through unchanged.
    """
    if device is not None and sharding is not None:
        raise ValueError("give device= or sharding=, not both")
    target = sharding if sharding is not None else device

    def put(name, value):
        value = _host(name, value)
        return jax.device_put(value, target) if isinstance(value, np.ndarray) else value

    if isinstance(batch, dict):
        return {k: put(repr(k), v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(put(f"batch[{i}]", v) for i, v in enumerate(batch))
    return put("batch", batch)
