"""Train a small CNN in plain JAX on fastload batches (NHWC images, int32 labels on the device).

    python examples/train_jax.py [PATH] [--epochs 4]

With no PATH it trains on a synthetic dataset (fastload.synthetic) where the
loss falls and accuracy rises well above chance within a minute on two CPU
cores. `fastload.integrations.jax.device_put` places each batch with
`jax.device_put` (sharded over local devices with `sharding=batch_sharding()`)
and narrows int64 labels to int32 after checking they fit, instead of letting
JAX truncate them silently. The jitted step runs asynchronously, so the loader
gives batches the step may keep (`copy=True`).
"""
import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import fastload as fl
from fastload.integrations.jax import device_put
from fastload.synthetic import make_image_folder

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CHANNELS = (16, 32, 64)


def init(key, classes):
    params, c_in = [], 3
    for c_out in CHANNELS:
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (3, 3, c_in, c_out)) * np.sqrt(2 / (9 * c_in)), jnp.zeros(c_out)))
        c_in = c_out
    key, sub = jax.random.split(key)
    return params, (jax.random.normal(sub, (c_in, classes)) * np.sqrt(1 / c_in), jnp.zeros(classes))


def forward(params, x):
    convs, (w, b) = params
    for k, bias in convs:   # 3x3 stride-2 convolutions, NHWC
        x = jax.lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + bias)
        x = (x - x.mean(axis=(0, 1, 2))) / (x.std(axis=(0, 1, 2)) + 1e-5)   # batch norm, no running stats
    return x.mean(axis=(1, 2)) @ w + b


def loss_fn(params, x, y):
    logits = forward(params, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y]), logits


@jax.jit
def step(params, moments, x, y, lr=3e-3, b1=0.9, b2=0.999):
    """One Adam step; returns new params and moments, the loss and the number of correct predictions."""
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    m, v, t = moments
    t = t + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    params = jax.tree.map(lambda p, m, v: p - lr * (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + 1e-8),
                          params, m, v)
    return params, (m, v, t), loss, jnp.sum(logits.argmax(1) == y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="a folder with one subfolder of images per class")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="training images are SIZE x SIZE")
    ap.add_argument("--per-class", type=int, default=96, help="synthetic images per class")
    args = ap.parse_args()
    scratch = tempfile.TemporaryDirectory()   # removed when main() returns
    path = args.path or make_image_folder(os.path.join(scratch.name, "train"), classes=4,
                                          per_class=args.per_class, size=(96, 112))
    train = fl.ImageFolder(path)
    loader = fl.Loader(train, batch_size=32, shuffle=True, seed=0, workers=2, layout="NHWC", copy=True,
                       transforms=[fl.RandomResizedCrop(args.size, scale=(0.35, 1)), fl.RandomHorizontalFlip(),
                                   fl.Normalize(MEAN, STD)])
    params = init(jax.random.key(0), len(train.classes))
    moments = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params), 0)
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}; chance is {1 / len(train.classes):.0%}")
    for epoch in range(args.epochs):
        losses, hits, total, t0 = [], [], 0, time.perf_counter()
        for batch in loader:
            x, y = device_put(batch)   # NHWC float32, int32 labels
            params, moments, loss, correct = step(params, moments, x, y)
            losses.append(loss * len(y))
            hits.append(correct)
            total += len(y)
        print(f"epoch {epoch}: loss {float(sum(losses)) / total:.3f}, accuracy {int(sum(hits)) / total:.1%}, "
              f"{total / (time.perf_counter() - t0):.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
