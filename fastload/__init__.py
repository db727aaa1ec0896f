"""fastload: training batches from image folders and multi-modal records, fast.

Python generators orchestrate; compiled kernels decode, crop, resize, augment
and normalise with the GIL released, on worker threads, straight into reused
batch buffers.
"""
__version__ = "0.1.0"

from .errors import DecodeError, FailedRecord, FastloadError, RecordError, StageError
from .features import features
from .image.field import Image
from .ops.augment import ColorJitter, RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from .ops.geometry import CenterCrop, RandomCrop, RandomResizedCrop, Resize
from .ops.labels import Labels
from .ops.normalize import Normalize
from .ops.numeric import Numeric, Standardize
from .pipeline.fields import Field, Output
from .pipeline.fluent import Stream, mix
from .pipeline.generators import GeneratorPipeline
from .pipeline.loader import Loader
from .sources.arrays import ArrayRecords, IterableRecords
from .sources.base import ListSource, Source, Subset
from .sources.folders import ImageFiles, ImageFolder
from .sources.hf import HFDataset
from .sources.packed import PackedDataset
from .sources.shards import TarShards, TarStream
from .sources.split import split
from .sources.tabular import CSVRows
from .sources.text import JSONRecords
from .stages import augment, read_images, rescale, shuffle_samples
from .text.tokenize import Tokenize
from .sources.align import join, key_by, stem, zip  # noqa: A004 (fastload.zip is the strict one)

__all__ = [
    "ArrayRecords", "augment", "CenterCrop", "ColorJitter", "CSVRows", "DecodeError", "FastloadError",
    "FailedRecord", "features", "Field", "GeneratorPipeline", "HFDataset", "Image", "ImageFiles", "ImageFolder",
    "IterableRecords", "join", "JSONRecords", "key_by", "Labels", "ListSource", "Loader", "mix",
    "Normalize", "NumbaOp", "numba_transform", "Numeric", "Output", "PackedDataset", "RandomCrop",
    "RandomHorizontalFlip", "RandomResizedCrop", "RandomRotate90", "RandomVerticalFlip", "read_images",
    "RecordError", "rescale", "Resize", "shuffle_samples", "Source", "split", "StageError",
    "Standardize", "stem", "Stream", "Subset", "TarShards", "TarStream", "Tokenize", "zip",
]


def __getattr__(name):   # user kernels import Numba, so only when they are used
    if name in ("NumbaOp", "numba_transform"):
        from .ops import numba_ops
        return getattr(numba_ops, name)
    raise AttributeError(f"module 'fastload' has no attribute {name!r}")
