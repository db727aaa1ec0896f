"""Train a small CNN with Keras 3 on fastload batches: model.fit, or the classic train_on_batch loop.

    KERAS_BACKEND=jax python examples/train_keras.py [PATH] [--epochs 4] [--loop]

Keras runs on the backend KERAS_BACKEND names (jax, torch or tensorflow; when
unset, whichever of jax and torch is installed). With no PATH it trains on a
synthetic dataset (fastload.synthetic) where the loss falls and accuracy rises
well above chance within a minute on two CPU cores. Keras wants channels-last
images, so the loaders give NHWC.
"""
import argparse
import importlib.util
import os
import tempfile

if "KERAS_BACKEND" not in os.environ:   # Keras defaults to TensorFlow; use what is installed
    os.environ["KERAS_BACKEND"] = next((b for b in ("jax", "torch") if importlib.util.find_spec(b)), "tensorflow")

import keras  # noqa: E402

import fastload as fl  # noqa: E402
from fastload.synthetic import make_image_folder  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Report(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch}: loss {logs['loss']:.3f}, accuracy {logs['accuracy']:.1%}"
              + (f", val accuracy {logs['val_accuracy']:.1%}" if "val_accuracy" in logs else ""), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="a folder with one subfolder of images per class")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="training images are SIZE x SIZE")
    ap.add_argument("--per-class", type=int, default=96, help="synthetic images per class")
    ap.add_argument("--loop", action="store_true", help="train with model.train_on_batch instead of fit")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial weights (the loader's is its own)")
    args = ap.parse_args()
    keras.utils.set_random_seed(args.seed)
    scratch = tempfile.TemporaryDirectory()   # removed when main() returns
    path = args.path or make_image_folder(os.path.join(scratch.name, "train"), classes=4,
                                          per_class=args.per_class, size=(96, 112))
    train, val = fl.ImageFolder(path).split(test_size=0.2, seed=0)
    loader = fl.Loader(train, batch_size=32, shuffle=True, seed=0, workers=2, layout="NHWC",
                       transforms=[fl.RandomResizedCrop(args.size, scale=(0.35, 1)), fl.RandomHorizontalFlip(),
                                   fl.Normalize(MEAN, STD)])
    val_loader = fl.Loader(val, batch_size=64, workers=2, layout="NHWC",
                           transforms=[fl.Resize(args.size), fl.CenterCrop(args.size), fl.Normalize(MEAN, STD)])
    model = keras.Sequential([
        keras.Input((args.size, args.size, 3)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(32, 3, strides=2, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(train.classes)),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    print(f"Keras {keras.__version__} on {keras.backend.backend()}; chance is {1 / len(train.classes):.0%}")
    if args.loop:   # the classic tutorial's loop
        for epoch in range(args.epochs):
            model.reset_metrics()
            for images, labels in loader:
                logs = model.train_on_batch(images, labels, return_dict=True)
            print(f"epoch {epoch}: loss {logs['loss']:.3f}, accuracy {logs['accuracy']:.1%}", flush=True)
    else:
        model.fit(loader.keras(), epochs=args.epochs, validation_data=val_loader.keras(),
                  verbose=0, callbacks=[Report()])
    print("loader state to save with the weights:", loader.state_dict())


if __name__ == "__main__":
    main()
