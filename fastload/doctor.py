"""``fastload doctor``: run your loader configuration flat out and say what limits it.

It builds the Loader you describe (``--size``, ``--batch-size``, ``--workers``,
``--transforms``, or a Python file that builds one), consumes its batches as
fast as they come for a few seconds (so the loader, not a model, is the limit),
then reports images per second, CPU time per image, every file it could not
read, and advice that accounts for the machine's core count.
"""
from __future__ import annotations

import argparse
import os
import runpy
import time
import warnings
from typing import Callable

from .cli import IMAGENET_MEAN, IMAGENET_STD, UsageError, image_folder, progress
from .errors import RecordError
from .pipeline.node import usable_cores

__all__ = ["add_parser", "doctor", "run"]

HELP = """\
Profile a training loader on your images for a few seconds and say what limits
its speed: the CPU (and whether more worker threads would help on this
machine), slow file reads, or oversized images. Files that cannot be read are
listed, not fatal.

The loader is the one you describe with the options below, or the one a Python
file builds: the file defines `loader` (a fastload.Loader) or a function
`make_loader(path)` that returns one.

examples:
  fastload doctor ~/data/train
  fastload doctor ~/data/train --size 160 --batch-size 128 --workers 4 --transforms crop,flip,jitter,normalize
  fastload doctor --config my_loader.py ~/data/train
"""

TRANSFORMS = {
    "crop": "random resized crop to SIZE", "resize": "resize to SIZE x SIZE",
    "center": "resize the shorter side to SIZE, then centre crop", "flip": "random horizontal flip",
    "jitter": "colour jitter (0.4, 0.4, 0.4)", "normalize": "ImageNet mean/std normalisation",
}


def add_parser(subparsers):
    p = subparsers.add_parser("doctor", help="profile a loader on your images and say what limits it",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="a folder with one subfolder of images per class")
    p.add_argument("--config", metavar="FILE", help="a Python file that builds the loader (see above)")
    # None: not given (--config builds its own loader and refuses them)
    p.add_argument("--size", type=int, default=None, help="output images are SIZE x SIZE pixels (default 224)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"worker threads (default: the CPU cores this process may use, {usable_cores()} here)")
    p.add_argument("--transforms", default=None,
                   help="comma-separated, in order, from: " + "; ".join(f"{k} ({v})" for k, v in TRANSFORMS.items())
                   + " (default: crop,flip,normalize)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to run (default 5)")
    p.add_argument("--all", action="store_true", help="read every file once, however long it takes")
    p.set_defaults(run=run)
    return p


_OPTIONS = {"size": 224, "batch_size": 64, "workers": None, "transforms": "crop,flip,normalize"}


def run(args) -> int:
    if args.seconds <= 0:
        raise UsageError("--seconds must be more than 0")
    given = [name for name in _OPTIONS if getattr(args, name) is not None]
    if args.config and given:
        raise UsageError(f"--config builds the loader, so {', '.join('--' + n.replace('_', '-') for n in given)} "
                         "would be ignored: set them in the file")
    for name, default in _OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    loader = _user_loader(args) if args.config else _loader_from_options(args)
    doctor(loader, seconds=args.seconds, whole_epoch=args.all,
           rebuild=None if args.config else (lambda workers: _loader_from_options(args, workers)))
    return 0


def _transforms(spec: str, size: int):
    import fastload as fl
    build = {"crop": lambda: [fl.RandomResizedCrop(size)], "resize": lambda: [fl.Resize((size, size))],
             "center": lambda: [fl.Resize(size), fl.CenterCrop(size)], "flip": lambda: [fl.RandomHorizontalFlip()],
             "jitter": lambda: [fl.ColorJitter(0.4, 0.4, 0.4)],
             "normalize": lambda: [fl.Normalize(IMAGENET_MEAN, IMAGENET_STD)]}
    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in build:
            raise UsageError(f"--transforms: unknown {name!r}; choose from {', '.join(TRANSFORMS)}")
        out += build[name]()
    if not any(n in spec for n in ("crop", "resize", "center")):
        raise UsageError("--transforms must include crop, resize or center, to give every image the same size")
    try:
        fl.Image(out)   # the order's rules (normalize last, geometry before colour), in one line
    except ValueError as e:
        raise UsageError(f"--transforms {spec}: {e}") from None
    return out


def _loader_from_options(args, workers=None):
    import fastload as fl
    if args.path is None:
        raise UsageError("give a folder of images (or --config FILE)")
    if args.size < 1 or args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise UsageError("--size and --batch-size must be at least 1, --workers 0 or more")
    workers = workers if workers is not None else (args.workers if args.workers is not None else usable_cores())
    return fl.Loader(image_folder(args.path), batch_size=args.batch_size, shuffle=True, seed=0, workers=workers,
                     transforms=_transforms(args.transforms, args.size), on_error="skip")


def _user_loader(args):
    import fastload as fl
    if not os.path.isfile(args.config):
        raise UsageError(f"{args.config}: no such file")
    scope = runpy.run_path(args.config, run_name="__fastload_doctor__")
    if "make_loader" in scope:
        if args.path is None:
            raise UsageError(f"{args.config} defines make_loader(path): give the folder as PATH")
        loader = scope["make_loader"](args.path)
    else:
        loader = scope.get("loader")
    if not isinstance(loader, fl.Loader):
        raise UsageError(f"{args.config} must define `loader` (a fastload.Loader) or `make_loader(path)`, "
                         f"got {type(loader).__name__}")
    return loader


def _profile(loader, seconds: float, whole_epoch: bool):
    """Batches as fast as they come for ``seconds`` (or one whole epoch): (images, elapsed s, stats).

    ``stats["failures"]`` gathers every epoch's (the loader lists only the current one's, the
    first 1000), ``stats["failed"]`` counts the files that failed.
    """
    with progress(len(loader.source) if whole_epoch else None, "profiling") as bar:
        deadline = time.perf_counter() + seconds
        failures, most = {}, 0
        while True:
            it = iter(loader)
            unreadable = False
            try:
                for batch in it:
                    bar.update(_count(batch))
                    if not whole_epoch and time.perf_counter() >= deadline:
                        break
            except RecordError:   # every record of the epoch failed: they are the report
                unreadable = True
            it.close()   # stops the worker threads of an epoch left early
            stats = loader.stats()
            for rid, reason in stats["failures"]:
                failures.setdefault(rid, reason)
            most = max(most, stats["failed_this_epoch"])
            if whole_epoch or unreadable or time.perf_counter() >= deadline:
                stats["failures"], stats["failed"] = list(failures.items()), max(len(failures), most)
                return bar.n, bar.close(), stats


def _count(batch) -> int:
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    elif isinstance(batch, tuple):
        batch = batch[0]
    return len(batch)


def doctor(loader, *, seconds: float = 5.0, whole_epoch: bool = False, out: Callable[[str], object] = print,
           rebuild: Callable[[int], object] | None = None) -> dict:
    """Profile ``loader``, print the report through ``out``; return its figures.

    Files that fail are skipped and listed (the loader's ``on_error`` is set to
    ``"skip"`` for the run). ``rebuild(workers)``, when given, builds the same
    loader with another worker count, to measure what the machine's cores would give.
    """
    cores = usable_cores()   # as the loader counts them when it caps its threads
    loader.on_error, loader.max_failures = "skip", None   # list every unreadable file, die on none
    workers = loader.workers
    source = loader.source
    out(f"fastload doctor: {len(source)} records from {type(source).__name__}"
        f"{' ' + repr(getattr(source, 'root', '')) if hasattr(source, 'root') else ''}; "
        f"batches of {loader.batch_size}; {workers} worker thread(s) on {cores} CPU cores")
    with warnings.catch_warnings():   # skipped files are listed below, not warned about
        warnings.filterwarnings("ignore", "fastload: skipping", RuntimeWarning)
        images, elapsed, stats = _profile(loader, seconds, whole_epoch)
    rate = images / elapsed if elapsed else 0.0
    cpu_ms = 1000 * stats.get("cpu_s", 0.0) / max(stats.get("samples", 0) + stats.get("skipped", 0), 1)
    failures, failed = stats["failures"], stats["failed"]   # each file once, with its first reason
    report = {"images": images, "seconds": elapsed, "images_per_s": rate, "cpu_ms_per_image": cpu_ms,
              "workers": workers, "cores": cores, "batch_size": loader.batch_size, "failures": failures}
    out(f"throughput: {rate:.0f} images/s ({images} images in {elapsed:.1f} s); "
        f"{cpu_ms:.2f} ms of CPU per image; workers busy {stats['worker_utilisation']:.0%} of the time")
    if workers < cores and rebuild is not None:
        more = rebuild(cores)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "fastload: skipping", RuntimeWarning)
            n2, t2, _ = _profile(more, min(seconds, max(1.0, seconds / 2)), False)
        report["images_per_s_all_cores"] = n2 / t2 if t2 else 0.0
        out(f"with {cores} workers (one per core): {report['images_per_s_all_cores']:.0f} images/s")
    for line in _advice(report, stats, source):
        out("advice: " + line)
    if failed:
        out(f"{failed} file(s) could not be read and were skipped:")
        for rid, reason in failures[:50]:
            out(f"  {rid}: {reason}")
        if failed > 50:
            out(f"  ... and {failed - 50} more")
    checked = min(images + failed, len(source))
    out(f"checked {checked} of {len(source)} records" + ("" if checked >= len(source) else
                                                        " (--all reads every file)"))
    return report


def _advice(report, stats, source) -> list[str]:
    if report["images"] == 0 and report["failures"]:
        return ["not one file could be read (the list below says why): there is no speed to measure"]
    cores, workers, cpu_ms = report["cores"], report["workers"], report["cpu_ms_per_image"]
    advice = []
    if workers > cores:
        advice.append(f"{workers} workers on {cores} cores: threads beyond one per core add no speed; "
                      f"use workers={cores}")
    elif workers < cores:
        if "images_per_s_all_cores" in report:
            gain = report["images_per_s_all_cores"] / max(report["images_per_s"], 1e-9)
            advice.append(f"workers={cores} gave {gain:.2f}x the speed of workers={workers}"
                          + ("; use it" if gain > 1.1 else ": more workers do not help here"))
        else:   # workers=0 runs on the loop's own thread: one core
            advice.append(f"{max(workers, 1)} of {cores} cores used: workers={cores} may be faster")
    # Judged only over epochs long enough that starting one does not dominate.
    long_epochs = len(source) >= 20 * report["batch_size"]
    if long_epochs and stats["worker_utilisation"] < 0.5 and stats.get("consumer_wait_fraction", 0) > 0.5:
        advice.append("workers were idle half the time while batches were late: reading the files is slow "
                      "(a network or spinning disk?); copy the data to a local SSD")
    elif cpu_ms > 0:
        advice.append(f"at {cpu_ms:.2f} ms of CPU per image, {cores} cores give at most "
                      f"{1000 * cores / cpu_ms:.0f} images/s; a smaller output size or fewer transforms cost less")
    sizes = _image_sizes(source)
    if sizes:
        h, w = (sum(s[i] for _, s in sizes) / len(sizes) for i in (1, 0))
        advice.append(f"images average {w:.0f}x{h:.0f} pixels (from {len(sizes)} sampled)"
                      + ("; decoding them dominates: storing them at 2-3x the output size once saves most of "
                         "it" if min(h, w) > 1000 else ""))
        path, (bw, bh) = max(sizes, key=lambda s: s[1][0] * s[1][1])
        if bw * bh > 4 * w * h:   # one file can cost as much as many: name it
            advice.append(f"the largest sampled, {path}, is {bw}x{bh}: {bw * bh / (w * h):.0f}x the average's "
                          "pixels, and decoding time grows with them")
    return advice


def _image_sizes(source, n: int = 256):
    """(path, (width, height)) of up to ``n`` evenly spaced image files, read from their headers."""
    paths = getattr(source, "paths", None)
    if not paths:
        return []
    from PIL import Image
    sizes = []
    for p in paths[::max(1, len(paths) // n)][:n]:
        try:
            with Image.open(p) as im:
                sizes.append((p, im.size))
        except Exception:   # Pillow's many errors (a bomb guard's too): the run itself reports the file
            continue
    return sizes
