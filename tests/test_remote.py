"""Shards behind URLs, against real servers started here on loopback: an S3-compatible one
(moto in server mode, through s3fs) and an HTTP server that honours byte ranges, lists
directories, counts requests and fails or stalls on demand (500s, 404s, slow answers).
Records and batches must equal the local ones."""
import io
import logging
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import fastload as fl
from fastload.pack import pack
import _http

pytest.importorskip("fsspec")   # URLs are read through fsspec (fastload[remote]; .ci/run installs it)
from test_shards import write_shards

BUCKET = "fastload-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback; yields the storage options that reach it (skipped without moto and
    s3fs, which .ci/run installs)."""
    pytest.importorskip("s3fs")
    ThreadedMotoServer = pytest.importorskip("moto.server").ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    opts = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}",
            "client_kwargs": {"region_name": "us-east-1"}, "skip_instance_cache": True}
    import boto3
    boto3.client("s3", endpoint_url=opts["endpoint_url"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield opts
    server.stop()


def upload(opts, local_dir, prefix):
    import s3fs
    fs = s3fs.S3FileSystem(**opts)
    for name in sorted(os.listdir(local_dir)):
        if not name.endswith(".idx.json"):
            fs.put_file(os.path.join(local_dir, name), f"{BUCKET}/{prefix}/{name}")
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture
def http(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with _http.serve(root) as server:
        yield server


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory):
    from fastload.synthetic import make_image_folder
    root = tmp_path_factory.mktemp("remote")
    folder = make_image_folder(os.path.join(root, "train"), classes=3, per_class=8, size=(90, 110),
                               jitter=0.3, seed=3)
    return folder, write_shards(folder, os.path.join(root, "shards"), extra=False)


def records(src):
    return [{k: v for k, v in src[i].items() if k != "__url__"} for i in range(len(src))]


FIELDS = {"jpg": [fl.RandomResizedCrop(48), fl.RandomHorizontalFlip()], "cls": "index"}


def assert_same_batches(a, b):
    n = 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["jpg"], y["jpg"])
        np.testing.assert_array_equal(x["cls"], y["cls"])
        n += 1
    assert n == len(a) == len(b)


def test_tar_shards_from_s3_equal_local(s3, local_shards, tmp_path):
    _, shards = local_shards
    base = upload(s3, os.path.dirname(shards[0]), "tars")
    remote = fl.TarShards(base + "/shard-{000000..000002}.tar", storage_options=s3, cache_dir=tmp_path / "c")
    local = fl.TarShards(shards)
    assert records(remote) == records(local)
    assert remote.record_id(3) == f"{base}/shard-000000.tar:{local[3]['__key__']}"
    globbed = fl.TarShards(base + "/*.tar", storage_options=s3)
    assert globbed.urls == remote.urls
    kw = dict(batch_size=8, shuffle=True, seed=2, workers=2, fields=FIELDS)
    assert_same_batches(fl.Loader(globbed, **kw), fl.Loader(local, **kw))   # ranged reads
    assert_same_batches(fl.Loader(remote, **kw), fl.Loader(local, **kw))    # through the disk cache
    assert len([f for f in os.listdir(tmp_path / "c") if f.endswith(".tar")]) == 3
    assert [r["__key__"] for r in remote.stream()] == [r["__key__"] for r in local]


def test_packed_from_s3_equals_local(s3, local_shards, tmp_path):
    folder, _ = local_shards
    pack(fl.ImageFolder(folder), tmp_path / "p", shard_size=64 * 1024, progress=False)
    base = upload(s3, tmp_path / "p", "packed")
    local = fl.PackedDataset(tmp_path / "p")
    for kw in ({}, {"cache_dir": tmp_path / "c"}):
        remote = fl.PackedDataset(base, storage_options=s3, **kw)
        assert len(remote) == len(local) and remote.classes == local.classes
        assert [remote[i] for i in range(len(remote))] == [local[i] for i in range(len(local))]
        args = dict(batch_size=8, shuffle=True, seed=1, transforms=[fl.RandomResizedCrop(40)])
        for (a, la), (b, lb) in zip(fl.Loader(remote, **args), fl.Loader(local, **args)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)


def test_missing_credentials_fail_at_once_naming_the_url(s3, local_shards, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opts = {k: v for k, v in s3.items() if k not in ("key", "secret")}
    t0 = time.perf_counter()
    with pytest.raises(OSError, match=rf"s3://{BUCKET}/tars/shard-000000\.tar: NoCredentialsError"):
        len(fl.TarShards(f"s3://{BUCKET}/tars/shard-000000.tar", storage_options=opts, retries=5, ))
    assert time.perf_counter() - t0 < 5   # not retried: missing credentials are not transient


def test_a_sample_of_empty_members_reads_from_s3_as_locally(s3, tmp_path):
    """An empty member is an empty byte range: s3fs sent "bytes=S-(S-1)", the server answered with
    the whole object, and the read failed as if the server could not do ranges."""
    path = tmp_path / "empty.tar"
    with wds.TarWriter(str(path)) as w:
        for key, text in (("a", b"hello"), ("b", b""), ("c", b"world")):
            w.write({"__key__": key, "txt": text})
    url = upload(s3, tmp_path, "empty")
    local, remote = fl.TarShards(str(path)), fl.TarShards(url + "/empty.tar", storage_options=s3)
    with tarfile.open(path) as t:   # what the writer wrote, by the standard library
        want = [(m.name.split(".")[0], t.extractfile(m).read().decode()) for m in t.getmembers()]
    assert [(r["__key__"], r["txt"]) for r in local] == [(r["__key__"], r["txt"]) for r in remote] == want \
        == [("a", "hello"), ("b", ""), ("c", "world")]


def test_a_packed_dataset_behind_refused_credentials_says_so_not_that_it_is_unfinished(s3, tmp_path):
    port = free_port()   # a moto that checks credentials (read when moto is imported: its own process)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "moto did not start"
                time.sleep(0.2)
        opts = {**s3, "endpoint_url": f"http://127.0.0.1:{port}", "key": "bad", "secret": "bad"}
        with pytest.raises(OSError) as e:
            fl.PackedDataset(f"s3://{BUCKET}/packed", storage_options=opts, retries=0)
        assert not isinstance(e.value, FileNotFoundError) and "not a finished packed dataset" not in str(e.value)
        assert f"s3://{BUCKET}/packed/meta.json" in str(e.value)
    finally:
        server.terminate()
        server.wait(30)
    with pytest.raises(FileNotFoundError, match="is not a finished packed dataset"):   # really not there
        fl.PackedDataset(f"s3://{BUCKET}/nothing-here", storage_options=s3, retries=0)


def serve(http, shards):
    for s in shards:
        shutil.copy(s, http.root)
    return [f"{http.url}/{os.path.basename(s)}" for s in shards]


def test_http_listing_once_ranged_reads_and_retries(http, local_shards):
    _, shards = local_shards
    urls = serve(http, shards)
    for u in urls:   # every shard's first read answers 500 twice
        http.fail["/" + u.rsplit("/", 1)[1]] = 2
    ts = fl.TarShards(urls, retries=3, backoff=0.01)
    len(ts)
    gets = [r for r in http.requests if r[0] == "GET"]
    assert sum(1 for _, p, _ in gets if p == "/") == 1   # the directory, listed once for the three shards
    shard_gets = [r for r in gets if r[1].endswith(".tar")]
    assert len(shard_gets) == 3 * 3 and all(rng for _, _, rng in shard_gets)   # 2 failures + 1 ranged read each
    del http.requests[:]
    assert records(ts) == records(fl.TarShards(shards))
    assert len(http.requests) == len(ts) and all(m == "GET" and rng for m, _, rng in http.requests)


def test_http_500_past_the_retries_and_404(http, local_shards):
    _, shards = local_shards
    urls = serve(http, shards)
    ts = fl.TarShards(urls, retries=1, backoff=0.01)
    len(ts)
    http.fail["/shard-000001.tar"] = 10 ** 6   # the second shard goes down after indexing
    loader = fl.Loader(ts, batch_size=8, fields={"jpg": [fl.CenterCrop(32)], "cls": "index"})
    with pytest.raises(fl.RecordError, match=rf"{re.escape(urls[1])}:.*HTTP 500.*after 2 tries"):
        list(loader)
    del http.requests[:]
    loader = fl.Loader(ts, batch_size=8, fields={"jpg": [fl.CenterCrop(32)], "cls": "index"}, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        labels = np.concatenate([b["cls"] for b in loader])
    assert loader.stats()["skipped"] == 9 and len(labels) == 15
    # the dead shard's retries were paid once, not once for each of its nine samples
    assert sum(1 for _, p, _ in http.requests if p == "/shard-000001.tar") <= 2
    np.testing.assert_array_equal(labels, [r["cls"] for i, r in enumerate(records(fl.TarShards(shards)))
                                           if not 9 <= i < 18])
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(http.url)}/missing\.tar.*FileNotFoundError"):
        len(fl.TarShards(f"{http.url}/missing.tar", backoff=0.01))


def test_a_read_that_stalls_fails_in_read_timeout_naming_the_url(http, local_shards):
    """A server that sends half a body and then nothing, the connection left open, held a read for
    aiohttp's 300 s a try (20 minutes with the retries). It fails after read_timeout (retried as
    a timeout), naming the URL, indexed and streamed, and the skip policy goes on past it."""
    _, shards = local_shards
    urls = serve(http, shards)
    ts = fl.TarShards(urls, retries=1, backoff=0.01, read_timeout=1)
    n = len(ts)
    fields = {"jpg": [fl.CenterCrop(32)], "cls": "index"}
    http.stall["/shard-000001.tar"] = 10 ** 6   # the second shard stalls after indexing
    t = time.monotonic()
    with pytest.raises(fl.RecordError, match=rf"{re.escape(urls[1])}:.*Timeout.*after 2 tries"):
        list(fl.Loader(ts, batch_size=8, fields=fields))
    loader = fl.Loader(fl.TarShards(urls, retries=1, backoff=0.01, read_timeout=1).stream(), batch_size=8,
                       fields=fields, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        got = sum(len(b["cls"]) for b in loader)
    assert got == n - 9 and time.monotonic() - t < 30
    assert fl.TarShards(urls).storage.read_timeout == 30 and ts.storage.read_timeout == 1
    with pytest.raises(ValueError, match="read_timeout"):
        fl.TarShards(urls, read_timeout=0)


def test_disk_cache_evicts_least_recently_used(http, local_shards, tmp_path):
    _, shards = local_shards
    urls = serve(http, shards)
    sizes = [os.path.getsize(s) for s in shards]
    cache = tmp_path / "cache"
    ts = fl.TarShards(urls, cache_dir=cache, cache_limit=sizes[0] + sizes[1] + sizes[2] // 2,
                      max_in_flight=1)   # one request at a time: shards are indexed in order

    def cached():
        return sorted(f.split("-", 1)[1] for f in os.listdir(cache) if f.endswith(".tar"))

    def downloads():
        return [p for m, p, rng in http.requests if m == "GET" and p.endswith(".tar") and rng is None]

    len(ts)   # indexing reads shards 0, 1, 2 in turn through the cache: 0 is evicted
    assert len(downloads()) == 3 and cached() == ["shard-000001.tar", "shard-000002.tar"]
    assert sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache) if f.endswith(".tar")) \
        <= ts.storage.cache.limit
    ts[10]    # shard 1: a hit, now most recent
    assert len(downloads()) == 3
    ts[0]     # shard 0 again: downloaded, evicting shard 2 (least recent)
    assert downloads()[-1] == "/shard-000000.tar" and cached() == ["shard-000000.tar", "shard-000001.tar"]
    assert records(ts) == records(fl.TarShards(shards))
    with pytest.raises(OSError, match=rf"{re.escape(urls[0])}: the shard is {sizes[0]} bytes, larger than "
                                      rf"the cache limit of 1000 bytes"):
        len(fl.TarShards(urls[0], cache_dir=tmp_path / "small", cache_limit=1000))


def test_disk_cache_stays_within_its_limit_under_concurrent_downloads(tmp_path):
    """Threads fetching different files at once: a download starts only once it fits beside those
    under way (waiting for the oldest to finish, then evicting it), so the directory never holds
    more than the limit, partial downloads included."""
    from concurrent.futures import ThreadPoolExecutor

    from fastload.sources.remote import DiskCache
    cache = DiskCache(tmp_path / "c", limit=400)
    seen, lock = [], threading.Lock()

    def on_disk():   # cached files, partial ones included (not the small hidden records beside them)
        total = 0
        for f in os.listdir(cache.root):
            try:
                total += 0 if f.startswith(".") else os.path.getsize(os.path.join(cache.root, f))
            except FileNotFoundError:   # evicted, or renamed into place, since the listing
                pass
        return total

    def fetch(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 160)
        with lock:
            seen.append(on_disk())
        time.sleep(0.05)   # a slow server's last bytes: the others start meanwhile, if they may
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: cache.get(f"s3://bucket/shard-{i}.tar", 160, fetch), range(8)))
    assert len(set(paths)) == 8 and len(seen) == 8
    assert max(seen) <= 400 and on_disk() <= 400 and cache.nbytes() <= 400, (seen, on_disk())


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_other_fsspec_urls(scheme, local_shards):
    import fsspec
    _, shards = local_shards
    if scheme == "file":
        urls = ["file://" + s for s in shards]
    else:
        fs = fsspec.filesystem("memory")
        urls = []
        for s in shards:
            with open(s, "rb") as f:
                fs.pipe_file(f"/fastload-test/{os.path.basename(s)}", f.read())
            urls.append(f"memory://fastload-test/{os.path.basename(s)}")
    assert records(fl.TarShards(urls)) == records(fl.TarShards(shards))


def test_find_lists_a_tree_once(s3, local_shards):
    """What an image folder behind a URL needs: one recursive listing, then whole-file reads."""
    from fastload.sources.remote import Storage
    folder, _ = local_shards
    import s3fs
    fs = s3fs.S3FileSystem(**s3)
    fs.put(folder, f"{BUCKET}/folder", recursive=True)
    fs.pipe_file(f"{BUCKET}/folder/class_000/.hidden.jpg", b"x")
    fs.pipe_file(f"{BUCKET}/folder/class_000/notes.txt", b"x")
    local = fl.ImageFolder(folder)
    storage = Storage(storage_options=s3)
    urls = storage.find(f"s3://{BUCKET}/folder", (".jpg",))
    assert [u.split("/folder/", 1)[1] for u in urls] == [os.path.relpath(p, folder) for p in local.paths]
    data = storage.read_ranges([(u, 0, storage.size(u)) for u in urls])
    assert data == [pathlib.Path(p).read_bytes() for p in local.paths]


# ------------------------------------------------------------ image folders behind URLs

def upload_tree(opts, local_root, prefix):
    import s3fs
    fs = s3fs.S3FileSystem(**opts)
    for dirpath, _, files in os.walk(local_root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), local_root)
            fs.put_file(os.path.join(dirpath, name), f"{BUCKET}/{prefix}/{rel}")
    return f"s3://{BUCKET}/{prefix}"


def test_image_folder_behind_s3_equals_the_local_folder(s3, local_shards):
    folder, _ = local_shards
    url = upload_tree(s3, folder, "folder")
    remote = fl.ImageFolder(url, storage_options=s3)
    local = fl.ImageFolder(folder)
    assert remote.classes == local.classes and len(remote) == len(local)
    assert [u[len(url) + 1:] for u in remote.paths] == [os.path.relpath(p, folder) for p in local.paths]
    np.testing.assert_array_equal(remote.labels(), local.labels())
    kw = dict(batch_size=5, shuffle=True, seed=2, transforms=[fl.RandomResizedCrop(32), fl.RandomHorizontalFlip()])
    got = [(x.copy(), y.copy()) for x, y in fl.Loader(remote, **kw)]
    want = [(x.copy(), y.copy()) for x, y in fl.Loader(local, **kw)]
    assert len(got) == len(want)
    for (x, y), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, wy)
    files = fl.ImageFiles(url + "/" + local.classes[0], storage_options=s3)
    assert len(files) == int((local.labels() == 0).sum()) and isinstance(files[0], bytes)


def test_image_files_over_http_retry_then_fail_by_policy(http, local_shards):
    folder, _ = local_shards
    paths = fl.ImageFolder(folder).paths[:6]
    for p in paths:
        shutil.copy(p, os.path.join(http.root, os.path.basename(p)))
    urls = [f"{http.url}/{os.path.basename(p)}" for p in paths]
    http.fail["/" + os.path.basename(paths[1])] = 1            # one transient 500: retried
    os.remove(os.path.join(http.root, os.path.basename(paths[4])))   # a 404: fails that record
    src = fl.ImageFiles(urls, retries=2, backoff=0.01)
    kw = dict(batch_size=6, transforms=[fl.Resize((24, 24))], dtype="uint8")
    with pytest.raises(fl.RecordError, match=re.escape(urls[4])):
        list(fl.Loader(src, **kw))
    with pytest.warns(RuntimeWarning, match="skipping"):
        loader = fl.Loader(fl.ImageFiles(urls, retries=2, backoff=0.01), on_error="skip", **kw)
        (x,) = list(loader)
    local = next(iter(fl.Loader(fl.ImageFiles([p for i, p in enumerate(paths) if i != 4]), **kw)))
    np.testing.assert_array_equal(x, local)
    assert [r for r, _ in loader.stats()["failures"]] == [urls[4]]


def test_json_and_csv_sources_behind_urls_equal_the_local_files(s3, http, tmp_path):
    rows = [{"id": i, "text": f"caption {i}", "v": [i, i / 2]} for i in range(40)]
    (tmp_path / "meta.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    (tmp_path / "num.csv").write_text("a,b\n" + "".join(f"{i},{i * 3}\n" for i in range(40)))
    for name in ("meta.jsonl", "num.csv"):
        shutil.copy(tmp_path / name, os.path.join(http.root, name))
    import s3fs
    fs = s3fs.S3FileSystem(**s3)
    fs.put_file(str(tmp_path / "meta.jsonl"), f"{BUCKET}/text/meta.jsonl")
    local_json, local_csv = fl.JSONRecords(str(tmp_path / "meta.jsonl")), fl.CSVRows(str(tmp_path / "num.csv"))
    for src in (fl.JSONRecords(f"{http.url}/meta.jsonl"),
                fl.JSONRecords(f"s3://{BUCKET}/text/meta.jsonl", storage_options=s3, cache_dir=str(tmp_path / "c"))):
        assert len(src) == 40 and [src[i] for i in range(40)] == [local_json[i] for i in range(40)]
        assert src.record_id(3).startswith(src.path) and "://" in src.path      # errors name the URL
    csv = fl.CSVRows(f"{http.url}/num.csv")
    np.testing.assert_array_equal(np.stack([csv[i] for i in range(40)]), np.stack([local_csv[i] for i in range(40)]))
    with pytest.raises(OSError, match="missing.jsonl"):
        fl.JSONRecords(f"{http.url}/missing.jsonl")


def test_a_json_source_keeps_reading_its_cached_copy_once_evicted(http, tmp_path):
    """JSONRecords behind a URL read its copy in the disk cache by path, opened at the first record:
    a later download into the same cache (under cache_limit) could evict the copy first, and every
    read then failed (FileNotFoundError). The copy is now held open from the start; a pickled source
    (a worker process) that finds it gone fetches it again."""
    import pickle
    rows = [{"id": i, "text": f"caption {i}"} for i in range(40)]
    meta = "".join(__import__("json").dumps(r) + "\n" for r in rows)
    www = pathlib.Path(http.root)
    (www / "meta.jsonl").write_text(meta)
    (www / "big.jsonl").write_text('{"pad": "' + "x" * (2 * len(meta)) + '"}\n')
    kw = dict(cache_dir=str(tmp_path / "c"), cache_limit=3 * len(meta))   # room for one of them, not both
    src = fl.JSONRecords(f"{http.url}/meta.jsonl", **kw)
    fl.JSONRecords(f"{http.url}/big.jsonl", **kw)
    assert not [n for n in os.listdir(tmp_path / "c") if "meta" in n]   # evicted
    assert [src[i] for i in range(40)] == rows
    copy = pickle.loads(pickle.dumps(src))
    assert [copy[i] for i in range(40)] == rows


@pytest.mark.parametrize("way", ["compiled", "os.pread", "seek-and-read"])
def test_local_byte_ranges_from_many_threads(tmp_path, monkeypatch, way):
    """Byte ranges of a local file, read concurrently, one at a time and in batches: through
    the compiled batch of preads, through os.pread, and with the seek-and-read under a lock
    that Windows takes (no pread there): the same bytes, and the same errors."""
    from concurrent.futures import ThreadPoolExecutor

    from fastload._kernels import _pread
    from fastload.sources import _files
    from fastload.sources.remote import Storage, StorageError
    if way != "seek-and-read" and not hasattr(os, "pread"):
        pytest.skip("no pread on this OS")
    assert _pread.AVAILABLE == hasattr(os, "pread")
    monkeypatch.setattr(_pread, "AVAILABLE", way == "compiled")
    monkeypatch.setattr(_files, "pread", _files.pread_positional if way == "os.pread" else _files.pread_seek)
    data = np.random.default_rng(4).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    rng = np.random.default_rng(5)
    ranges = [(int(a), int(a) + int(n)) for a, n in zip(rng.integers(0, len(data) - 4096, 2000),
                                                         rng.integers(0, 4096, 2000))]
    storage = Storage()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: storage.read(str(path), *r), ranges))
        batches = list(pool.map(lambda i: storage.read_ranges([(str(path), a, b) for a, b in ranges[i:i + 64]]),
                                range(0, len(ranges), 64)))
    want = [data[a:b] for a, b in ranges]
    assert got == want and [d for batch in batches for d in batch] == want
    # a batch keeps its good ranges around the bad ones: past the end, a file that is missing
    missing = str(tmp_path / "missing.bin")
    mixed = storage.read_ranges([(str(path), 5, 10), (str(path), len(data) - 3, len(data) + 5), (missing, 0, 4),
                                 (str(path), len(data) + 7, len(data) + 9), (str(path), 0, 0)])
    assert mixed[0] == data[5:10] and mixed[4] == b""
    assert isinstance(mixed[1], StorageError) and "file ends at byte 1048576, before 1048581" in str(mixed[1])
    assert isinstance(mixed[2], StorageError) and "missing.bin" in str(mixed[2]) and "FileNotFoundError" in str(mixed[2])
    assert isinstance(mixed[3], StorageError) and "bytes 1048583..1048585 are past the end" in str(mixed[3])
    with pytest.raises(StorageError, match=r"blob.bin: file ends at byte 1048576, before 1048586"):
        storage.read(str(path), len(data) - 10, len(data) + 10)


# ------------------------------------------------------------ failures asking a size

def test_http_500_or_timeout_asking_a_size_is_retried(http, local_shards):
    """fsspec reports any failure of the HEAD (and GET) that ask a file's size as FileNotFoundError:
    a 500 or a timeout there is retried as any other read is, and in the end named as what it is."""
    import aiohttp
    _, shards = local_shards
    (url,) = serve(http, shards[:1])
    name = "/" + url.rsplit("/", 1)[1]
    http.fail_head[name], http.fail[name] = 2, 1   # HEAD 500, GET 500; HEAD 500, GET answers
    ts = fl.TarShards(url, retries=3, backoff=0.01)
    assert records(ts) == records(fl.TarShards(shards[:1]))
    http.fail_head[name] = http.fail[name] = 10 ** 6
    with pytest.raises(OSError) as err:
        len(fl.TarShards(url, retries=1, backoff=0.01))
    assert not isinstance(err.value, FileNotFoundError)
    assert f"{url}: HTTP 500: injected failure (after 2 tries)" in str(err.value)
    http.fail_head[name] = http.fail[name] = 0
    http.slow[name], http.slow_s = 2, 1.0   # HEAD and GET stall past the client's timeout once
    opts = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=0.25)}}
    assert len(fl.TarShards(url, retries=2, backoff=0.01, storage_options=opts)) == len(ts)
    http.slow[name] = 10 ** 6
    with pytest.raises(OSError, match=rf"{re.escape(url)}: TimeoutError.*\(after 2 tries\)") as err:
        len(fl.TarShards(url, retries=1, backoff=0.01, storage_options=opts))
    assert not isinstance(err.value, FileNotFoundError)


# ------------------------------------------------------------ the disk cache and rewritten shards

def file_gets(http):
    """The GETs of files (not of directory listings) the server has answered."""
    return [p for m, p, _ in http.requests if m == "GET" and os.path.isfile(os.path.join(http.root, p.lstrip("/")))]


def packed_twice(tmp_path):
    """Two packings of records of the same sizes but other bytes: the same meta.json and index.npz,
    shards of the same sizes; only their bytes (and so their ETags) differ."""
    rng = np.random.default_rng(7)
    versions = []
    for v in (1, 2):
        recs = [{"__key__": f"r{i:03d}", "bin": rng.bytes(1000), "n": i} for i in range(24)]
        pack(fl.ListSource(recs), tmp_path / f"v{v}", shard_size=4 * 4096, workers=1, progress=False)
        versions.append(recs)
    for name in ("meta.json", "index.npz"):
        assert (tmp_path / "v1" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    return versions


@pytest.mark.parametrize("store", ["s3", "http"])
def test_disk_cache_fetches_a_shard_rewritten_at_its_url_again(store, request, tmp_path):
    v1, v2 = packed_twice(tmp_path)
    if store == "s3":
        s3 = request.getfixturevalue("s3")
        kw = {"storage_options": s3}

        def publish(v):
            return upload(s3, tmp_path / v, "repacked")
    else:
        http = request.getfixturevalue("http")
        kw = {}

        def publish(v):
            shutil.copytree(tmp_path / v, os.path.join(http.root, "repacked"), dirs_exist_ok=True)
            return f"{http.url}/repacked"
    cache = tmp_path / "cache"
    url = publish("v1")
    old = fl.PackedDataset(url, cache_dir=cache, **kw)
    assert [old[i] for i in range(len(old))] == v1
    time.sleep(0.01)   # a later modification time on any file system
    publish("v2")      # re-packed in place: same names, same sizes, other bytes
    new = fl.PackedDataset(url, cache_dir=cache, **kw)
    assert [new[i] for i in range(len(new))] == v2
    if store == "http":   # checked once per shard, not per record read: a second pass asks nothing
        del http.requests[:]
        assert [new[i] for i in range(len(new))] == v2 and http.requests == []
        again = fl.PackedDataset(url, cache_dir=cache)   # unchanged: asked about, not downloaded
        assert [again[i] for i in range(len(again))] == v2
        assert http.requests and file_gets(http) == []


@pytest.mark.parametrize("cache", [False, True])
def test_a_dataset_opened_again_after_a_rewrite_reads_the_new_files(s3, tmp_path, cache):
    """fsspec hands every S3 dataset of the same options one filesystem, with the listings an earlier
    one made: a pack rewritten at the same URL (by another process) was read with the old sizes and
    ETags, "truncated" without a disk cache and the old records with one."""
    shared = {k: v for k, v in s3.items() if k != "skip_instance_cache"}   # as a user passes them
    recs = [[{"__key__": f"r{i:03d}", "bin": bytes([v]) * (100 * v + i), "n": i} for i in range(8 * v)]
            for v in (1, 2)]
    for v, r in enumerate(recs):
        pack(fl.ListSource(r), tmp_path / f"v{v}", workers=1, progress=False)
    kw = {"storage_options": shared, **({"cache_dir": tmp_path / "cache"} if cache else {})}
    url = upload(s3, tmp_path / "v0", f"rewritten-{cache}")   # another filesystem object writes
    old = fl.PackedDataset(url, **kw)
    assert [old[i] for i in range(len(old))] == recs[0]
    upload(s3, tmp_path / "v1", f"rewritten-{cache}")
    new = fl.PackedDataset(url, **kw)
    assert len(new) == 16 and [new[i] for i in range(len(new))] == recs[1]


def tar_of(samples, tag):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i in samples:
            for ext, data in (("cls", b"%d" % i), ("txt", f"{tag}: sample k{i}".encode())):
                info = tarfile.TarInfo(f"k{i}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_index_in_cache_dir_is_rebuilt_for_a_rewritten_shard(http, tmp_path):
    """A tar shard rewritten with its samples in another order has the same size (tar pads to
    10240-byte blocks): the index saved in cache_dir must not be used for it."""
    www = pathlib.Path(http.root)
    (www / "a.tar").write_bytes(tar_of(range(8), "v1"))
    (www / "b.tar").write_bytes(tar_of(range(8, 16), "v1"))
    urls = [f"{http.url}/a.tar", f"{http.url}/b.tar"]
    kw = dict(cache_dir=tmp_path / "c", cache_limit=os.path.getsize(www / "a.tar"), max_in_flight=1)
    assert len(fl.TarShards(urls, **kw)) == 16   # a.tar evicted when b.tar is fetched
    time.sleep(0.01)
    rewritten = tar_of([7, 6, 5, 4, 3, 2, 1, 0], "v2")
    assert len(rewritten) == os.path.getsize(www / "a.tar")
    (www / "a.tar").write_bytes(rewritten)
    (tmp_path / "a.tar").write_bytes(rewritten)
    got = records(fl.TarShards(urls, **kw))
    assert got[:8] == records(fl.TarShards(str(tmp_path / "a.tar")))
    assert [(r["__key__"], r["cls"], r["txt"]) for r in got[:8]] == [(f"k{i}", i, f"v2: sample k{i}")
                                                                     for i in (7, 6, 5, 4, 3, 2, 1, 0)]
    del http.requests[:]
    assert records(fl.TarShards(urls[1], **kw)) == got[8:]   # unchanged: index and copy reused
    assert http.requests and file_gets(http) == []


# ------------------------------------------------------------ a cache smaller than the data

def tar_per_two_samples(shards, folder):
    """The samples of ``shards`` again, two to a shard: many small shards."""
    paths = []
    for i, rec in enumerate(records(fl.TarShards(shards))):
        if i % 2 == 0:
            paths.append(os.path.join(folder, f"t-{i // 2:02d}.tar"))
            writer = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        for ext in ("jpg", "cls"):
            data = rec[ext] if ext == "jpg" else str(rec[ext]).encode()
            info = tarfile.TarInfo(f"{rec['__key__']}.{ext}")
            info.size = len(data)
            writer.addfile(info, io.BytesIO(data))
        if i % 2 == 1:
            writer.close()
    return paths


def test_tar_shards_with_a_cache_limit_below_the_data_never_fail_a_record(http, local_shards, tmp_path):
    """Room for one shard, eight indexing threads, four loader workers, a server some way off: a
    shard one thread was just handed is another's to evict. Indexing and every epoch still read
    every record, equal to the local ones."""
    _, shards = local_shards
    local = tar_per_two_samples(shards, tmp_path)
    urls = serve(http, local)
    http.latency = 0.005
    limit = max(os.path.getsize(s) for s in local)
    kw = dict(batch_size=4, shuffle=True, seed=5, workers=4, fields=FIELDS)
    for trial in range(3):
        ts = fl.TarShards(urls, cache_dir=tmp_path / f"c{trial}", cache_limit=limit, max_in_flight=8)
        assert len(ts) == 24
        for epoch in range(2):
            assert_same_batches(fl.Loader(ts, **kw), fl.Loader(fl.TarShards(local), **kw))


def test_packed_with_a_cache_limit_below_the_data_never_fails_a_record(http, local_shards, tmp_path):
    """Room for one shard, sixteen threads reading batches: a shard one thread has just fetched is
    another's to evict before it is opened. Every record still comes back, equal to the local one."""
    from concurrent.futures import ThreadPoolExecutor
    folder, _ = local_shards
    pack(fl.ImageFolder(folder), tmp_path / "p", shard_size=2 * 4096, progress=False)   # a record a shard
    shutil.copytree(tmp_path / "p", os.path.join(http.root, "p"))
    local = fl.PackedDataset(tmp_path / "p")
    want = [local[i] for i in range(len(local))]
    limit = max(s["size"] for s in local.meta["shards"])
    for trial in range(5):
        remote = fl.PackedDataset(f"{http.url}/p", cache_dir=tmp_path / f"c{trial}", cache_limit=limit)
        order = np.random.default_rng(trial).permutation(len(remote))
        batches = [order[i:i + 4] for i in range(0, len(order), 4)]
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(remote.gather, batches))
        assert got == [[want[i] for i in b] for b in batches]
    args = dict(batch_size=4, shuffle=True, seed=1, workers=4, transforms=[fl.CenterCrop(24)])
    for (a, la), (b, lb) in zip(fl.Loader(remote, **args), fl.Loader(local, **args)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def open_files_under(folder):
    """(path, deleted) of every descriptor this process holds on a file under ``folder``."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder) + "/"):
            out.append((target.removesuffix(" (deleted)"), target.endswith(" (deleted)")))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_evicted_shards_give_their_disk_back_and_descriptors_are_bounded(http, tmp_path):
    from fastload.sources import remote
    www = pathlib.Path(http.root)
    for s in range(12):
        (www / f"s{s:02d}.tar").write_bytes(tar_of(range(s * 4, s * 4 + 4), "x" * 20000))
    urls = [f"{http.url}/s{s:02d}.tar" for s in range(12)]
    size = os.path.getsize(www / "s00.tar")
    cache = tmp_path / "cache"
    ts = fl.TarShards(urls, cache_dir=cache, cache_limit=2 * size, max_in_flight=1)
    for epoch in range(2):
        assert [ts[i]["cls"] for i in range(len(ts))] == list(range(48))
    held = open_files_under(cache)
    cached = [f for f in os.listdir(cache) if f.endswith(".tar")]
    assert [p for p, deleted in held if deleted] == []   # no evicted shard kept on disk by a descriptor
    assert len(held) <= len(cached) == 2 and sum(os.path.getsize(cache / f) for f in cached) <= 2 * size
    # local shards: at most _KEEP_OPEN descriptors stay open between reads, however many shards
    local = tmp_path / "local"
    local.mkdir()
    paths = []
    for s in range(remote._KEEP_OPEN + 16):
        paths.append(str(local / f"l{s:03d}.tar"))
        pathlib.Path(paths[-1]).write_bytes(tar_of([s], "y"))
    lt = fl.TarShards(paths)
    assert [lt[i]["cls"] for i in range(len(lt))] == list(range(len(paths)))
    assert 0 < len(open_files_under(local)) <= remote._KEEP_OPEN


# ------------------------------------------------------------ names behind HTTP links

def test_image_folder_over_http_names_classes_and_orders_files_as_on_disk(http, tmp_path):
    """An HTTP server links 'cat dog/x y.png' as 'cat%20dog/x%20y.png': classes are named by the
    names the links stand for, and classes and files come in the order of the same tree on disk."""
    tree = {"zebra": ["b.png", "a b.png"], "élan": ["c.png"], "cat dog": ["x y.png", "x+y.png", "x.png"],
            "Ω%": ["z.png"]}
    for root in (tmp_path / "local", pathlib.Path(http.root) / "train"):
        for cls, names in tree.items():
            os.makedirs(root / cls)
            for n in names:
                Image.fromarray(np.full((4, 4, 3), len(n) * 9, np.uint8)).save(root / cls / n)
    local = fl.ImageFolder(tmp_path / "local")
    remote = fl.ImageFolder(f"{http.url}/train")
    assert remote.classes == local.classes == sorted(tree)
    rel = [urllib.parse.unquote(u.split("/train/", 1)[1]) for u in remote.paths]
    assert rel == [os.path.relpath(p, tmp_path / "local") for p in local.paths]
    np.testing.assert_array_equal(remote.labels(), local.labels())
    assert [remote[i][0] for i in range(len(remote))] == [pathlib.Path(p).read_bytes() for p in local.paths]


def test_a_class_folder_whose_listing_fails_is_an_error_not_a_missing_class(http, tmp_path):
    # fsspec's walk left out a folder whose page timed out: two classes of three, the labels after
    # the missing one shifted, and no word of it.
    root = pathlib.Path(http.root) / "imgs"
    for c in range(3):
        os.makedirs(root / f"class_{c}")
        for i in range(2):
            Image.fromarray(np.full((4, 4, 3), 40 * c + i, np.uint8)).save(root / f"class_{c}" / f"{i}.png")
    http.slow["/imgs/class_1"] = 10 ** 6
    http.slow_s = 2
    with pytest.raises(OSError, match=rf"{re.escape(http.url)}/imgs.*Timeout"):
        fl.ImageFolder(f"{http.url}/imgs", read_timeout=0.5, retries=1, backoff=0.01)
    http.slow.clear()
    folder = fl.ImageFolder(f"{http.url}/imgs")
    assert folder.classes == ["class_0", "class_1", "class_2"] and folder.labels().tolist() == [0, 0, 1, 1, 2, 2]


def test_a_stalled_s3_endpoint_fails_after_the_tries_asked_for(tmp_path):
    # botocore's own 5 tries of each request and s3fs's 5 of each call held a 1 s read_timeout
    # with retries=0 for two minutes, over 50 connections, and the error said "after 1 tries".
    pytest.importorskip("s3fs")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    accepted = []

    def accept():   # takes connections and never answers
        while True:
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    opts = {"key": "x", "secret": "x", "endpoint_url": f"http://127.0.0.1:{srv.getsockname()[1]}",
            "client_kwargs": {"region_name": "us-east-1"}}
    t = time.monotonic()
    try:
        with pytest.raises(OSError, match=r"s3://bkt/a\.tar: ReadTimeoutError.*\(after 2 tries\)"):
            len(fl.TarShards("s3://bkt/a.tar", storage_options=opts, read_timeout=0.5, retries=1, backoff=0.01))
    finally:
        srv.close()
        for c in accepted:
            c.close()
    assert time.monotonic() - t < 15 and len(accepted) <= 4, (time.monotonic() - t, len(accepted))


def test_an_s3_key_named_with_glob_characters_is_that_key(s3, tmp_path):
    import webdataset as wds
    local = tmp_path / "brackets"
    local.mkdir()
    for name, text in (("a[1].tar", "A-BRACKET"), ("a1.tar", "A-ONE")):
        with wds.TarWriter(str(local / name)) as w:
            w.write({"__key__": "k0", "txt": text})
    base = upload(s3, str(local), "brackets")
    shards = fl.TarShards(f"{base}/a[1].tar", storage_options=s3)
    assert shards.urls == [f"{base}/a[1].tar"] and shards[0]["txt"] == "A-BRACKET"
    assert fl.TarShards(f"{base}/a?.tar", storage_options=s3).urls == [f"{base}/a1.tar"]


def test_a_shard_known_only_by_its_last_modified_second_is_fetched_again_by_the_next_dataset(http, tmp_path):
    # Python's http.server sends no ETag: a same-size rewrite within the second of the first fetch
    # kept its Last-Modified, and the next dataset sharing the cache read the old bytes.
    import webdataset as wds
    http.etag = False
    shard = pathlib.Path(http.root) / "a.tar"

    def write(tag):
        with wds.TarWriter(str(shard)) as w:
            for i in range(3):
                w.write({"__key__": f"k{i}", "txt": f"{tag}-{i}"})
    url, cache = f"{http.url}/a.tar", tmp_path / "cache"
    write("v1")
    assert [r["txt"] for r in fl.TarShards(url, cache_dir=cache)] == ["v1-0", "v1-1", "v1-2"]
    write("v2")   # the same size, within the same second
    assert [r["txt"] for r in fl.TarShards(url, cache_dir=cache)] == ["v2-0", "v2-1", "v2-2"]
    old = time.time() - 3600   # a file last changed an hour ago is trusted: asked about, not downloaded
    os.utime(shard, (old, old))
    assert [r["txt"] for r in fl.TarShards(url, cache_dir=cache)] == ["v2-0", "v2-1", "v2-2"]
    del http.requests[:]
    assert [r["txt"] for r in fl.TarShards(url, cache_dir=cache)] == ["v2-0", "v2-1", "v2-2"]
    assert http.requests and file_gets(http) == []


def test_a_url_with_a_query_is_asked_about_alone_not_through_a_listing(http, local_shards):
    # A "/" in a presigned URL's query made "shard.tar?X-Sig=ab" a directory to list: the shard
    # was downloaded whole to read its "links".
    _, shards = local_shards
    urls = serve(http, shards)
    signed = urls[0] + "?X-Sig=ab/cd"
    ts = fl.TarShards([signed])
    assert len(ts) == len(fl.TarShards(shards[:1]))
    gets = [(p, r) for m, p, r in http.requests if m == "GET"]
    assert gets and all(r is not None for _, r in gets), gets   # ranged reads only, no whole-file GET


# ------------------------------------------------------------ a stream reads ahead

def served_shards(http, count, per=6, pad=8000):
    """``count`` shards of ``per`` samples (.cls, and .txt of ``pad`` bytes) on the server: their URLs
    and local paths."""
    www = pathlib.Path(http.root)
    paths = []
    for s in range(count):
        paths.append(www / f"r{s:03d}.tar")
        paths[-1].write_bytes(tar_of(range(s * per, (s + 1) * per), "x" * pad))
    return [f"{http.url}/{p.name}" for p in paths], [str(p) for p in paths]


def without_url(got):
    return [r if isinstance(r, fl.FailedRecord) else {k: v for k, v in r.items() if k != "__url__"} for r in got]


def test_a_remote_stream_requests_ranges_and_shards_before_it_reads_them(http, monkeypatch):
    """A stream of a far-off store's shards read one range at a time paid its latency for each range
    and each shard. It asks for the STREAM_AHEAD ranges after the one it reads, and opens the shards
    after it while it reads one: each range is asked for once, within max_in_flight, and the
    records are the local ones, in order."""
    import fastload.sources.shards as shards_module
    block = 16 << 10
    monkeypatch.setattr(shards_module, "STREAM_RANGE", block)
    urls, paths = served_shards(http, 5)
    http.latency = 0.1
    got = list(fl.TarShards(urls, max_in_flight=6).stream())
    assert without_url(got) == without_url(fl.TarShards(paths).stream()) and len(got) == 30
    ranges = {}
    for method, path, rng in http.requests:
        if method == "GET" and path.endswith(".tar"):
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", rng).groups())
            ranges.setdefault(path, []).append((a, b + 1))
    for p in paths:
        size = os.path.getsize(p)
        want = [(a, min(a + block, size)) for a in range(0, size, block)]
        assert sorted(ranges["/" + os.path.basename(p)]) == want and len(want) > shards_module.STREAM_AHEAD
    assert shards_module.STREAM_AHEAD + 1 < http.peak <= 6


def test_a_stream_through_the_disk_cache_downloads_the_next_shards_while_it_reads_one(http, tmp_path):
    urls, paths = served_shards(http, 4)
    http.latency = 0.1
    st = fl.TarShards(urls, cache_dir=tmp_path / "cache").stream()
    local = without_url(fl.TarShards(paths).stream())
    assert without_url(st) == local and http.peak >= 2   # downloads overlapped
    gets = [p for m, p, _ in http.requests if m == "GET" and p.endswith(".tar")]
    assert sorted(gets) == sorted("/" + os.path.basename(p) for p in paths)   # each shard fetched once
    del http.requests[:]
    assert without_url(st) == local and not [r for r in http.requests if r[0] == "GET"]


def test_a_range_read_ahead_that_fails_loses_no_record_before_it(http, monkeypatch):
    """A shard cut short after its size was listed: the range past the cut fails when it is asked
    for, before the reader gets there; the samples before it still come first, then one failed
    record naming the shard and the sample whose members were being read (never that sample with
    the members read so far), then the next shard whole."""
    import fastload.sources._tar as tar_module
    import fastload.sources.shards as shards_module
    monkeypatch.setattr(shards_module, "STREAM_RANGE", 16 << 10)
    monkeypatch.setattr(tar_module, "CHUNK", 16 << 10)
    urls, paths = served_shards(http, 3)
    ts = fl.TarShards(urls, retries=0)
    assert [ts.storage.size(u) for u in urls] == [os.path.getsize(p) for p in paths]
    whole = without_url(fl.TarShards(paths).stream())
    with open(paths[1], "r+b") as f:
        f.truncate(40000)
    got = without_url(ts.stream())
    failed = [i for i, r in enumerate(got) if isinstance(r, fl.FailedRecord)]
    assert len(failed) == 1 and 6 + 2 <= failed[0] < 12
    assert got[:failed[0]] == whole[:failed[0]] and got[failed[0] + 1:] == whole[12:]
    assert got[failed[0]].where == urls[1]
    assert re.fullmatch(rf"reading failed at byte \d+, within sample k{failed[0]}: .*file ends at byte "
                        r"40000, before \d+ \(truncated\?\)", got[failed[0]].reason)


def test_a_remote_file_read_ahead_reads_as_the_file_whatever_the_seeks(http):
    from fastload.sources.remote import Storage
    data = bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))
    (pathlib.Path(http.root) / "blob.bin").write_bytes(data)
    url = f"{http.url}/blob.bin"
    rng = np.random.default_rng(1)
    with Storage().open_stream(url, buffer_size=4096, ahead=2) as f:
        for _ in range(200):
            if rng.random() < 0.2:
                f.seek(int(rng.integers(0, len(data) + 100)))
            at, n = f.tell(), int(rng.integers(0, 9000))
            assert f.read(n) == data[at:at + n]
    gets = [r for m, p, r in http.requests if m == "GET" and p == "/blob.bin"]
    assert gets and all(int(r.split("=")[1].split("-")[0]) % 4096 == 0 for r in gets)   # whole blocks only


def test_small_shards_are_opened_ahead_at_most_max_in_flight_at_once(http):
    """Remote shards of a few bytes are opened ahead by count, not bytes: at most max_in_flight of
    them besides the one read. Local shards are opened when their turn comes."""
    urls, paths = served_shards(http, 400, per=1, pad=10)   # more records than a stream queues
    def held(stream):
        """Shards begun when the stream's thread, reading on while the consumer holds its first record,
        waits for room."""
        stream.set_epoch(0)
        it = iter(stream)
        assert next(it)["cls"] == 0
        read, deadline = -1, time.monotonic() + 10
        while read != (read := len(stream.pass_state(0)["counts"])) and time.monotonic() < deadline:
            time.sleep(0.2)
        return it, read

    it, read = held(fl.TarShards(urls, max_in_flight=4).stream())
    begun = {p for m, p, _ in http.requests if m == "GET" and p.endswith(".tar")}
    assert 100 < read < 400 and read < len(begun) <= read + 4
    it.close()
    local = fl.TarShards(paths, max_in_flight=4).stream()
    it, read = held(local)
    if os.path.isdir("/proc/self/fd"):
        assert len(open_files_under(http.root)) <= 1
    assert [r["cls"] for r in it] == list(range(1, 400)) and 100 < read < 400
