"""User kernels compiled with Numba, run on the loader's worker threads without the GIL.

A kernel is a plain function in Numba's nopython subset that changes a sample
(or a whole chunk of batch rows) in place and draws its randomness from the
generator it is handed::

    from fastload.ops.numba_ops import normal

    @fl.numba_transform
    def add_noise(img, rng):             # img: one sample's row of the batch, changed in place
        for i in range(img.size):
            img.flat[i] += 0.1 * normal(rng)

    loader = fl.Loader(src, fields={"image": add_noise.after([fl.RandomResizedCrop(224), fl.Normalize(...)]),
                                    "label": "index"})

The generator is a counter-based stream keyed by ``(seed, epoch, record
index)`` (SplitMix64 over that key), so a sample's draws never depend on which
thread ran it, how the batch was split into chunks, or how many workers there
are, and resuming reproduces them.

One policy compiles everything here (:func:`njit`): nopython mode,
``nogil=True`` so worker threads run kernels in parallel, ``cache=True`` so a
user's kernel compiles once per machine (fastload's own helpers compile once a
process: their cache would be written inside the installed package, which
``pip uninstall`` leaves behind). ``FASTLOAD_DISABLE_JIT=1`` in the environment
(read when a kernel is decorated) runs every kernel as plain Python instead,
which is how tests step through them; without Numba they run so too, and a
user kernel (:class:`NumbaOp`) made then warns, naming the package.

How a field runs an op: after its compiled fill has written a chunk's rows, on
the same worker thread, ``op.apply(rows, ctx.indices, ctx.seed, ctx.epoch)``.
:class:`KernelField` does exactly that around any field.
"""
from __future__ import annotations

import importlib
import inspect
import os
import warnings
from typing import Callable, Sequence

import numpy as np

from ..errors import RecordError
from ..pipeline.fields import ChunkContext, Field

__all__ = ["DISABLE_ENV", "KernelField", "NumbaOp", "integers", "jit_enabled", "njit", "normal",
           "numba_transform", "seed_state", "uniform"]

DISABLE_ENV = "FASTLOAD_DISABLE_JIT"


def jit_enabled() -> bool:
    """Whether kernels are compiled: Numba is installed and ``FASTLOAD_DISABLE_JIT`` is not set."""
    return not _jit_disabled() and _numba_installed()


def _jit_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _numba_installed() -> bool:
    try:
        importlib.import_module("numba")
    except ImportError:
        return False
    return True


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # fastload/


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except ValueError:   # another drive
        return False


def njit(fn: Callable | None = None, *, cache: bool = True):
    """The one compilation policy: ``numba.njit(nogil=True, cache=cache)``, or ``fn`` itself with JIT off."""
    def wrap(f):
        if not jit_enabled():
            return f
        import numba
        # A function typed at a prompt or built by exec has no file to cache beside; fastload's own
        # would be cached inside the installed package, which pip uninstall then leaves behind.
        source = getattr(getattr(f, "__code__", None), "co_filename", "")
        return numba.njit(nogil=True, cache=cache and os.path.isfile(source) and not _inside(source, _PACKAGE))(f)
    return wrap if fn is None else wrap(fn)


def _wrapping(fn):
    """Compiled like any kernel; as plain Python, uint64 scalar arithmetic must wrap without a warning."""
    if jit_enabled():
        return njit(fn)

    def plain(*args):
        with np.errstate(over="ignore"):
            return fn(*args)
    plain.__name__, plain.__doc__, plain.py_func = fn.__name__, fn.__doc__, fn
    return plain


# -- the counter-based generator ----------------------------------------------------
# A generator is a one-element uint64 array holding a SplitMix64 counter; each draw
# advances it. Constants are NumPy scalars so that Numba types the arithmetic as
# wrapping uint64 (plain Python ints would promote to float).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


@_wrapping
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@_wrapping
def seed_state(seed, epoch, index):
    """The generator state of record ``index`` in ``epoch`` under ``seed`` (all non-negative)."""
    return _mix(_mix(_mix(np.uint64(seed) + _GOLDEN) ^ np.uint64(epoch)) + _GOLDEN ^ np.uint64(index))


@_wrapping
def _next(rng):
    rng[0] += _GOLDEN
    return _mix(rng[0])


@_wrapping
def uniform(rng):
    """A float64 uniform in [0, 1)."""
    return np.float64(_next(rng) >> _S11) * _INV53


@_wrapping
def integers(rng, low, high):
    """An integer uniform in [low, high)."""
    return low + np.int64(uniform(rng) * (high - low))


@_wrapping
def normal(rng):
    """A standard normal float64 (Marsaglia's polar method: no trigonometry)."""
    while True:
        u = 2.0 * uniform(rng) - 1.0
        v = 2.0 * uniform(rng) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            return u * np.sqrt(-2.0 * np.log(s) / s)


# -- ops ------------------------------------------------------------------------------
def _sample_driver(kernel):
    def drive(rows, indices, seed, epoch):
        rng = np.empty(1, dtype=np.uint64)
        for i in range(rows.shape[0]):
            rng[0] = seed_state(seed, epoch, indices[i])
            kernel(rows[i], rng)
    return drive


def _batch_driver(kernel):
    def drive(rows, indices, seed, epoch):
        rngs = np.empty((rows.shape[0], 1), dtype=np.uint64)
        for i in range(rows.shape[0]):
            rngs[i, 0] = seed_state(seed, epoch, indices[i])
        kernel(rows, rngs)
    return drive


def _check_signature(kernel: Callable, name: str, batch: bool) -> None:
    """Refuse a kernel that cannot take the driver's two arguments, now: Numba would say so only at the
    first batch, from a worker thread, blaming a record."""
    expected = "(rows, rngs)" if batch else "(sample, rng)"
    if not callable(kernel):
        raise TypeError(f"{name}: a kernel must be a function {expected}, got {type(kernel).__name__}")
    fn = getattr(kernel, "py_func", kernel)   # a numba dispatcher's Python function
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):   # a callable Python cannot look into: left to the first call
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(f"{name}{signature}: a {'batch' if batch else 'per-sample'} kernel is called as "
                        f"{name}{expected}") from None


class NumbaOp:
    """A per-sample (``kernel(sample, rng)``) or per-batch (``kernel(rows, rngs)``) in-place kernel.

    ``rows`` is a chunk of batch rows (``rows[i]`` is one sample, in the
    field's output dtype and layout); in batch mode ``rngs[i]`` is row ``i``'s
    generator. The kernel is compiled by :func:`njit` unless it already is.
    """

    def __init__(self, kernel: Callable, *, batch: bool = False, name: str | None = None):
        self.batch, self.name = batch, name or getattr(kernel, "__name__", "kernel")
        _check_signature(kernel, self.name, batch)
        self.jit = jit_enabled()
        if not self.jit and not _jit_disabled():   # not asked for: a user kernel must not slow down unseen
            warnings.warn(f"fastload: Numba is not installed, so the kernel {getattr(kernel, '__name__', kernel)!r} "
                          "runs as plain Python, hundreds of times slower and holding the GIL: pip install numba "
                          f"(or set {DISABLE_ENV}=1 to run kernels as Python on purpose)", RuntimeWarning, stacklevel=3)
        is_compiled = hasattr(kernel, "py_func")
        if self.jit and not is_compiled:
            kernel = njit(kernel)
        elif not self.jit and is_compiled:
            kernel = kernel.py_func
        self.kernel = kernel
        # The driver closes over this op's kernel, so it is compiled per op and not cached.
        self._drive = njit((_batch_driver if batch else _sample_driver)(kernel), cache=False)

    def __repr__(self):
        return f"NumbaOp({self.name}, batch={self.batch}, jit={self.jit})"

    def apply(self, rows: np.ndarray, indices: np.ndarray, seed: int, epoch: int) -> None:
        """Run the kernel over ``rows`` in place; ``indices[i]`` is the source position of ``rows[i]``."""
        if not isinstance(rows, np.ndarray) or not rows.flags.writeable:
            raise TypeError(f"{self.name}: rows must be a writable NumPy array")
        indices = np.ascontiguousarray(indices, dtype=np.uint64)
        if indices.shape != (len(rows),):
            raise ValueError(f"{self.name}: {len(rows)} rows but {indices.shape} indices")
        if seed < 0 or epoch < 0:
            raise ValueError(f"{self.name}: seed and epoch must be >= 0")
        if self.jit:
            self._drive(rows, indices, np.uint64(seed), np.uint64(epoch))
        else:
            with np.errstate(over="ignore"):   # uint64 arithmetic wraps by design
                self._drive(rows, indices, np.uint64(seed), np.uint64(epoch))

    __call__ = apply

    def after(self, field, **image_options) -> "KernelField":
        """A field that runs ``field`` (a Field, or an image transform list) and then this op."""
        return KernelField(field, [self], **image_options)


def numba_transform(fn: Callable | None = None, *, batch: bool = False):
    """Decorator: ``@fl.numba_transform`` turns ``kernel(sample, rng)`` into a :class:`NumbaOp`."""
    if fn is None:
        return lambda f: NumbaOp(f, batch=batch)
    return NumbaOp(fn, batch=batch)


class KernelField(Field):
    """``field`` followed by ``ops`` on its rows, on the worker thread that filled them.

    ``field`` is any :class:`~fastload.Field`, or a list of image transforms
    (built into :class:`~fastload.Image` with ``image_options``: ``dtype``,
    ``layout``, ...; so float pixels without Normalize are in [0, 1], as for a
    transform list given to the Loader). The ops run on every row the field wrote, in the order given; a row
    the field failed is dropped by the loader whatever the ops did to it.
    """

    def __init__(self, field, ops: Sequence[NumbaOp], output: str | None = None, **image_options):
        from ..image.field import Image, ImageField
        if isinstance(field, (list, tuple)):
            field = Image(field, **image_options)
        elif image_options:
            raise TypeError("image options go with a transform list, not a built field")
        if not isinstance(field, Field):
            raise TypeError(f"expected a Field or a list of image transforms, got {type(field).__name__}")
        self.inner, self.ops, self._output = field, list(ops), output
        if isinstance(field, ImageField):   # its rows are declared already: checked now, not at the first batch
            self.outputs()
        if type(field).prepare is not Field.prepare:   # the loader gives a statistics pass only to fields that ask
            self.__class__ = _PreparedKernelField

    @property
    def needs_prepare(self) -> bool:   # whether the loader must give ``prepare`` a pass over the values
        return getattr(self.inner, "needs_prepare", type(self.inner).prepare is not Field.prepare)

    @property
    def error_class(self):
        return getattr(self.inner, "error_class", RecordError)

    @property
    def name(self):
        return self.inner.name

    @name.setter
    def name(self, value):
        self.inner.name = value

    @property
    def layout(self):   # what framework views check (channels first or last)
        return getattr(self.inner, "layout", None)

    def outputs(self):
        outputs = self.inner.outputs()
        rows = [o for o in outputs if o.name == (self._output or outputs[0].name)]
        # Numba has no float16 type: a compiled kernel would fail at the first batch, blaming a record.
        if rows and rows[0].dtype == np.float16 and any(op.jit for op in self.ops):
            raise TypeError(f"field {self.name!r}: Numba cannot compile kernels over float16 rows; give the "
                            f"field dtype='float32' or 'uint8', or run the kernels as plain Python ({DISABLE_ENV}=1)")
        return outputs

    def fill(self, values, outs, ctx: ChunkContext):
        failures = self.inner.fill(values, outs, ctx)
        names = [o.name for o in self.inner.outputs()]
        target = self._output or names[0]
        if target not in outs:
            raise KeyError(f"{self.name}: no output {target!r} (outputs: {names})")
        rows = outs[target][:len(values)]
        for op in self.ops:
            op.apply(rows, ctx.indices, ctx.seed, ctx.epoch)
        return failures


class _PreparedKernelField(KernelField):
    def prepare(self, values):
        self.inner.prepare(values)
