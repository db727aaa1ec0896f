"""The examples run as written (on a small synthetic dataset) and visibly learn."""
import importlib.util
import os
import re

import pytest

from _child import run_python

pytestmark = pytest.mark.slow   # each example trains for a few epochs in a child process

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout, or its copy
EXAMPLES = os.path.join(PROJECT, "examples")
SMALL = ["--epochs", "3", "--per-class", "24", "--size", "32"]


def epochs(out):
    """[(loss, accuracy)] from the 'epoch N: loss X, accuracy Y%' lines an example prints."""
    found = [(float(a), float(b) / 100) for a, b in re.findall(r"epoch \d+: loss ([\d.]+), accuracy ([\d.]+)%", out)]
    assert found, out
    return found


def needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def check_learns(out, n_epochs=3):
    """The loss falls well below the first epoch's and accuracy clears chance (4 classes: 25%).

    Judged on the best later epoch: with a few small batches per epoch one epoch's figures are noisy.
    """
    stats = epochs(out)
    assert len(stats) == n_epochs
    first_loss = stats[0][0]
    assert min(loss for loss, _ in stats[1:]) < 0.75 * first_loss, stats
    assert max(acc for _, acc in stats[1:]) > 0.6, stats


def test_train_torch_learns_and_resumes(tmp_path):
    needs("torch")
    ckpt = str(tmp_path / "ckpt.pt")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = run_python([os.path.join(EXAMPLES, "train_torch.py"), *SMALL, "--checkpoint", ckpt],
                     env={"TMPDIR": str(scratch)})
    check_learns(out)
    # its synthetic data set is removed when it ends (torch's compiler keeps a cache folder of its own there)
    assert [e for e in os.listdir(scratch) if not e.startswith("torchinductor")] == []
    assert "val accuracy" in out
    more = run_python([os.path.join(EXAMPLES, "train_torch.py"), "--epochs", "1", "--per-class", "24", "--size",
                       "32", "--checkpoint", ckpt, "--resume"])
    assert re.search(r"^epoch 3: loss", more, re.M), more   # continues at the saved epoch
    # Under torchrun's RANK/WORLD_SIZE the validation loader took this rank's share, padded to a batch
    # of 64, and the score over len(val) read 165%: it scores the whole split, as a fraction of it.
    ranked = run_python([os.path.join(EXAMPLES, "train_torch.py"), "--epochs", "1", "--per-class", "24",
                         "--size", "32"], env={"RANK": "1", "WORLD_SIZE": "2"})
    val = [float(v) for v in re.findall(r"val accuracy ([\d.]+)%", ranked)]
    assert len(val) == 1 and 0 <= val[0] <= 100 and round(val[0] * 20 / 100, 6).is_integer(), ranked


@pytest.mark.parametrize("backend,loop", [("jax", False), ("torch", True)])
def test_train_keras_learns(backend, loop):
    needs("keras", backend)
    out = run_python([os.path.join(EXAMPLES, "train_keras.py"), *SMALL] + (["--loop"] if loop else []),
                     env={"KERAS_BACKEND": backend})
    assert f"on {backend};" in out
    check_learns(out)
    assert "'epoch': 3, 'batch': 0" in out


def test_train_jax_learns():
    needs("jax")
    check_learns(run_python([os.path.join(EXAMPLES, "train_jax.py"), *SMALL]))


def test_train_torch_says_what_a_resume_needs():
    needs("torch")
    import subprocess
    import sys
    from _child import HOME
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "train_torch.py"), "--resume"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr   # once torch.load(None)'s traceback
    assert "error: --resume continues from --checkpoint FILE: give it" in r.stderr


def test_numba_example_is_the_same_for_any_worker_count():
    needs("numba")
    out = run_python([os.path.join(EXAMPLES, "augment_numba.py")])
    sums = re.findall(r"checksum ([\d.]+)", out)
    assert len(sums) == 2 and sums[0] == sums[1], out
    # the timed pass is a whole epoch (the warm-up batch had taken its first 32 of 128 images)
    assert re.findall(r"worker\(s\): (\d+) images", out) == ["128", "128"], out
    assert "(32, 64, 64, 3) float32" in out


def test_multimodal_example_runs():
    out = run_python([os.path.join(EXAMPLES, "multimodal.py")])
    assert re.search(r"^200 records \(image, text, number\): 160 train, 40 test$", out, re.M), out
    assert re.search(r"^5 batches per epoch$", out, re.M), out


@pytest.mark.parametrize("example", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")))
def test_every_example_says_what_it_does_under_help(example):
    """multimodal.py had no --help: asking for it ran the whole example."""
    framework = {"train_torch.py": "torch", "train_jax.py": "jax", "train_keras.py": "keras"}.get(example)
    if framework:   # the example's own framework, imported first (an optional integration)
        pytest.importorskip(framework)
    out = run_python([os.path.join(EXAMPLES, example), "--help"], timeout=60)
    assert out.startswith("usage: ") and "--help" in out, out


def readme_block(heading):
    """The first Python code block after ``heading`` in README.md."""
    with open(os.path.join(PROJECT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


@pytest.mark.parametrize("heading,module", [("## A training loop", "torch"),
                                            ("## Many GPUs, many machines", "torch"),
                                            ("**TensorFlow**.", "tensorflow"),
                                            ("**Your own augmentations, compiled with Numba.**", "numba")])
def test_readme_code_runs_as_written(tmp_path, heading, module):
    needs(module)
    from fastload.synthetic import make_image_folder
    make_image_folder(tmp_path / "data" / "train", classes=3, per_class=8, size=(40, 48))
    script = tmp_path / "snippet.py"
    script.write_text(readme_block(heading) + "\nprint('ran', len(list(loader)))\n")
    out = run_python([str(script)], cwd=str(tmp_path))
    assert "ran 1" in out


def test_readme_multimodal_and_generator_blocks_run_as_written(tmp_path):
    """The two blocks a newcomer pastes with their own files: the multi-modal records (images, a
    JSON Lines file, a CSV file and a vocabulary, as the block names them) and the generator pipeline."""
    import json

    from PIL import Image

    from fastload.synthetic import make_image_folder, photo_like
    make_image_folder(tmp_path / "data" / "train", classes=3, per_class=8, size=(40, 48))
    (tmp_path / "data" / "images").mkdir()
    for i in range(10):
        Image.fromarray(photo_like(40, 48, seed=i)).save(tmp_path / "data" / "images" / f"{i:03d}.jpg")
    (tmp_path / "data" / "texts.jsonl").write_text("".join(json.dumps({"text": f"a photo of thing {i}"}) + "\n"
                                                           for i in range(10)))
    (tmp_path / "data" / "numeric.csv").write_text("a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(10)))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "a", "photo", "of", "thing"]))
    script = tmp_path / "multimodal.py"
    script.write_text(readme_block("## Multi-modal records") + "\nprint('keys', sorted(batch))\n")
    out = run_python([str(script)], cwd=str(tmp_path))
    assert "keys ['image', 'number', 'text', 'text_length', 'text_mask']" in out
    script = tmp_path / "pipeline.py"
    script.write_text(readme_block("## Generator pipelines") + "\nprint('shape', x.shape, y.shape)\n")
    out = run_python([str(script)], cwd=str(tmp_path))
    assert "shape (24, 224, 224, 3) (24, 3)" in out and "consumer" in out   # 24 images: one batch, then stats
