"""Image + text + numeric batches: fastload vs the tutorial's zip of three Python generators.

    python benchmarks/bench_multimodal.py [--samples 2000] [--batch 32] [--runs 3] [--workers 2]

Both sides read the same generated files (96x128 JPEGs, ~20-word captions in
JSON Lines, 16 float columns of CSV) and produce the same batch: images
resized to 64x64 and normalised, captions as (B, 64) int32 ids from a word
vocabulary, features as (B, 16) float32. The baseline is the recipe as written
in the tutorial: PIL open/convert/resize, lower/strip/split with dict lookups,
``csv`` rows of floats, list append + ``np.stack``, all driven by ``zip`` of
three generators in one thread. Each figure is the median of ``--runs`` epochs
after a warm-up epoch, both measured in this process.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import string
import tempfile
import time

import numpy as np
from PIL import Image

import fastload as fl

SIZE, MAX_LEN, FEATURES = 64, 64, 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_data(root: str, n: int, seed: int = 0) -> list[str]:
    """Write the dataset once under ``root``; return the vocabulary."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(5000)})
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return vocab
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    with open(os.path.join(root, "texts.jsonl"), "w") as texts, \
            open(os.path.join(root, "numeric.csv"), "w", newline="") as numeric:
        writer = csv.writer(numeric)
        writer.writerow([f"f{j}" for j in range(FEATURES)])
        for i in range(n):
            base = rng.uniform(40, 215, 3).astype(np.float32)
            img = base + 40 * np.sin(xx / rng.uniform(3, 12) + yy / rng.uniform(3, 12))[..., None]
            img += rng.normal(0, 8, img.shape).astype(np.float32)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(root, "images", f"{i:06d}.jpg"), quality=90)
            words = rng.choice(vocab, 20).tolist()
            texts.write(json.dumps({"text": " ".join(words).capitalize() + "."}) + "\n")
            writer.writerow([f"{v:.5f}" for v in rng.normal(size=FEATURES)])
    open(marker, "w").close()
    return vocab


# -- the tutorial's pure-Python pipeline -------------------------------------------------------

def python_epoch(root: str, vocab: dict[str, int], batch_size: int) -> int:
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    table = str.maketrans("", "", string.punctuation)

    def image_gen():
        for name in sorted(os.listdir(os.path.join(root, "images"))):
            img = Image.open(os.path.join(root, "images", name)).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            yield ((np.asarray(img, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)

    def text_gen():
        with open(os.path.join(root, "texts.jsonl")) as f:
            for line in f:
                words = json.loads(line)["text"].lower().translate(table).split()
                ids = [vocab.get(w, 1) for w in words][:MAX_LEN]
                yield ids + [0] * (MAX_LEN - len(ids))

    def numeric_gen():
        with open(os.path.join(root, "numeric.csv"), newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for row in reader:
                yield [float(x) for x in row]

    batches = 0
    images, texts, numbers = [], [], []
    for img, ids, row in zip(image_gen(), text_gen(), numeric_gen()):
        images.append(img)
        texts.append(ids)
        numbers.append(row)
        if len(images) == batch_size:
            np.stack(images), np.array(texts, np.int32), np.array(numbers, np.float32)
            images, texts, numbers = [], [], []
            batches += 1
    if images:
        np.stack(images), np.array(texts, np.int32), np.array(numbers, np.float32)
        batches += 1
    return batches


# -- fastload ----------------------------------------------------------------------------------

def fastload_loader(root: str, vocab: list[str], batch_size: int, workers: int):
    records = fl.zip(image=fl.ImageFiles(os.path.join(root, "images")),
                     text=fl.JSONRecords(os.path.join(root, "texts.jsonl"), field="text"),
                     number=fl.CSVRows(os.path.join(root, "numeric.csv")))
    return fl.Loader(records, batch_size=batch_size, workers=workers, fields={
        "image": [fl.Resize((SIZE, SIZE)), fl.Normalize(MEAN, STD)],
        "text": fl.Tokenize(vocab, max_length=MAX_LEN),
        "number": fl.Standardize(),
    })


def batches_per_second(run_epoch, runs: int) -> tuple[float, list[float]]:
    run_epoch()   # warm-up: page cache, statistics passes, buffer allocation
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        count = run_epoch()
        rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates), rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=None, help="dataset folder (default: a cached temp folder)")
    args = ap.parse_args()
    root = args.data or os.path.join(tempfile.gettempdir(), f"fastload-bench-multimodal-{args.samples}")
    vocab = make_data(root, args.samples)
    ids = {w: i + 2 for i, w in enumerate(vocab)}   # the same ids Tokenize gives a plain word list

    loader = fastload_loader(root, vocab, args.batch, args.workers)
    fast, fast_runs = batches_per_second(lambda: sum(1 for _ in loader), args.runs)
    slow, slow_runs = batches_per_second(lambda: python_epoch(root, ids, args.batch), args.runs)

    def show(name, rate, runs):
        print(f"  {name:<32} {rate:8.1f} batches/s  {rate * args.batch:8.0f} samples/s   "
              f"(runs: {', '.join(f'{r:.1f}' for r in runs)})")

    print(f"\n== image+text+numeric, {args.samples} samples, batch {args.batch}, 64x64, "
          f"{args.workers} workers, {os.cpu_count()} cores")
    show("python zip of 3 generators", slow, slow_runs)
    show("fastload zip + Loader(fields=)", fast, fast_runs)
    print(f"  ratio: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
