"""The PNG route: libspng (linked) against Pillow, decode alone and in the loader.

    python benchmarks/bench_png.py [--before DIR] [--n 256] [--rounds 3] [--threads 2]

Data: the benchmark suite's PNG set (photo-like ~256x256 RGB PNGs, written once
under ``fastload bench``'s cache). Two parts, each alternating its contenders
round by round so that all see the same machine state; figures are medians and
only the ratios of one run mean anything on a shared machine.

* Decode only, one thread, files in memory: Pillow's whole-file decode
  (``Image.open(...).load()``), fastload's PNG decoder (libspng, with libdeflate
  where linked) on the whole file,
  and on the rows the loader needs for each RandomResizedCrop-224 box (the
  same boxes the loader draws for seed 0, epoch 0).
* The loader task of the suite's ``png224`` row: RandomResizedCrop-224 + flip
  + normalise to float32 NCHW, batches of 64, ``--threads`` threads: this
  build's fastload, the fastload of ``--before DIR`` (a checkout built in
  place, e.g. main's, or this one built with FASTLOAD_NO_SPNG=1: PNGs through
  Pillow), and torch's DataLoader + PIL with as many worker processes, each
  through the suite's own worker (``fastload/bench/_worker.py``) of its tree.
  Target: fastload >= 3x the DataLoader.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time

import fastload as fl
from fastload._kernels import _batch
from fastload.bench.datasets import dataset
from fastload.image.field import compile_plan

HERE = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))


def files_of(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png"))


def decode_only(paths: list[str], rounds: int) -> dict[str, float]:
    from PIL import Image
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    d = _batch.PngDecoder()
    plan, _ = compile_plan([fl.RandomResizedCrop(224), fl.RandomHorizontalFlip()])
    regions = []
    for i, b in enumerate(blobs):
        info = d.info(b)
        (x0, y0, x1, y1), _ = plan.box(info["width"], info["height"], 0, 0, i)
        regions.append((math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)))

    def pillow():
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                im.load()

    def spng_full():
        for b in blobs:
            d.decode(b)

    def spng_region():
        for b, r in zip(blobs, regions):
            d.decode(b, region=r)
    work = {"Pillow, whole file": pillow, "fastload, whole file": spng_full, "fastload, crop rows": spng_region}
    rates = {k: [] for k in work}
    for f in work.values():   # warm-up
        f()
    for _ in range(rounds):
        for k, f in work.items():
            t = time.perf_counter()
            f()
            rates[k].append(len(blobs) / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in rates.items()}


def loader_rate(home: str, contender: str, builder: str, root: str, threads: int) -> tuple[float, float, str]:
    """images/s (median of 3 epochs after a warm-up) and CPU seconds per image (the process tree's, in
    those epochs) of one contender run by ``home``'s own worker, and its PNG decoder."""
    spec = {"contender": contender, "builder": builder, "workers": threads, "runs": 3, "max_images": 0,
            "cache": os.path.join(os.path.expanduser("~"), ".cache", "fastload-bench", "work"),
            "task": {"name": "png224", "dataset": "png", "path": root, "transform": "rrc", "size": 224,
                     "batch": 64}}
    env = dict(os.environ, PYTHONPATH=home, OMP_NUM_THREADS="1")
    worker = os.path.join(home, "fastload", "bench", "_worker.py")
    out = subprocess.run([sys.executable, worker, json.dumps(spec)], env=env, capture_output=True, text=True,
                         input="go\n" * spec["runs"], cwd="/", timeout=600).stdout   # a go for each timed epoch
    line = next(x for x in reversed(out.splitlines()) if x.startswith("@@fastload-bench "))
    r = json.loads(line.split(" ", 1)[1])
    if not r.get("ok"):
        raise RuntimeError(f"{contender} ({home}): {r.get('reason')}")
    probe = subprocess.run([sys.executable, "-c", "import fastload; print(fastload.features().get("
                            "'png_decoder', 'Pillow (before the PNG route)'))"], env=env, capture_output=True,
                           text=True, cwd="/").stdout.strip()
    return statistics.median(r["rates"]), r["cpu_s_per_image"], probe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="another fastload checkout built in place, measured in the same rounds")
    ap.add_argument("--n", type=int, default=256, help="PNG files (the suite's --full set has 256)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    root = dataset("png", args.n)
    paths = files_of(root)
    print(f"{len(paths)} PNGs under {root}; this build: {fl.features()['png_decoder']}")
    if _batch.HAVE_SPNG:
        rates = decode_only(paths, args.rounds)
        base = rates["Pillow, whole file"]
        print("\n== decode only, 1 thread, files in memory")
        for k, v in rates.items():
            print(f"  {k:<22} {v:8.0f} img/s   {v / base:.2f}x Pillow")
    contenders = [("fastload (this build)", HERE, "fastload", "fastload")]
    if args.before:
        contenders.append(("fastload (--before)", os.path.abspath(args.before), "fastload", "fastload"))
    contenders.append((f"torch DataLoader + PIL, {args.threads} workers", HERE, f"torch-{args.threads}", "torch"))
    runs = {c[0]: [] for c in contenders}
    cpu = {c[0]: [] for c in contenders}
    names = {}
    for _ in range(args.rounds):
        for label, home, name, builder in contenders:
            rate, cpu_s, names[label] = loader_rate(home, name, builder, root, args.threads)
            runs[label].append(rate)
            cpu[label].append(cpu_s * 1e3)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: max(v) for k, v in runs.items()}
    ms = {k: statistics.median(v) for k, v in cpu.items()}
    first, torch_label = contenders[0][0], contenders[-1][0]
    print(f"\n== loader: RandomResizedCrop-224 + flip + normalise, float32 NCHW, batch 64, {args.threads} threads")
    print(f"  {'':<34} {'median':>7} {'x torch':>7}  {'best':>6} {'x torch':>7}  {'CPU ms/img':>10}  rounds (img/s)")
    for label, *_ in contenders:
        spread = ", ".join(f"{r:.0f}" for r in runs[label])
        print(f"  {label:<34} {med[label]:7.0f} {med[label] / med[torch_label]:6.2f}x  {best[label]:6.0f} "
              f"{best[label] / best[torch_label]:6.2f}x  {ms[label]:10.2f}  {spread}")
        if label.startswith("fastload"):
            print(f"      PNG decoder: {names[label][:90]}")
    print(f"\nPNG: fastload / torch DataLoader = {med[first] / med[torch_label]:.2f}x (medians), "
          f"{best[first] / best[torch_label]:.2f}x (best rounds) in images/s (target >= 3x); "
          f"{ms[torch_label] / ms[first]:.2f}x in CPU time per image. Load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores: other work on the machine compresses the images/s ratios, and the best "
          f"rounds are the least disturbed.")


if __name__ == "__main__":
    main()
