"""The ``fastload`` command: a small argparse dispatcher.

Each subcommand is a module with ``add_parser(subparsers)`` (returning its
parser) and ``run(args) -> int``, named in :data:`COMMANDS`; a module that is
not installed is left out. A user mistake (a missing folder, a folder with no
images) is raised as :class:`UsageError` and printed as one line.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import sys
import tempfile
import time
import warnings

from .pipeline.node import usable_cores

__all__ = ["COMMANDS", "UsageError", "image_folder", "main", "progress"]

#: Subcommand modules, in the order ``fastload --help`` lists them.
COMMANDS = ("fastload.cli", "fastload.doctor", "fastload.pack", "fastload.bench")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UsageError(Exception):
    """A mistake in what the user asked for: printed as ``fastload: error: ...``, exit status 2."""


def image_folder(path: str):
    """``fl.ImageFolder(path)``, or a UsageError saying in one line what is wrong with ``path``."""
    import fastload as fl
    from .sources.folders import IMAGE_EXTENSIONS, _Walker
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        raise UsageError(f"{path}: not a folder (expected a folder with one subfolder per class)")
    with os.scandir(path) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    if not entries:
        raise UsageError(f"{path}: the folder is empty (expected one subfolder of images per class)")
    if not any(_Walker._is_dir(e) for e in entries):   # a link to itself is no folder, not a crash
        images = sum(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries)
        raise UsageError(f"{path}: no class subfolders; it holds {images} image(s) directly "
                         f"(expected {os.path.join(path, '<class>', '<image>')})")
    try:
        return fl.ImageFolder(path)
    except FileNotFoundError as e:   # ImageFolder's message says which folders, and which extensions
        raise UsageError(str(e)) from e


class progress:
    """A progress bar through tqdm when it is installed, else one plain line at the end."""

    def __init__(self, total: int, desc: str, unit: str = "img"):
        self.total, self.desc, self.unit, self.n, self.t0 = total, desc, unit, 0, time.perf_counter()
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr)

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> float:
        """Closes the bar; returns the elapsed seconds."""
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.t0

    def __enter__(self) -> "progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()   # on an error too: the bar's line is cleared before the message is printed


# -- demo and features ------------------------------------------------------------------
DEMO_HELP = """\
Run a typical training loader (random resized crop, flip, normalise) for an
epoch (--epochs for more) and print images per second. Without PATH it first writes a small
dataset of photo-like JPEGs (10 classes x 64 images) to a temporary folder.

examples:
  fastload demo                       # built-in dataset
  fastload demo ~/data/train --size 128 --epochs 2
"""


FEATURES_HELP = """\
Print the JPEG and PNG decoders, the SIMD level and other facts of this build
as JSON.

examples:
  fastload features
  fastload features > build.json     # to attach to a bug report
"""


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="run a training loader on a folder of images and print its speed",
                              description=DEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="a folder with one subfolder of images per class")
    p.add_argument("--epochs", type=int, default=1, help="epochs to run (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--workers", type=int, default=usable_cores(),
                   help=f"worker threads (default: the CPU cores this process may use, {usable_cores()} here)")
    p.add_argument("--size", type=int, default=224, help="output images are SIZE x SIZE pixels (default 224)")
    p.set_defaults(run=run)
    f = subparsers.add_parser("features", help="print what this build of fastload contains",
                              description=FEATURES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.set_defaults(run=print_features)
    return p


def print_features(args) -> int:
    from .features import features
    print(json.dumps(features(), indent=2))
    return 0


def run(args) -> int:
    for name in ("epochs", "batch_size", "size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    with tempfile.TemporaryDirectory(prefix="fastload-demo-") as tmp:
        path = args.path
        if path is None:
            from .synthetic import make_image_folder
            print(f"writing a demo dataset of 10 classes x 64 photo-like JPEGs to {tmp} ...")
            path = make_image_folder(os.path.join(tmp, "train"), classes=10, per_class=64)
        return _demo(image_folder(path), args)


def _demo(source, args) -> int:
    import fastload as fl
    f = fl.features()
    print(f"{len(source)} images in {len(source.classes)} classes under {source.root}; "
          f"JPEG decoder: {f['jpeg_decoder']}; PNG decoder: {f['png_decoder']}")
    if f["jpeg_how_to_link"]:
        print(f["jpeg_how_to_link"])
    loader = fl.Loader(source, batch_size=args.batch_size, shuffle=True, seed=0, workers=args.workers,
                       transforms=[fl.RandomResizedCrop(args.size), fl.RandomHorizontalFlip(),
                                   fl.Normalize(IMAGENET_MEAN, IMAGENET_STD)], on_error="skip")
    shape = None
    for epoch in range(args.epochs):
        bar = progress(len(source), f"epoch {epoch}")
        n = 0
        with bar, warnings.catch_warnings():   # skipped files are listed at the end instead
            warnings.filterwarnings("ignore", "fastload: skipping", RuntimeWarning)
            try:
                for images, labels in loader:
                    if shape is None:
                        shape = f"{tuple(images.shape)} {images.dtype}"
                    n += len(images)
                    bar.update(len(images))
            except fl.RecordError:   # not one file read: say which and why, in a line
                stats = loader.stats()
                rid, reason = stats["failures"][0]
                raise UsageError(f"{source.root}: none of the {stats['failed_this_epoch']} file(s) read could be "
                                 f"decoded (the first: {rid}: {reason}); 'fastload doctor' lists them") from None
        dt = bar.close()
        print(f"epoch {epoch}: {n} images in {dt:.2f} s = {n / dt:.0f} images/s "
              f"({args.workers} worker threads)")
    print(f"batches: {shape} (images), batch size {args.batch_size}")
    stats = loader.stats()   # the last epoch's: each epoch meets the same files
    if stats["failed_this_epoch"]:
        print(f"skipped {stats['failed_this_epoch']} unreadable file(s):")
        for rid, reason in stats["failures"][:50]:
            print(f"  {rid}: {reason}")
        if stats["failed_this_epoch"] > 50:
            print(f"  ... and {stats['failed_this_epoch'] - 50} more ('fastload doctor' lists them)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastload", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fast training batches from image folders. Run 'fastload COMMAND --help' for a command's "
                    "options.",
        epilog="examples:\n  fastload demo\n  fastload doctor ~/data/train --workers 4 --size 160\n"
               "  fastload features")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:   # a command this installation does not have
                continue
            raise
        command = module.add_parser(sub)
        if command.get_default("run") is None:
            command.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()   # a reader that stopped early (| head) is met here, not at exit
        return code
    except UsageError as e:
        parser.exit(2, f"fastload: error: {e}\n")
    except MemoryError as e:   # the batch buffers' own message says what would fit
        parser.exit(1, f"fastload: error: {e or 'out of memory'}\n")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_gone():   # another pipe's (a child process's): its traceback says which
            raise
        # as Python's documentation advises: what is left goes nowhere, exit status 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _stdout_gone() -> bool:
    """Whether the reader of standard output has gone: on Linux a pipe whose read end is closed
    polls as an error; elsewhere, as Python's documentation assumes, yes."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):   # replaced by an object without a descriptor
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
