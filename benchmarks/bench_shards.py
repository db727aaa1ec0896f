"""The same images as a folder, as tar shards, packed, and as tar shards on a loopback S3 server and on
an HTTP server that answers 25 ms late.

    python benchmarks/bench_shards.py [--n 640] [--small-n 4000] [--repeats 3] [--window 32] [--min-seconds 1]
                                      [--latency 0.025]

Task: RandomResizedCrop + horizontal flip + normalise into float32 NCHW batches
of 64 with 2 worker threads; 224 px on an ImageNet-like set (JPEG q90, ~460x400)
and 64 px on a 64x64 set. The S3 server is moto in server mode in its own
process on 127.0.0.1, read through s3fs with ranged requests (no disk cache)
and ``max_in_flight`` requests outstanding. The far HTTP server is the tests' ranged one in a
process of its own, answering every read ``--latency`` seconds (25 ms) late, as a store some way off.
Targets: tar shards within 10% of the folder; S3 >= 80% of local disk at 224 px.
Timed runs are interleaved across the rows (medians of ``--repeats``); a run is as many whole
epochs as last ``--min-seconds`` together (an epoch of 4,000 64 px images is a tenth of a second:
too short to time alone on a shared machine).
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import fastload as fl  # noqa: E402
from common import MEAN, STD, dataset, header, line  # noqa: E402
from fastload.pack import pack  # noqa: E402

BATCH, SHARDS, BUCKET = 64, 8, "fastload-bench"


def write_tars(folder: fl.ImageFolder, out: str) -> list[str]:
    """WebDataset layout: <key>.jpg + <key>.cls, SHARDS shards in the folder's order."""
    os.makedirs(out, exist_ok=True)
    per = -(-len(folder) // SHARDS)
    paths = []
    for s in range(SHARDS):
        path = os.path.join(out, f"shard-{s:05d}.tar")
        with tarfile.open(path, "w") as tf:
            for i in range(s * per, min((s + 1) * per, len(folder))):
                img, label = folder[i]
                tf.add(img, arcname=f"{i:08d}.jpg")
                data = str(label).encode()
                ti = tarfile.TarInfo(f"{i:08d}.cls")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        paths.append(path)
    return paths


def start_s3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    opts = {"key": "bench", "secret": "bench", "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"}}
    import boto3
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, opts


# The tests' ranged HTTP server (tests/_http.py) in a process of its own, answering every GET late.
_FAR_SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import _http
with _http.serve(sys.argv[2]) as server:
    server.latency = float(sys.argv[3])
    print(server.url, flush=True)
    time.sleep(10 ** 6)
"""


def start_far_http(root: str, latency: float):
    """A server of the files under ``root`` on loopback that answers each read ``latency`` s late, as an
    object store some way off does: (process, its URL)."""
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    proc = subprocess.Popen([sys.executable, "-c", _FAR_SERVER, tests, root, str(latency)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def run(kind: str, n: int, size: int, repeats: int, window: int, tmp: str, s3opts: dict,
        min_seconds: float, far: str, latency: float) -> None:
    folder_path = dataset(kind, n)
    folder = fl.ImageFolder(folder_path)
    tars = write_tars(folder, os.path.join(tmp, f"{kind}-tar"))
    pack(folder, os.path.join(tmp, f"{kind}-packed"), progress=False)
    import s3fs
    fs = s3fs.S3FileSystem(**s3opts)
    for t in tars:
        fs.put_file(t, f"{BUCKET}/{kind}/{os.path.basename(t)}")
    transforms = [fl.RandomResizedCrop(size), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)]

    def epoch(loader):
        return lambda: sum(len(b[0] if isinstance(b, tuple) else b["jpg"]) for b in loader)

    def timed(loader) -> float:
        """images/s over whole epochs that last ``min_seconds`` together."""
        count, t = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t) < min_seconds or not count:
            count += epoch(loader)()
        return count / elapsed

    kw = dict(batch_size=BATCH, shuffle=True, seed=0, workers=2)
    fields = {"jpg": transforms, "cls": "index"}
    s3_urls = f"s3://{BUCKET}/{kind}/*.tar"
    far_urls = [f"{far}/{kind}-tar/{os.path.basename(t)}" for t in tars]
    cache = os.path.join(tmp, f"{kind}-cache")
    stream_kw = dict(kw, shuffle=False)
    sources = [
        ("image folder", fl.Loader(folder, transforms=transforms, **kw)),
        ("tar shards, local", fl.Loader(fl.TarShards(tars), fields=fields, **kw)),
        ("packed, local", fl.Loader(fl.PackedDataset(os.path.join(tmp, f"{kind}-packed")),
                                           transforms=transforms, **kw)),
        ("tar, local, streamed", fl.Loader(fl.TarShards(tars).stream(shuffle_buffer=1000), fields=fields,
                                           **stream_kw)),
        (f"tar, S3 ranged (window {window})",
         fl.Loader(fl.TarShards(s3_urls, storage_options=s3opts, max_in_flight=window), fields=fields, **kw)),
        ("tar, S3 streamed", fl.Loader(fl.TarShards(s3_urls, storage_options=s3opts).stream(shuffle_buffer=1000),
                                       fields=fields, **stream_kw)),
        ("tar, S3 via cache_dir", fl.Loader(fl.TarShards(s3_urls, storage_options=s3opts, cache_dir=cache),
                                            fields=fields, **kw)),
        (f"tar, HTTP {latency * 1000:.0f} ms away, streamed",
         fl.Loader(fl.TarShards(far_urls).stream(shuffle_buffer=1000), fields=fields, **stream_kw)),
    ]
    header(f"{kind}: {len(folder)} images, RandomResizedCrop({size}) + flip + normalise, batch {BATCH}, 2 threads")
    # One warm-up epoch each (the cached source downloads its shards in it), then the
    # timed epochs interleaved, so drifting load on a shared machine hits every row alike.
    runs, first = {name: [] for name, _ in sources}, {}
    for name, loader in sources:
        t = time.perf_counter()
        epoch(loader)()
        first[name] = time.perf_counter() - t
    for _ in range(repeats):
        for name, loader in sources:
            runs[name].append(timed(loader))
    rates = {name: statistics.median(r) for name, r in runs.items()}
    for name, _ in sources:
        extra = f"   first epoch {len(folder) / first[name]:.0f} img/s (downloads)" if "cache" in name else ""
        print(line(name, rates[name], runs[name], extra))
    base, tar = rates["image folder"], rates["tar shards, local"]
    print(f"  ratios: tar/folder = {tar / base:.2f} (target >= 0.90); packed/folder = "
          f"{rates['packed, local'] / base:.2f}; " + "; ".join(
              f"{name.split(', ', 1)[1]}/local tar = {rates[name] / tar:.2f}" for name, _ in sources
              if "S3" in name or "HTTP" in name) + ("  (S3 target >= 0.80)" if size == 224 else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=640)
    ap.add_argument("--small-n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--latency", type=float, default=0.025, help="seconds the far HTTP server waits to answer")
    args = ap.parse_args()
    proc, opts = start_s3()
    with tempfile.TemporaryDirectory(prefix="fastload-bench-shards-") as tmp:
        server, far = start_far_http(tmp, args.latency)
        try:
            common = (args.repeats, args.window, tmp, opts, args.min_seconds, far, args.latency)
            run("imagenet", args.n, 224, *common)
            if args.small_n:
                run("small", args.small_n, 64, *common)
        finally:
            for p in (proc, server):
                p.terminate()
                p.wait()


if __name__ == "__main__":
    main()
