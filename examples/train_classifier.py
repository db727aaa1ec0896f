"""A complete, copyable training loop: fastload feeding a small torch CNN.

    python examples/train_classifier.py [PATH] [--epochs 2]

With no PATH it trains on a synthetic class-per-folder dataset. Batches arrive
as torch tensors that view fastload's reused (and, with a GPU, pinned) buffers;
`.to(device, non_blocking=True)` overlaps the copy with compute. The loader's
state is saved with the model, so a restart resumes mid-epoch exactly.
"""
import argparse
import json
import os
import tempfile

import torch
from torch import nn

import fastload as fl
from fastload.synthetic import make_image_folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    path = args.path or make_image_folder(os.path.join(tempfile.mkdtemp(), "train"), classes=4,
                                          per_class=64, size=(160, 180))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train = fl.ImageFolder(path)
    loader = fl.Loader(train, batch_size=32, shuffle=True, seed=0, workers=2, output="torch",
                       transforms=[fl.RandomResizedCrop(96), fl.RandomHorizontalFlip(),
                                   fl.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(train.classes)),
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(args.epochs):
        total, correct, loss_sum = 0, 0, 0.0
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            loss_sum += loss.item() * len(labels)
        print(f"epoch {epoch}: loss {loss_sum / total:.3f}, accuracy {correct / total:.2%}, "
              f"{loader.stats()['samples_per_s']:.0f} samples/s")
    checkpoint = {"loader": loader.state_dict()}   # JSON-safe: store it beside the weights
    print("loader state:", json.dumps(checkpoint["loader"]))


if __name__ == "__main__":
    main()
