"""Train a small CNN with PyTorch on fastload batches, on the CPU or a CUDA GPU.

    python examples/train_torch.py [PATH] [--epochs 4]

With no PATH it trains on a synthetic dataset (fastload.synthetic: 4 classes
of photo-like JPEGs, each class with its own colour cast and texture), where
the loss falls and accuracy rises well above chance within a minute on two
CPU cores. The loader yields torch tensors already on `device`; its state is
saved beside the weights, so `--resume` continues exactly where a run stopped.
"""
import argparse
import os
import tempfile
import time

import torch
from torch import nn

import fastload as fl
from fastload.synthetic import make_image_folder

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="a folder with one subfolder of images per class")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="training images are SIZE x SIZE")
    ap.add_argument("--per-class", type=int, default=96, help="synthetic images per class")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checkpoint", help="save model and loader state here after each epoch")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial weights (the loader's is its own)")
    args = ap.parse_args()
    if args.resume and not args.checkpoint:
        ap.error("--resume continues from --checkpoint FILE: give it")
    torch.manual_seed(args.seed)
    scratch = tempfile.TemporaryDirectory()   # removed when main() returns
    path = args.path or make_image_folder(os.path.join(scratch.name, "train"), classes=4,
                                          per_class=args.per_class, size=(96, 112))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, val = fl.ImageFolder(path).split(test_size=0.2, seed=0)
    loader = fl.Loader(train, batch_size=32, shuffle=True, seed=0, workers=args.workers,
                       output="torch", device=device,
                       transforms=[fl.RandomResizedCrop(args.size, scale=(0.35, 1)), fl.RandomHorizontalFlip(),
                                   fl.Normalize(MEAN, STD)])
    # The whole split, scored in this process: under torchrun (RANK and WORLD_SIZE set) a Loader would
    # otherwise take this rank's share, padded to whole batches, and the score would count that share.
    val_loader = fl.Loader(val, batch_size=64, workers=args.workers, output="torch", device=device,
                           rank=0, world_size=1,
                           transforms=[fl.Resize(args.size), fl.CenterCrop(args.size), fl.Normalize(MEAN, STD)])
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(train.classes)),
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    if args.resume:
        state = torch.load(args.checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        loader.load_state_dict(state["loader"])   # the next loop continues at state["loader"]["epoch"]
    first = loader.state_dict()["epoch"]
    for epoch in range(first, first + args.epochs):
        model.train()
        total, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        for images, labels in loader:       # on `device` already
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            loss_sum += loss.item() * len(labels)
        model.eval()
        with torch.no_grad():
            hits = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
        print(f"epoch {epoch}: loss {loss_sum / total:.3f}, accuracy {correct / total:.1%}, "
              f"val accuracy {hits / len(val):.1%} (chance {1 / len(train.classes):.0%}), "
              f"{total / (time.perf_counter() - t0):.0f} samples/s", flush=True)
        if args.checkpoint:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "loader": loader.state_dict()},
                       args.checkpoint)


if __name__ == "__main__":
    main()
