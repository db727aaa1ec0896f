"""fastload: training batches from image folders and multi-modal records, fast.

Python generators orchestrate; compiled kernels decode, crop, resize, augment
and normalise with the GIL released, on worker threads, straight into reused
batch buffers.
"""
__version__ = "0.1.0"

from .errors import DecodeError, FastloadError, RecordError, StageError
from .features import features
from .ops.augment import ColorJitter, RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from .ops.geometry import CenterCrop, RandomCrop, RandomResizedCrop, Resize
from .ops.labels import Labels
from .ops.normalize import Normalize
from .pipeline.fields import Field, Output
from .pipeline.loader import Loader
from .sources.base import ListSource, Source, Subset
from .sources.folders import ImageFiles, ImageFolder

__all__ = sorted([
    "CenterCrop", "ColorJitter", "DecodeError", "FastloadError", "Field", "ImageFiles", "ImageFolder",
    "Labels", "ListSource", "Loader", "Normalize", "Output", "RandomCrop", "RandomHorizontalFlip",
    "RandomResizedCrop", "RandomRotate90", "RandomVerticalFlip", "RecordError", "Resize", "Source",
    "StageError", "Subset", "features",
])
