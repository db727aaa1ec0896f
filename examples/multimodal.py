"""Images + captions + numeric features, aligned by position, split, and batched.

    python examples/multimodal.py

Builds a small dataset in a temporary folder (JPEGs written with Pillow from
NumPy arrays, captions as JSON Lines, features as CSV), then does what the
``zip(image_gen, text_gen, numeric_gen)`` recipe tries to do, without its
failure modes: sources of unequal length are an error, and a record that fails
to decode is dropped whole, so no caption ever lands on the wrong image.
"""
import argparse
import json
import os
import tempfile

import numpy as np
from PIL import Image

import fastload as fl

WORDS = "a the small large red green blue cat dog bird sits runs on under near tree house car".split()


def make_dataset(root: str, n: int = 200, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    yy, xx = np.mgrid[0:96, 0:128]
    with open(os.path.join(root, "texts.jsonl"), "w") as texts, \
            open(os.path.join(root, "numeric.csv"), "w") as numeric:
        numeric.write("width,height,brightness,score\n")
        for i in range(n):
            colour = rng.uniform(0, 255, 3)
            img = colour * (0.5 + 0.5 * np.sin(xx / (4 + i % 7) + yy / 9.0))[..., None]
            Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, "images", f"{i:05d}.jpg"), quality=90)
            caption = " ".join(rng.choice(WORDS, size=rng.integers(4, 12))).capitalize() + "."
            texts.write(json.dumps({"id": f"{i:05d}", "text": caption}) + "\n")
            numeric.write(f"128,96,{img.mean():.3f},{rng.normal():.4f}\n")
    with open(os.path.join(root, "vocab.txt"), "w") as f:   # a plain word list: ids 2.., 0=<pad>, 1=<unk>
        f.write("\n".join(WORDS) + "\n")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()   # --help: say what runs
    with tempfile.TemporaryDirectory() as root:
        make_dataset(root)
        images = fl.ImageFiles(os.path.join(root, "images"))          # sorted by file name
        texts = fl.JSONRecords(os.path.join(root, "texts.jsonl"), field="text")
        numbers = fl.CSVRows(os.path.join(root, "numeric.csv"))      # header detected
        records = fl.zip(image=images, text=texts, number=numbers)    # equal lengths, or an error
        train, test = records.split(test_size=0.2, seed=42)
        print(f"{len(records)} records ({', '.join(records.fields)}): {len(train)} train, {len(test)} test")
        print(f"numeric columns: {numbers.columns}")

        loader = fl.Loader(train, batch_size=32, shuffle=True, workers=2, on_error="skip", fields={
            "image": [fl.Resize((64, 64)), fl.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
            "text": fl.Tokenize(os.path.join(root, "vocab.txt"), max_length=16),
            "number": fl.Standardize(),   # mean/std from one pass over the training rows
        })
        for b, batch in enumerate(loader):
            if b == 0:
                for name, value in batch.items():
                    print(f"  {name:<12} {tuple(value.shape)} {value.dtype}")
                print(f"  first caption's ids: {batch['text'][0][:batch['text_length'][0]].tolist()}")
        print(f"{b + 1} batches per epoch")


if __name__ == "__main__":
    main()
