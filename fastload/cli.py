"""The ``fastload`` command: demo, doctor, features."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

__all__ = ["main"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _progress(done: int, total: int, rate: float, width: int = 30) -> None:
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} batches  {rate:8.0f} img/s")
    sys.stderr.flush()


def demo(path: str | None, *, epochs: int, batch_size: int, workers: int, size: int) -> int:
    import fastload as fl
    with tempfile.TemporaryDirectory(prefix="fastload-demo-") as tmp:
        if path is None:
            from .synthetic import make_image_folder
            print(f"creating a demo dataset of 10 classes x 64 photo-like JPEGs in {tmp} ...")
            path = make_image_folder(os.path.join(tmp, "train"), classes=10, per_class=64)
        source = fl.ImageFolder(path)
        print(f"{source}; JPEG decoder: {fl.features()['jpeg_decoder']}")
        loader = fl.Loader(source, batch_size=batch_size, shuffle=True, seed=0, workers=workers,
                           transforms=[fl.RandomResizedCrop(size), fl.RandomHorizontalFlip(),
                                       fl.Normalize(IMAGENET_MEAN, IMAGENET_STD)],
                           on_error="skip")
        for epoch in range(epochs):
            n, t0 = 0, time.perf_counter()
            for i, (images, labels) in enumerate(loader):
                n += len(images)
                _progress(i + 1, len(loader), n / (time.perf_counter() - t0))
            dt = time.perf_counter() - t0
            sys.stderr.write("\n")
            print(f"epoch {epoch}: {n} images in {dt:.2f} s = {n / dt:.0f} images/s "
                  f"(batches {tuple(images.shape)} {images.dtype}, {workers} worker threads)")
        skipped = loader.stats().get("skipped", 0)
        if skipped:
            print(f"skipped {skipped} unreadable files; see loader.stats()['failures']")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastload", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run an epoch on a folder of images (a built-in synthetic one by default)")
    p.add_argument("path", nargs="?", help="class-per-subfolder image directory")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--size", type=int, default=224)
    p = sub.add_parser("doctor", help="profile a folder and say which stage limits throughput")
    p.add_argument("path")
    p.add_argument("--seconds", type=float, default=5.0)
    sub.add_parser("features", help="print what this build was compiled with")
    from . import bench
    bench.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench.run(args)
    if args.command == "demo":
        return demo(args.path, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
                    size=args.size)
    if args.command == "doctor":
        from .doctor import doctor
        doctor(args.path, seconds=args.seconds)
        return 0
    from .features import features
    print(json.dumps(features(), indent=2))
    return 0
