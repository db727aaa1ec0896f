"""What the framework adapters read of a Loader: its current epoch and its image layouts."""
from __future__ import annotations

__all__ = ["current_epoch", "image_layouts"]


def current_epoch(loader) -> int:
    """The epoch the loader's next iteration runs, from its resumable state."""
    return int(loader.state_dict()["epoch"])


def image_layouts(loader) -> dict:
    """{output name: "NCHW" | "NHWC"} of the loader's image fields."""
    out = {}
    for binding in getattr(loader, "_bindings", ()):
        layout = getattr(binding.field, "layout", None)
        if layout is not None:
            out[binding.field.name] = layout
    return out
