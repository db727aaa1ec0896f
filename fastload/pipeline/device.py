"""Feeding an accelerator: pinned slots, copies on a side stream, normalisation on the device.

With ``device="cuda"`` a Loader's slots are page-locked host memory allocated
once. A slot is copied on a dedicated copy stream as soon as it is filled,
by the worker thread that filled its last rows (:meth:`DeviceTransfer.prefetch`),
so a loop that waits for each step (``loss.item()``, a ``GradScaler``) finds
the next batch already on the device; an event recorded after the copy is
attached to the slot's lease (``Lease.release_after``), so the slot is refilled
only once the copy has read it, and the consumer's current stream waits on
that event when it takes the batch, never the whole device. Images travel as
uint8 NHWC (a quarter of float32's bytes); conversion to float, normalisation
and NHWC -> NCHW then run on the device in one kernel (:func:`normalize_images`),
with per-channel constants placed on the device once: nothing in a batch's
path makes the host wait for the device.

Without ``device=`` but with torch output on a CUDA machine, slots are pinned
too, and releasing a batch records an event on the releasing thread's current
stream of each device the process uses (``guard_release``): a user's own
``batch.to("cuda", non_blocking=True)`` has finished reading the slot before it
is refilled.

The logic talks to a backend (:class:`CudaBackend`): name the target of a
pass's copies, copy asynchronously, record an event on the current stream,
make the current stream wait, place constants, normalise. Tests run it without
a GPU through a stand-in backend with host copies and events they complete by
hand.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DeviceTransfer", "CudaBackend", "cuda_available", "normalize_images"]


def cuda_available() -> bool:
    """Whether torch is importable and sees a CUDA device (imports torch only when asked)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class CudaBackend:
    """torch.cuda: a side stream per device for host-to-device copies, made on first use.

    ``"cuda"`` without an index is the iterating thread's current device as a pass begins, as
    torch reads it in ``x.to("cuda")``: a Loader made before ``torch.cuda.set_device(local_rank)``
    feeds that rank's device, and making a Loader creates no CUDA context (under ``torchrun`` one
    on cuda:0 per rank would take that GPU's memory)."""

    def __init__(self, device):
        import torch
        self.torch, self.device = torch, torch.device(device)
        self._streams: dict = {}     # device index -> its copy stream

    def target(self):
        """(the device a copy made now goes to, its copy stream), read on the iterating thread: a
        worker thread's current device is its own."""
        cuda = self.torch.cuda
        index = self.device.index if self.device.index is not None else cuda.current_device()
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = cuda.Stream(device=index)
        return self.torch.device("cuda", index), stream

    def copy_async(self, host: np.ndarray, target):
        """The copy of ``host`` (pinned) on ``target`` (from :meth:`target`) and the event that
        completes with it."""
        torch = self.torch
        device, stream = target
        src = torch.from_numpy(host)
        # torch.cuda.device first: leaving a stream context alone switches back to the thread's
        # device even where it has no context (a worker thread's cuda:0), creating one there.
        with torch.cuda.device(device), torch.cuda.stream(stream):
            dst = torch.empty(src.shape, dtype=src.dtype, device=device)
            dst.copy_(src, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        return dst, event

    def wait(self, event, tensors) -> None:
        """The consumer's current stream on the tensors' device waits for ``event``; the tensors
        are then in use on it."""
        cur = self.torch.cuda.current_stream(tensors[0].device)
        cur.wait_event(event)
        for t in tensors:
            t.record_stream(cur)

    def current_event(self):
        return current_streams_event(self.torch)

    def constants(self, values, device):
        """Per-channel float32 constants on ``device`` (made once per device: a copy from pageable
        host memory would make the host wait for the consumer's stream)."""
        return self.torch.tensor(values, dtype=self.torch.float32, device=device)

    def normalize(self, x, dtype: str, layout: str, scale, bias):
        return normalize_images(x, dtype, layout, scale, bias)


class AllEvents:
    """Several events read as one: done when every one is."""

    def __init__(self, events):
        self.events = events

    def query(self) -> bool:
        return all(e.query() for e in self.events)

    def synchronize(self) -> None:
        for e in self.events:
            e.synchronize()


def current_streams_event(torch):
    """An event on the current stream of every CUDA device this process has a context on.

    A user's ``batch.to("cuda:1", non_blocking=True)`` is queued on cuda:1's current stream even
    while cuda:0 is the current device (``torchrun`` without ``torch.cuda.set_device``): an event
    on the current device's stream alone would let the slot be refilled under that copy. Devices
    without a context are left alone (an event there would create one, and its memory). Where
    torch cannot tell which have one, the current device's stream."""
    cuda = torch.cuda
    has_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    devices = [d for d in range(cuda.device_count()) if has_context(d)] if has_context is not None else []
    events = []
    for d in devices or [cuda.current_device()]:
        event = cuda.Event()
        event.record(cuda.current_stream(d))
        events.append(event)
    return events[0] if len(events) == 1 else AllEvents(events)


def normalize_images(x, dtype: str, layout: str, scale, bias):
    """uint8 NHWC ``x`` (a torch tensor, any device) -> ``dtype`` in ``layout``, ``x * scale + bias``
    per channel (``scale``, ``bias``: float32 tensors of one value per channel on ``x``'s device).

    One kernel: addcmul reads the uint8 pixels through the layout's strides, computes in
    float32 and stores ``dtype`` into a fresh contiguous tensor.
    """
    import torch
    n, h, w, c = x.shape
    if layout == "NCHW":
        x, view, shape = x.permute(0, 3, 1, 2), (1, c, 1, 1), (n, c, h, w)
    else:
        view, shape = (1, 1, 1, c), (n, h, w, c)
    out = torch.empty(shape, dtype=getattr(torch, dtype), device=x.device)
    return torch.addcmul(bias.view(view), x, scale.view(view), out=out)


class DeviceTransfer:
    """What a Loader does with a filled slot on its way to ``device`` (see the module docstring)."""

    def __init__(self, backend, pin: bool, to_device: bool):
        self.backend, self.pin, self.to_device = backend, pin, to_device
        self._image_ops: dict[str, tuple] = {}    # output name -> (dtype, layout, bgr, scale, bias)
        self._constants: dict[tuple, object] = {}   # (values, device) -> those values on that device

    @classmethod
    def create(cls, device, output: str, pin_memory: bool | None):
        """The transfer for ``device=`` (None when batches stay in pageable host memory).

        ``device`` may also be a backend object with :class:`CudaBackend`'s methods,
        which is how the slot and event logic is tested without a GPU.
        """
        if hasattr(device, "copy_async"):
            return cls(device, pin=False, to_device=True)
        if isinstance(device, int) and not isinstance(device, bool):   # an index, as torch takes it: a CUDA device
            device = f"cuda:{device}"
        if device is None or str(device).split(":")[0] == "cpu":
            if pin_memory and not cuda_available():
                raise RuntimeError("pin_memory=True needs torch with a CUDA device, and none is available")
            if output == "torch" and pin_memory is not False and cuda_available():
                return cls(CudaBackend("cuda"), pin=True, to_device=False)
            return None
        try:
            import torch
        except ImportError as e:
            raise RuntimeError(f"device={device!r} needs torch, which cannot be imported ({e}): pip install "
                               "fastload[torch], with the torch build for your CUDA") from e
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):   # "gpu", "cuda:x": torch's own message lists its every device type
            dev = None
        if dev is None or dev.type != "cuda":
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device of them, got {device!r}")
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} but torch sees no CUDA device "
                               f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device={device!r}, but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
        if output != "torch":
            raise ValueError(f"device={device!r} gives torch tensors: use output='torch' (got {output!r})")
        return cls(CudaBackend(dev), pin=pin_memory is not False, to_device=True)

    # -- images cross as uint8 and are normalised on the device -------------------------
    def device_image(self, name: str, transforms: list, options: dict):
        """Host-side (transforms, options) for image field ``name``; records the device op."""
        from ..image.field import Image, _dtype_name
        from ..ops.normalize import Normalize, make_lut
        dtype = _dtype_name(options.get("dtype", "float32"))   # np.uint8 is "uint8" too
        if not self.to_device or dtype == "uint8":
            return transforms, options
        norm = transforms[-1] if transforms and isinstance(transforms[-1], Normalize) else None
        scale = options.get("scale")
        scale = Image.default_scale if scale is None else scale   # as the host's Image resolves it
        mean = np.asarray(norm.mean if norm else (0.0,) * 3, np.float64)
        std = np.asarray(norm.std if norm else (1.0,) * 3, np.float64)
        max_value = norm.max_value if norm else (255.0 if scale else 1.0)
        # The host's table, for its checks only: a float16 that would overflow to inf is refused here too.
        make_lut(mean=mean, std=std, max_value=max_value, dtype=dtype)
        bgr = norm is not None and norm.order == "BGR"
        self._image_ops[name] = (str(np.dtype(dtype)), options.get("layout", "NCHW"), bgr,
                                 tuple((1.0 / (max_value * std)).tolist()), tuple((-mean / std).tolist()))
        host = dict(options, dtype="uint8", layout="NHWC")
        return [t for t in transforms if t is not norm], host

    # -- slots ---------------------------------------------------------------------------
    def target(self):
        """Where a pass's batches go, read as it begins on the thread that iterates (None: they stay
        on the host)."""
        return self.backend.target() if self.to_device else None

    def prefetch(self, arrays: dict, lease, target) -> tuple[dict, object]:
        """Queue the copies of ``arrays`` (rows of ``lease``'s slot) to ``target`` now; the slot is
        refilled only once they have read it. Returns (device tensors, the last copy's event)."""
        out, last = {}, None
        for k, v in arrays.items():
            out[k], last = self.backend.copy_async(np.ascontiguousarray(v), target)
        if last is not None:
            lease.release_after(last)    # the copy stream finishes in order: the last event covers all
        return out, last

    def guard_release(self):
        """On release of a pinned slot: an event on the releasing thread's current stream of each
        device in use (:func:`current_streams_event`)."""
        return None if self.to_device else self.backend.current_event()

    def transfer(self, arrays: dict, lease, target=None, copied=None) -> dict:
        """Host slot views -> what the consumer gets (device tensors, or pinned host tensors).

        ``copied``: what :meth:`prefetch` queued already for some of them, to ``target`` (None:
        the device current now)."""
        if not self.to_device:
            import torch
            return {k: torch.from_numpy(v) for k, v in arrays.items()}
        out, last = copied if copied is not None else ({}, None)
        out = dict(out)
        rest = {k: v for k, v in arrays.items() if k not in out}
        if rest:   # queued on the same stream after any prefetched: their event covers those too
            more, last = self.prefetch(rest, lease, self.backend.target() if target is None else target)
            out.update(more)
        if last is not None:
            self.backend.wait(last, list(out.values()))
        for k, (dtype, layout, bgr, scale, bias) in self._image_ops.items():
            x = out[k]
            if bgr:
                x = x.flip(-1)   # on the device: an index list would first be copied from the host, blocking
            out[k] = self.backend.normalize(x, dtype, layout, self._on(scale, x.device), self._on(bias, x.device))
        return out

    def _on(self, values: tuple, device):
        """``values`` as constants on ``device``, placed there once (the first batch that goes there)."""
        key = (values, device)
        if key not in self._constants:
            self._constants[key] = self.backend.constants(list(values), device)
        return self._constants[key]
