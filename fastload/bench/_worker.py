"""One contender, one task, in its own process: time the epochs, print one JSON line.

Run as a plain script (``python _worker.py SPEC``) by whichever interpreter the
contender needs, the suite's own or a contender's virtual environment, so it
imports nothing from fastload at module level: only the standard library and
NumPy, then the contender's packages inside its builder.

SPEC is JSON: ``contender``, ``task`` (``dataset``, ``path``, ``transform``:
"rrc" or "resize" or "multimodal", ``size``, ``batch``), ``files`` (a JSON file
of the ``[path, label]`` pairs that fastload.ImageFolder lists, see
:func:`folder_files`), ``workers``,
``runs``, ``max_images`` (0: all), ``cache`` (a folder for converted data
such as FFCV's .beton). Before each timed epoch the worker prints a turn line
and waits for ``go`` on stdin (:func:`wait_turn`). The answer is one line
``{"ok": true, ...}`` with the images/s of each timed epoch (after one warm-up
epoch), the time from building the loader to holding its first batch, and the
CPU seconds the process tree spent per image in the timed epochs; or
``{"ok": false, "reason": ...}``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
import traceback

import numpy as np

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


TURN = "@@fastload-bench-turn"   # printed when ready for the next timed epoch
ANSWER = "@@fastload-bench "     # begins the line with the JSON answer


class NotApplicable(Exception):
    """This contender has no way to run this task (said in the results, with the reason)."""


# ------------------------------------------------------------------ measuring

def _proc_cpu(pid: str) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[1])


def tree_cpu_seconds() -> float:
    """User + system CPU of this process and its live descendants (DataLoader workers).

    This process's own share comes from ``time.process_time`` (nanoseconds): ``os.times`` counts
    in clock ticks (10 ms), which rounds a tiny timed run down to nothing."""
    t = os.times()
    total = time.process_time() + t.children_user + t.children_system
    try:
        procs = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    procs[pid] = _proc_cpu(pid)
                except (OSError, IndexError, ValueError):
                    pass
    except OSError:
        return total
    children, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {int(p) for p, (_, ppid) in procs.items() if ppid in frontier and int(p) not in children}
        children |= frontier
    return total + sum(procs[str(p)][0] for p in children if str(p) in procs)


def folder_files(spec) -> list[tuple[str, int]]:
    """(path, label) of the task's folder, exactly as fastload.ImageFolder lists it: the files every
    contender reads. The harness writes the list to ``spec["files"]`` (a contender's environment need
    not import fastload); a spec without one (made by hand) asks ImageFolder here."""
    if spec.get("files"):
        with open(spec["files"]) as f:
            return [(path, label) for path, label in json.load(f)]
    import fastload as fl
    return [(path, int(label)) for path, label in fl.ImageFolder(spec["task"]["path"])]


def subset(n, max_images):
    """Indices of ``max_images`` of ``n`` files picked by a fixed shuffle (all when 0), in folder
    order, so every contender capped at that many sees the same files."""
    if not max_images or max_images >= n:
        return list(range(n))
    order = list(range(n))
    random.Random(0).shuffle(order)
    return sorted(order[:max_images])


# ------------------------------------------------------------------ the PIL reference work

def rrc_params(w, h, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, in plain Python."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    return 0, 0, w, h


def pil_sample(path, transform, size, rng):
    """Open, convert, crop-and-resize (or resize), flip: what a typical PIL pipeline does per image."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        if transform == "rrc":
            x, y, cw, ch = rrc_params(im.width, im.height, rng)
            im = im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            im = im.resize((size, size), Image.BILINEAR)
        return np.array(im)   # a writable copy, as torchvision's ToTensor makes


# ------------------------------------------------------------------ contenders
# Each builder returns a function that starts an epoch and returns an iterator of
# batches whose first element has len() = the number of samples.

def build_fastload(files, task, workers, spec):
    import fastload as fl
    if task["transform"] == "multimodal":
        return _fastload_multimodal(task, workers)
    loader = fl.Loader(_fastload_images(task, spec), batch_size=task["batch"], shuffle=True, seed=0,
                       workers=max(1, workers), transforms=fastload_transforms(task), dtype="float32", layout="NCHW")
    return lambda: iter(loader)


def file_stamp(path: str):
    """(size, modification time) of a file, or None when it cannot be stat'ed: what tells it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _cache_key(task, files, *more) -> str:
    """The name part of a file the suite derives from ``files`` (a pack, shards, a .beton): the folder,
    the files, and each file's size and modification time, so images replaced under the same names
    are packed anew, not read from the old ones."""
    listing = [(path, label, file_stamp(path)) for path, label in files]
    return hashlib.sha1(repr((task["path"], listing, *more)).encode()).hexdigest()[:12]


def build_fastload_packed(files, task, workers, spec):
    """fastload on its own shard format (``fastload pack``, the files' bytes unchanged), as FFCV
    reads its .beton: page-aligned shards, memory-mapped, no file opened per image."""
    import fastload as fl
    from fastload.pack import pack
    source = _fastload_images(task, spec)
    key = _cache_key(task, [source[i] for i in range(len(source))])
    out = os.path.join(spec["cache"], f"{task['dataset']}-{len(source)}-{key}.packed")
    if not os.path.exists(os.path.join(out, "meta.json")):
        pack(source, out, workers=max(1, workers), progress=False)   # resumes a run that stopped
    loader = fl.Loader(fl.PackedDataset(out), batch_size=task["batch"], shuffle=True, seed=0,
                       workers=max(1, workers), transforms=fastload_transforms(task), dtype="float32", layout="NCHW")
    return lambda: iter(loader)


def _fastload_images(task, spec):
    """The task's folder as the user has it (ImageFolder), read on the files the harness lists (less
    those no decoder reads), and its fixed subset of them for a capped run."""
    import fastload as fl
    source = fl.ImageFolder(task["path"])
    files = folder_files(spec)
    if len(files) != len(source):   # files left out as unreadable: the same files as every contender
        where = {path: i for i, path in enumerate(source.paths)}
        source = fl.Subset(source, [where[path] for path, _ in files])
    indices = subset(len(source), spec.get("max_images", 0))
    return source if len(indices) == len(source) else fl.Subset(source, indices)


def fastload_transforms(task):
    """The task's transforms in fastload (the suite's decode limits use them too)."""
    import fastload as fl
    size = task["size"]
    if task["transform"] == "rrc":
        return [fl.RandomResizedCrop(size), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)]
    return [fl.Resize((size, size)), fl.Normalize(MEAN, STD)]


def _fastload_multimodal(task, workers):
    import fastload as fl
    root = task["path"]
    with open(os.path.join(root, "vocab.txt")) as f:
        vocab = f.read().split()
    records = fl.zip(image=fl.ImageFiles(os.path.join(root, "images")),
                     text=fl.JSONRecords(os.path.join(root, "texts.jsonl"), field="text"),
                     number=fl.CSVRows(os.path.join(root, "numeric.csv")))
    loader = fl.Loader(records, batch_size=task["batch"], workers=max(1, workers), fields={
        "image": [fl.Resize((task["size"], task["size"])), fl.Normalize(MEAN, STD)],
        "text": fl.Tokenize(vocab, max_length=64),
        "number": fl.Standardize(),
    })
    return lambda: ((b["image"],) for b in loader)


def build_generator(files, task, workers, spec):
    """The tutorial's generator: per-image PIL work, list append, np.stack, NumPy normalise; one thread."""
    if task["transform"] == "multimodal":
        return _python_multimodal(task)
    size, batch = task["size"], task["batch"]
    mean = np.array(MEAN, np.float32) * 255
    std = np.array(STD, np.float32) * 255
    epoch = [0]

    def run():
        rng = random.Random(epoch[0])
        epoch[0] += 1
        order = list(range(len(files)))
        rng.shuffle(order)
        for b in range(0, len(order), batch):
            images, labels = [], []
            for i in order[b:b + batch]:
                path, label = files[i]
                images.append(pil_sample(path, task["transform"], size, rng))
                labels.append(label)
            yield ((np.stack(images).astype(np.float32) - mean) / std).transpose(0, 3, 1, 2), np.array(labels)
    return run


def _python_multimodal(task):
    """The tutorial's zip of three Python generators: PIL images, split-and-lookup tokens, csv floats."""
    import csv
    import string

    from PIL import Image
    root, size, batch = task["path"], task["size"], task["batch"]
    with open(os.path.join(root, "vocab.txt")) as f:
        vocab = {w: i + 2 for i, w in enumerate(f.read().split())}
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    table = str.maketrans("", "", string.punctuation)

    def images():
        d = os.path.join(root, "images")
        for name in sorted(os.listdir(d)):
            img = Image.open(os.path.join(d, name)).convert("RGB").resize((size, size), Image.BILINEAR)
            yield ((np.asarray(img, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)

    def texts():
        with open(os.path.join(root, "texts.jsonl")) as f:
            for line in f:
                ids = [vocab.get(w, 1) for w in json.loads(line)["text"].lower().translate(table).split()][:64]
                yield ids + [0] * (64 - len(ids))

    def numbers():
        with open(os.path.join(root, "numeric.csv"), newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for row in reader:
                yield [float(x) for x in row]

    def run():
        xs, ts, ns = [], [], []
        for img, ids, row in zip(images(), texts(), numbers()):
            xs.append(img)
            ts.append(ids)
            ns.append(row)
            if len(xs) == batch:
                yield np.stack(xs), np.array(ts, np.int32), np.array(ns, np.float32)
                xs, ts, ns = [], [], []
        if xs:
            yield np.stack(xs), np.array(ts, np.int32), np.array(ns, np.float32)
    return run


class TorchImages:
    def __init__(self, files, transform, size):
        self.files, self.transform, self.size = files, transform, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        path, label = self.files[i]
        rng = random.Random(i * 7919 + torch.initial_seed())
        x = torch.from_numpy(pil_sample(path, self.transform, self.size, rng)).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return x.sub_(mean).div_(std), label


def build_torch(files, task, workers, spec):
    """torch DataLoader + PIL (or pillow-simd, in its own environment): worker processes."""
    import torch
    torch.set_num_threads(1)   # the DataLoader's parallelism is its worker processes
    loader = torch.utils.data.DataLoader(TorchImages(files, task["transform"], task["size"]),
                                         batch_size=task["batch"], shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    return lambda: iter(loader)


def build_ffcv(files, task, workers, spec):
    other = next((path for path, _ in files if not path.lower().endswith((".jpg", ".jpeg"))), None)
    if other is not None:   # it would re-encode them: not the same files
        kind = os.path.splitext(other)[1].lstrip(".").upper() or "non-JPEG"
        raise NotApplicable(f"FFCV stores JPEG or raw pixels, so it cannot read the same {kind} files")
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter
    from PIL import Image

    key = _cache_key(task, files)
    beton = os.path.join(spec["cache"], f"{task['dataset']}-{len(files)}-{key}.beton")
    if not os.path.exists(beton):
        class Images:   # FFCV re-encodes the decoded pixels at the same quality (90)
            def __len__(self):
                return len(files)

            def __getitem__(self, i):
                return Image.open(files[i][0]).convert("RGB"), files[i][1]
        os.makedirs(spec["cache"], exist_ok=True)
        DatasetWriter(beton + ".part", {"image": RGBImageField(write_mode="jpg", jpeg_quality=90),
                                        "label": IntField()}, num_workers=2).from_indexed_dataset(Images())
        os.replace(beton + ".part", beton)
    size = task["size"]
    mean, std = np.array(MEAN) * 255, np.array(STD) * 255
    if task["transform"] == "rrc":
        image = [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()]
    else:   # FFCV has no plain resize: a centre crop of ratio 1 is the nearest
        image = [CenterCropRGBImageDecoder((size, size), ratio=1.0)]
    image += [NormalizeImage(mean, std, np.float32), ToTensor(), ToTorchImage()]
    loader = Loader(beton, batch_size=task["batch"], num_workers=max(1, workers), order=OrderOption.RANDOM,
                    os_cache=True, drop_last=False, pipelines={"image": image, "label": [IntDecoder(), ToTensor()]})
    return lambda: iter(loader)


def _tar_shards(files, task, spec) -> list[str]:
    """The files' bytes in WebDataset's layout (members ``KEY.<ext>``, one :func:`_member` name for
    every image, and ``KEY.cls``, the label as text), in 8 or more shards so that every worker process
    gets some; made once, with the standard library (neither contender's process imports the
    other's packages to write them)."""
    import io
    import shutil
    import tarfile
    ext = _member(files)
    key = _cache_key(task, files, ext)
    out = os.path.join(spec["cache"], f"{task['dataset']}-{len(files)}-{key}.wds")
    if not os.path.exists(os.path.join(out, "complete")):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        per = -(-len(files) // max(8, 2 * spec["workers"]))
        for s in range(0, len(files), per):
            with tarfile.open(os.path.join(out, f"shard-{s // per:05d}.tar"), "w", format=tarfile.USTAR_FORMAT) as tar:
                for i, (path, label) in enumerate(files[s:s + per], start=s):
                    with open(path, "rb") as f:
                        image = f.read()
                    for name, data in ((f"{i:07d}.{ext}", image), (f"{i:07d}.cls", str(label).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        open(os.path.join(out, "complete"), "w").close()
    return sorted(os.path.join(out, n) for n in os.listdir(out) if n.endswith(".tar"))


def _member(files) -> str:
    """The member name of every image in the shards: the extension the files share (``jpg`` for
    ``.jpeg`` too), else ``img``; each contender reads one name per sample, whatever its format."""
    exts = {os.path.splitext(path)[1].lstrip(".").lower().replace("jpeg", "jpg") for path, _ in files}
    return exts.pop() if len(exts) == 1 else "img"


def build_webdataset(files, task, workers, spec):
    """WebDataset as its documentation sets it up: its tar shards of the same bytes, shard shuffle,
    a shuffle buffer, the same PIL work per sample, batched in a torch DataLoader's workers."""
    import io

    import torch
    import webdataset as wds
    torch.set_num_threads(1)
    urls = _tar_shards(files, task, spec)
    size, transform = task["size"], task["transform"]
    mean = np.array(MEAN, np.float32) * 255
    std = np.array(STD, np.float32) * 255

    def sample(item):
        data, label = item
        x = pil_sample(io.BytesIO(data), transform, size, random.Random())
        return ((x.astype(np.float32) - mean) / std).transpose(2, 0, 1), int(label)

    ds = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False).shuffle(1000)
          .to_tuple(_member(files), "cls").map(sample).batched(task["batch"], partial=True))
    loader = wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return lambda: iter(loader)


def _fastload_on_shards(files, task, workers, spec, stream: bool):
    """fastload on the same WebDataset shards: random access through its shard index, or streamed
    front to back as WebDataset reads them (the shards in a shuffled order, then a shuffle buffer
    of 1000 samples)."""
    import fastload as fl
    urls, ext = _tar_shards(files, task, spec), _member(files)
    if stream:
        source, order = fl.TarShards(urls).stream(shuffle_buffer=1000, seed=0), {}
    else:
        source, order = fl.TarShards(urls, require=(ext, "cls")), {"shuffle": True, "seed": 0}
    loader = fl.Loader(source, batch_size=task["batch"], workers=max(1, workers), **order,
                       fields={ext: fastload_transforms(task), "cls": "index"}, dtype="float32", layout="NCHW")
    return lambda: ((batch[ext], batch["cls"]) for batch in loader)   # named fields: a dict per batch


def build_fastload_tar(files, task, workers, spec):
    return _fastload_on_shards(files, task, workers, spec, stream=False)


def build_fastload_stream(files, task, workers, spec):
    return _fastload_on_shards(files, task, workers, spec, stream=True)


def build_grain(files, task, workers, spec):
    import grain
    size, transform = task["size"], task["transform"]
    mean = np.array(MEAN, np.float32) * 255
    std = np.array(STD, np.float32) * 255

    def load(item, rng):
        path, label = item
        x = pil_sample(path, transform, size, random.Random(int(rng.integers(1 << 62))))
        return ((x.astype(np.float32) - mean) / std).transpose(2, 0, 1), label

    ds = grain.MapDataset.source(files).seed(0).shuffle().random_map(load)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, workers), prefetch_buffer_size=2 * task["batch"]))
    it = it.batch(task["batch"])
    return lambda: iter(it)


def build_spdl(files, task, workers, spec):
    import spdl.io
    from spdl.pipeline import PipelineBuilder
    size, transform, batch = task["size"], task["transform"], task["batch"]
    mean = np.array(MEAN, np.float32).reshape(3, 1, 1) * 255
    std = np.array(STD, np.float32).reshape(3, 1, 1) * 255
    epoch = [0]

    def load(item):
        path, label, seed = item
        rng = random.Random(seed)
        if transform == "rrc":
            packets = spdl.io.demux_image(path)
            w, h = packets.codec.width, packets.codec.height
            x, y, cw, ch = rrc_params(w, h, rng)
            filt = f"crop={cw}:{ch}:{x}:{y},scale={size}:{size}:flags=bilinear"
            if rng.random() < 0.5:
                filt += ",hflip"
        else:
            packets = spdl.io.demux_image(path)
            filt = f"scale={size}:{size}:flags=bilinear"
        frames = spdl.io.decode_packets(packets, filter_desc=filt + ",format=pix_fmts=rgb24")
        return spdl.io.to_numpy(spdl.io.convert_frames(frames)), label

    def collate(items):
        x = np.stack([a for a, _ in items]).astype(np.float32).transpose(0, 3, 1, 2)
        return (x - mean) / std, np.array([c for _, c in items])

    def run():
        order = list(range(len(files)))
        random.Random(epoch[0]).shuffle(order)
        epoch[0] += 1
        src = [(files[i][0], files[i][1], epoch[0] * 1_000_003 + i) for i in order]
        pipeline = (PipelineBuilder().add_source(src).pipe(load, concurrency=max(1, workers))
                    .aggregate(batch).pipe(collate).add_sink(4).build(num_threads=max(1, workers)))
        with pipeline.auto_stop():
            yield from pipeline
    return run


def build_dali(files, task, workers, spec):
    """NVIDIA DALI: JPEG decode on the GPU ("mixed"), resize, flip and normalise there too."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    size = task["size"]

    @pipeline_def(batch_size=task["batch"], num_threads=max(1, workers), device_id=0, seed=0)
    def pipe():
        data, labels = fn.readers.file(files=[p for p, _ in files], labels=[c for _, c in files],
                                       random_shuffle=True, name="reader")
        if task["transform"] == "rrc":
            images = fn.decoders.image_random_crop(data, device="mixed", output_type=types.RGB)
            mirror = fn.random.coin_flip()
        else:
            images = fn.decoders.image(data, device="mixed", output_type=types.RGB)
            mirror = 0
        images = fn.resize(images, resize_x=size, resize_y=size)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mirror=mirror,
                                          mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD])
        return images, labels
    p = pipe()
    p.build()
    it = DALIGenericIterator([p], ["image", "label"], reader_name="reader", auto_reset=True,
                             last_batch_policy=LastBatchPolicy.PARTIAL)
    return lambda: ((b[0]["image"],) for b in it)


BUILDERS = {"fastload": build_fastload, "fastload_packed": build_fastload_packed, "fastload_tar": build_fastload_tar,
            "fastload_stream": build_fastload_stream,
            "generator": build_generator, "torch": build_torch, "webdataset": build_webdataset, "ffcv": build_ffcv,
            "grain": build_grain, "spdl": build_spdl, "dali": build_dali}


def measure(spec) -> dict:
    task = spec["task"]
    files = []
    # fastload lists the folder itself; the others get the harness's list (their dataset).
    if task["transform"] != "multimodal" and spec["builder"] not in ("fastload", "fastload_packed"):
        files = folder_files(spec)
        spec["indices"] = subset(len(files), spec.get("max_images", 0))
        files = [files[i] for i in spec["indices"]]
    t0 = time.perf_counter()
    start_epoch = BUILDERS[spec["builder"]](files, task, spec["workers"], spec)
    it = start_epoch()
    first = next(it, None)
    if first is None:
        raise RuntimeError("the loader gave no batch (its own log says why)")
    first_batch = time.perf_counter() - t0
    n = len(first[0]) + sum(len(b[0]) for b in it)   # the rest of the warm-up epoch
    rates, cpu = [], 0.0
    for _ in range(spec["runs"]):
        wait_turn()
        cpu0, t = tree_cpu_seconds(), time.perf_counter()
        count = sum(len(b[0]) for b in start_epoch())
        rates.append(count / (time.perf_counter() - t))
        cpu += tree_cpu_seconds() - cpu0
    import resource   # the parent samples the whole tree's RSS; this is its fallback (no psutil)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"ok": True, "images": n, "rates": rates, "first_batch_s": first_batch,
            "cpu_s_per_image": cpu / max(1, n * spec["runs"]), "peak_rss_mb": rss / 1024}


def wait_turn() -> None:
    """Say this process is ready for a timed epoch and wait for the harness's go (a line on
    stdin): the harness takes the contenders' epochs in turns, so a drifting load on a shared
    machine falls on every contender alike."""
    print("\n" + TURN, flush=True)
    if sys.stdin.readline().strip() != "go":
        raise RuntimeError("the harness stopped before the timed epochs")


def versions() -> dict:
    """The installed versions of the packages this process imported (PIL: which Pillow the
    DataLoader's workers import; pillow-simd's versions end in .postN)."""
    from importlib import metadata
    if "torch" in sys.modules:
        import PIL  # noqa: F401
    dists = {"fastload": "fastload", "PIL": "PIL", "torch": "torch", "ffcv": "ffcv", "grain": "grain",
             "spdl": "spdl", "nvidia.dali": "nvidia-dali-cuda120", "numpy": "numpy"}
    out = {}
    for module, dist in dists.items():
        if module in sys.modules:
            try:
                out[dist] = sys.modules[module].__version__ if module == "PIL" else metadata.version(dist)
            except Exception:
                out[dist] = str(getattr(sys.modules[module], "__version__", "?"))
    return out


def failure_reason(e: BaseException) -> str:
    """One line saying why a contender failed. An error carried out of a worker process (torch's
    DataLoader re-raises it as "Caught X in DataLoader worker process 0. Original Traceback ...") has
    the cause on its last line, not its first."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[-1] if len(lines) > 1 else f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text[:400]


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        result = measure(spec)
    except NotApplicable as e:
        result = {"ok": False, "status": "n/a", "reason": str(e)}
    except ImportError as e:
        result = {"ok": False, "status": "not installed", "reason": f"{type(e).__name__}: {e}"}
    except Exception as e:   # reported in the results, never dropped
        tb = traceback.format_exc().strip().splitlines()
        result = {"ok": False, "status": "failed", "reason": failure_reason(e), "traceback": tb[-6:]}
    result["versions"] = versions()
    sys.stdout.flush()
    print("\n" + ANSWER + json.dumps(result), flush=True)
    os._exit(0)   # skip interpreter teardown: some loaders' threads and workers end slowly


if __name__ == "__main__":
    main()
