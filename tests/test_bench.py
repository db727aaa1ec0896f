"""The benchmark suite end to end on tiny generated sets: what it writes, never how fast anything ran."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from fastload import cli
from fastload._kernels import _batch
from fastload.bench import report
from fastload.bench.datasets import dataset, linked_copies
from fastload.bench.suite import TASKS, contenders, run_suite, run_worker
from fastload.synthetic import make_image_folder, photo_like

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fastload bench runs on Linux only")
TINY = {"tasks": tuple(t.name for t in TASKS), "imagenet": 16, "small": 96, "png": 8, "multimodal": 40, "memory": (64, 256), "runs": 3, "cap": 16,
        "timeout": 180}
# The environments' contenders are left to `fastload bench`; WebDataset runs where it is installed (CI).
RUN = ["fastload", "fastload-packed", "fastload-tar", "fastload-stream", "generator", "torch-0"] + \
    (["webdataset"] if importlib.util.find_spec("webdataset") else [])


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("bench")
    out = str(root / "results")
    results = run_suite(mode="quick", out=out, threads=2, only=RUN, sizes=TINY, cache=str(root / "cache"),
                        log=lambda *a: None)
    return results, out, root


def test_results_json_lists_every_contender_with_figures_or_a_reason(suite):
    results, out, _ = suite
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    assert set(saved) == {"meta", "datasets", "tasks", "scaling", "memory", "targets"}
    assert saved["meta"]["mode"] == "quick" and saved["meta"]["threads"] == 2 and saved["meta"]["runs"] == 3
    assert [t["name"] for t in saved["tasks"]] == [t.name for t in TASKS]
    names = [c.name for c in contenders(2)]
    for task in saved["tasks"]:
        assert list(task["results"]) == names        # nobody silently dropped
        for name, r in task["results"].items():
            assert r["label"]
            if task["name"] == "multimodal" and name not in ("fastload", "generator"):
                assert r["status"] == "n/a" and r["reason"]
            elif name in RUN:
                assert r["status"] == "ok", (task["name"], name, r)
                assert len(r["rates"]) == 3 and r["min"] <= r["median"] <= r["max"]
                assert r["median"] == sorted(r["rates"])[1]
                assert r["cpu_s_per_image"] > 0 and r["first_batch_s"] > 0 and r["peak_rss_mb"] > 10
                capped = name in ("generator", "torch-0") and task["name"] != "multimodal"
                expected = min(TINY["cap"], task["samples"]) if capped else task["samples"]
                assert r["images"] == expected
                for kind, lim in task["limits"].items():
                    assert r[f"efficiency_{kind}"] == pytest.approx(r["median"] / lim["rate"])
            else:
                assert r["status"] == "not run" and r["reason"]
        if task["name"] == "multimodal":
            assert task["limits"] == {}
        elif task["dataset"] == "png" and not _batch.HAVE_SPNG:
            assert list(task["limits"]) == ["full"] and "zlib" in task["limits"]["full"]["decoder"]
        elif task["dataset"] == "png":
            assert list(task["limits"]) == ["full", "region", "pillow"]
            assert "libspng" in task["limits"]["region"]["decoder"] and "zlib" in task["limits"]["pillow"]["decoder"]
        else:   # the crop-region decode needs libjpeg-turbo linked; Pillow gives the full-decode limit
            assert list(task["limits"]) == (["full", "region"] if _batch.HAVE_LIBJPEG_TURBO else ["full"])
            assert all(lim["rate"] > 0 and lim["threads"] == 2 and lim["images"] == task["samples"]
                       for lim in task["limits"].values())
    assert saved["scaling"]["threads"] == [1, 2]
    assert all(len(saved["scaling"][k]) == 2 and all(v > 0 for v in saved["scaling"][k])
               for k in ("fastload", "limit_full"))
    # the crop-region limit needs fastload's JPEG decoder: without it none is measured, none shown
    assert all((v > 0) if _batch.HAVE_LIBJPEG_TURBO else v is None for v in saved["scaling"]["limit_region"])
    assert saved["scaling"]["torch"] == [None, None]     # torch-2 not selected
    assert saved["memory"]["files"] == [64, 256] and all(v > 10 for v in saved["memory"]["fastload"])
    assert saved["memory"]["torch-2"] == [None, None]
    ffcv_targets = [t for t in saved["targets"] if "FFCV" in t["what"]]
    assert ffcv_targets and all(t["value"] is None and t["met"] is None for t in ffcv_targets)


def test_table_and_plots(suite):
    results, out, _ = suite
    with open(os.path.join(out, "results.md")) as f:
        table = f.read()
    for task in results["tasks"]:
        assert task["title"] in table
        for r in task["results"].values():
            assert r["label"] in table
    assert "not run: not selected (--contenders)" in table and "| **Targets**" not in table
    assert results["meta"]["plots"] == list(report.PLOTS)   # README links the throughput plot
    for name in report.PLOTS:
        with Image.open(os.path.join(out, name)) as im:
            im.load()
            assert im.format == "PNG" and im.width > 300 and im.height > 200
            assert np.asarray(im.convert("L")).std() > 1     # something was drawn


def test_without_matplotlib_the_results_are_written_without_plots(suite, tmp_path, monkeypatch):
    """Without matplotlib the whole run ended in a traceback from the plots; the figures are written,
    and the command says so before it starts."""
    results, _, _ = suite
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert not report.can_plot()
    report.write_report(results, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["results.md"]


def test_readme_section_is_replaced_not_duplicated(suite, tmp_path):
    _, out, _ = suite
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\nintro\n")
    assert cli.main(["bench", "--readme", str(readme), "--out", out]) == 0
    once = readme.read_text()
    assert once.startswith("# project\n\nintro\n") and once.count(report.README_START) == 1
    assert "| fastload, 2 threads | **" in once and "throughput.png" in once and "results.md" in once
    readme.write_text(once.replace("intro", "intro, edited"))
    assert cli.main(["bench", "--readme", str(readme), "--out", out]) == 0
    twice = readme.read_text()
    assert twice == once.replace("intro", "intro, edited") and twice.count(report.README_END) == 1


def test_datasets_are_deterministic_and_exact(tmp_path):
    a = dataset("imagenet", 13, seed=5, cache=str(tmp_path / "a"))
    b = dataset("imagenet", 13, seed=5, cache=str(tmp_path / "b"))
    c = dataset("imagenet", 13, seed=6, cache=str(tmp_path / "c"))

    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                      if not f.startswith("."))
    assert len(files(a)) == 13 and files(a) == files(b) == files(c)
    for rel in files(a):
        with open(os.path.join(a, rel), "rb") as f1, open(os.path.join(b, rel), "rb") as f2:
            assert f1.read() == f2.read()
    with open(os.path.join(a, files(a)[0]), "rb") as f1, open(os.path.join(c, files(c)[0]), "rb") as f2:
        assert f1.read() != f2.read()
    with Image.open(os.path.join(a, files(a)[0])) as im:
        assert im.format == "JPEG" and 340 <= im.height <= 460 and 391 <= im.width <= 529
    links = linked_copies(a, 30, cache=str(tmp_path / "a"))
    linked = files(links)
    assert len(linked) == 30
    assert os.path.samefile(os.path.join(links, linked[13]), os.path.join(a, files(a)[0]))
    mm = dataset("multimodal", 7, cache=str(tmp_path / "m"))
    with open(os.path.join(mm, "texts.jsonl")) as f:
        assert len([json.loads(line)["text"] for line in f]) == 7
    with open(os.path.join(mm, "numeric.csv")) as f:
        assert len(f.read().splitlines()) == 8
    assert len(os.listdir(os.path.join(mm, "images"))) == 7


def test_a_contender_that_cannot_run_says_why(tmp_path):
    png = dataset("png", 4, cache=str(tmp_path))
    spec = {"contender": "ffcv", "builder": "ffcv", "workers": 1, "runs": 1, "max_images": 0,
            "cache": str(tmp_path / "work"),
            "task": {"name": "png224", "dataset": "png", "path": png, "transform": "rrc", "size": 32, "batch": 4}}
    r = run_worker(sys.executable, spec, timeout=60)
    assert {k: r[k] for k in ("ok", "status", "reason")} == {
        "ok": False, "status": "n/a",
        "reason": "FFCV stores JPEG or raw pixels, so it cannot read the same PNG files"}
    spec.update(builder="generator", task={**spec["task"], "path": str(tmp_path / "missing")})
    r = run_worker(sys.executable, spec, timeout=60)
    assert r["status"] == "failed" and "missing" in r["reason"]


def test_contenders_take_their_timed_epochs_in_turns(tmp_path, monkeypatch):
    """Each worker starts alone (to its first turn), then the timed epochs go round: a, b, a, b, ...;
    a worker that fails to start takes no turn and says why."""
    from fastload.bench import suite
    small = dataset("small", 8, cache=str(tmp_path))
    task = {"name": "rrc64", "dataset": "small", "path": small, "transform": "rrc", "size": 16, "batch": 4}

    def spec(name, builder, path=small):
        return {"contender": name, "builder": builder, "workers": 1, "runs": 3, "max_images": 0,
                "cache": str(tmp_path / "work"), "task": {**task, "path": path}}
    events = []
    step, go = suite._Worker.step, suite._Worker.go
    monkeypatch.setattr(suite._Worker, "step", lambda w, t: events.append(("step", w.log)) or step(w, t))
    monkeypatch.setattr(suite._Worker, "go", lambda w, t: events.append(("go", w.log)) or go(w, t))
    jobs = [(sys.executable, spec("a", "fastload")), (sys.executable, spec("gone", "generator", "/missing")),
            (sys.executable, spec("b", "generator"))]
    a, gone, b = suite.run_in_turns(jobs, timeout=60)
    assert a["ok"] and b["ok"] and len(a["rates"]) == len(b["rates"]) == 3 and a["images"] == b["images"] == 8
    assert gone["status"] == "failed" and "missing" in gone["reason"]
    name = {w: os.path.basename(w).split("-")[1] for _, w in events}
    goes = [name[w] for kind, w in events if kind == "go"]
    assert [name[w] for kind, w in events[:3]] == ["a", "gone", "b"] and all(k == "step" for k, _ in events[:3])
    assert goes == ["a", "b"] * 3


def test_command_line_help_lists_the_options():
    home = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    out = subprocess.run([sys.executable, "-m", "fastload", "bench", "--help"], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(home) or "/",   # not a checkout's bare sources
                         env={**os.environ, "PYTHONPATH": home}).stdout
    for option in ("--quick", "--full", "--out", "--readme", "--no-envs", "--contenders", "path"):
        assert option in out
    flat = " ".join(out.split())   # argparse wraps the help text
    assert "torch-0, torch-1, torch-N" in flat and "torch-2" not in flat   # N: the thread count, not always 2


def test_bench_threads_default_to_the_cores_this_process_may_use(tmp_path, capsys, monkeypatch):
    from fastload.pipeline import node
    monkeypatch.setattr(node, "usable_cores", lambda: 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    missing = tmp_path / "missing"   # torch-3 is known (3 threads), so the run gets as far as the path
    assert str(missing) in _usage_error(capsys, "bench", str(missing), "--contenders", "torch-3")


def test_the_suite_says_it_runs_on_linux_only(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(RuntimeError, match=r"fastload bench runs on Linux only \(this is win32\): it reads CPU"):
        run_suite(out=str(tmp_path), mode="quick")
    assert not os.listdir(tmp_path)


def test_the_memory_sampler_counts_a_worker_started_after_it_began(tmp_path):
    """A DataLoader starts its workers after the process itself: the tree is listed again
    while it runs, so a child started later is counted."""
    pytest.importorskip("psutil")
    from fastload.bench.suite import _RssSampler
    child = ("import numpy as np, time; a = np.ones(200 << 20, np.uint8); "
             "open(__import__('sys').argv[1], 'w').close(); time.sleep(1.5)")
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time; time.sleep(0.3); "
                               f"subprocess.run([sys.executable, '-c', {child!r}, {str(ready)!r}])"])
    try:
        sampler = _RssSampler(parent.pid)
        sampler.sample()
        first = sampler.peak
        assert 0 < first < 100 << 20
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            sampler.sample()
            time.sleep(0.02)
        for _ in range(50):   # a second: two of the sampler's relists
            sampler.sample()
            time.sleep(0.02)
        assert sampler.peak >= first + (200 << 20)
    finally:
        parent.kill()
        parent.wait()


def test_the_decode_limit_runs_off_the_main_thread_and_passes_its_errors_on():
    """The limit's decodes run in new processes, each on a thread of its own, as a loader's do
    (elsewhere a small JPEG's decode time depends on where the heap put libjpeg's buffers); a
    decode that fails stops the measurement with its own error, a process that dies with its status."""
    from fastload.bench.limits import _parallel_rate
    from helpers import decode_limit_probe
    for procs in (1, 2):
        rate, rates = _parallel_rate(decode_limit_probe, (5, -1), procs, 2)
        assert len(rates) == 2 and 0 < min(rates) and rate == max(rates)
        with pytest.raises(ValueError, match="image 3 is broken"):
            _parallel_rate(decode_limit_probe, (5, 3), procs, 1)
    with pytest.raises(RuntimeError, match="decode-limit process 0 of 2 exited with status 3"):
        _parallel_rate(os._exit, (3,), 2, 1)   # a process that dies without an answer


def test_shard_contenders_and_the_limit_take_a_folder_of_mixed_extensions(tmp_path):
    """A user's folder of .jpg, .jpeg and a PNG: the shards named every member after the first
    file's extension, so fastload on them failed ('no .jpeg member') and so did WebDataset; the
    limit fell back to Pillow on the whole set, a limit fastload beat twice over."""
    from fastload.bench.limits import decode_limits
    from fastload.synthetic import encode, photo_like
    root = tmp_path / "mine"
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i, ext in enumerate(("jpg", "jpeg", "JPG", "png")):
            img = photo_like(40, 48, seed=10 * c + i)
            (root / cls / f"{i}.{ext}").write_bytes(encode(img, "PNG") if ext == "png" else encode(img, quality=90))
    task = {"name": "rrc224", "dataset": "user", "path": str(root), "transform": "rrc", "size": 32, "batch": 4}
    builders = ["fastload_tar", "fastload_stream"] + (["webdataset"] if importlib.util.find_spec("webdataset") else [])
    for builder in builders:
        spec = {"contender": builder, "builder": builder, "workers": 1, "runs": 1, "max_images": 0,
                "cache": str(tmp_path / "work"), "task": task}
        r = run_worker(sys.executable, spec, timeout=120)
        assert r["ok"] and r["images"] == 8, (builder, r)
    paths = sorted(str(p) for p in root.rglob("*.*"))
    limits = decode_limits(paths, TASKS[0].transforms(), threads=1, runs=1)
    if _batch.HAVE_LIBJPEG_TURBO:
        assert limits["full"]["decoder"].endswith("; its 6 JPEGs of 8 files") and limits["full"]["images"] == 6
    # and a reason that holds a traceback stays one table cell
    assert report._cell("Traceback:\n  File | x\nValueError: y") == "Traceback: File \\| x ValueError: y"


def test_every_contender_reads_the_files_fastload_lists(tmp_path):
    """The other contenders had their own scan of the folder: it took macOS's hidden '._x.jpg' and
    left out nested folders and .tif/.gif/... files that ImageFolder reads, so the contenders (and
    the tar shards, the decode limit and the sample count) read other files than fastload."""
    import fastload as fl
    from fastload.bench import suite
    from fastload.bench._worker import folder_files
    from fastload.synthetic import encode, photo_like
    root = tmp_path / "data"
    for c, cls in enumerate(("cat", "dog")):
        (root / cls / "nested").mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.jpg").write_bytes(encode(photo_like(24, 24, seed=10 * c + i), quality=90))
        (root / cls / "nested" / "n.jpg").write_bytes(encode(photo_like(24, 24, seed=5), quality=90))
    Image.fromarray(photo_like(24, 24, seed=7)).save(root / "dog" / "x.tif")
    (root / "dog" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    os.symlink("loop", root / "loop")   # a link to itself in the root: no crash either
    want = [(p, label) for p, label in fl.ImageFolder(root)]
    assert len(want) == 7
    task = suite.Task("rrc224", "user", "rrc", 16, "mine", batch=4)
    listing, paths = suite._listing(str(root), str(tmp_path / "cache"))
    assert paths == [p for p, _ in want]
    spec = suite._spec("generator", "generator", task, str(root), 1, 1, 0, str(tmp_path / "cache"), listing)
    assert folder_files(spec) == want
    del spec["files"]   # a spec made by hand: the worker asks ImageFolder itself
    assert folder_files(spec) == want
    r = run_worker(sys.executable, {**spec, "files": listing}, timeout=120)
    assert r["ok"] and r["images"] == 7, r
    # a format a contender cannot read the same way is said, not a crash
    r = run_worker(sys.executable, {**spec, "builder": "ffcv", "files": listing}, timeout=60)
    assert (r["status"], r["reason"]) == ("n/a", "FFCV stores JPEG or raw pixels, so it cannot read the same TIF files")


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "Traceback" not in out + err, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastload: error: "), err
    return lines[0]


def test_bench_path_is_checked_as_demo_checks_it(tmp_path, capsys, monkeypatch):
    """A missing folder was a traceback; an empty one, or images without class folders, ran the
    whole suite to a results file of failures and exit status 0."""
    monkeypatch.setenv("FASTLOAD_BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "0.jpg").write_bytes(b"x")
    for path, why in (("missing", "no such file or directory"), ("empty", "the folder is empty"),
                      ("flat", "no class subfolders; it holds 1 image(s) directly")):
        line = _usage_error(capsys, "bench", str(tmp_path / path), "--no-envs", "--contenders", "fastload",
                            "--out", str(tmp_path / "res"))
        assert line.startswith(f"fastload: error: {tmp_path / path}: {why}"), line
    assert not os.path.exists(tmp_path / "res")


def test_bench_names_an_unknown_contender_and_the_known_ones(tmp_path, capsys):
    """`--contenders fastlaod` (a typo) ran nothing, listed every contender as not selected and exited 0."""
    line = _usage_error(capsys, "bench", "--contenders", "fastload,fastlaod", "--threads", "4",
                        "--out", str(tmp_path / "res"))
    assert line.startswith("fastload: error: --contenders: unknown 'fastlaod'; choose from fastload, "
                           "fastload-packed,") and "torch-4" in line, line
    # an empty list (an unset shell variable) ran every contender, environments built and all
    for empty in ("", " ", ","):
        assert _usage_error(capsys, "bench", "--contenders", empty, "--out", str(tmp_path / "res")) == \
            "fastload: error: --contenders is empty; name at least one (or leave the option out for all)"
    assert not os.path.exists(tmp_path / "res")
    assert not os.path.exists(tmp_path / "res")


def test_bench_readme_without_results_is_one_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\n<!-- bench:end -->\n")
    out = tmp_path / "no-results"
    assert _usage_error(capsys, "bench", "--readme", str(readme), "--out", str(out)) == \
        f"fastload: error: {out / 'results.json'}: no such file (run 'fastload bench --out {out}' first)"
    assert _usage_error(capsys, "bench", "--readme", str(tmp_path / "nope.md"), "--out", str(out)).startswith(
        f"fastload: error: {tmp_path / 'nope.md'}: no such file")


def _odd_folder(root):
    """Two JPEGs, a CMYK JPEG (fastload's decoder hands it to Pillow), a corrupt JPEG and a dangling link."""
    from fastload.synthetic import encode, photo_like
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    (root / "a" / "0.jpg").write_bytes(encode(photo_like(40, 48, seed=1), quality=90))
    Image.fromarray(photo_like(40, 48, seed=2)).convert("CMYK").save(root / "a" / "1.jpg")
    (root / "b" / "0.jpg").write_bytes(encode(photo_like(40, 48, seed=3), quality=90))
    (root / "b" / "1.jpg").write_bytes(b"\xff\xd8garbage")
    os.symlink(root / "gone.jpg", root / "b" / "2.jpg")
    return [str(root / c / f) for c, f in (("a", "0.jpg"), ("a", "1.jpg"), ("b", "0.jpg"), ("b", "1.jpg"),
                                            ("b", "2.jpg"))]


@pytest.mark.filterwarnings("ignore:Tight layout not applied")   # the plot of a task with one contender
def test_the_decode_limit_reads_files_as_the_loader_does_and_names_those_it_leaves_out(tmp_path):
    """A CMYK JPEG stopped the bench with a traceback from the decode limit (fastload's decoder refuses
    it; the loader reads it through Pillow), and so did a corrupt JPEG or a dangling link, naming no
    file. The limit times the CMYK file through Pillow, leaves the others out, counts them and names
    the first; and so are they left out of every contender, which failed on them and measured
    nothing."""
    from fastload.bench.limits import decode_limits, unreadable_files
    paths = _odd_folder(tmp_path / "odd")
    limits = decode_limits(paths, TASKS[0].transforms(), threads=1, runs=1)
    assert list(limits) == (["full", "region"] if _batch.HAVE_LIBJPEG_TURBO else ["full"])
    for lim in limits.values():
        assert lim["rate"] > 0 and lim["images"] == 3 and lim["unreadable"] == 2
        assert lim["first_unreadable"]["path"] == paths[3] and lim["first_unreadable"]["reason"]
        assert lim["pillow_images"] == (1 if _batch.HAVE_LIBJPEG_TURBO else 0)
        assert "2 unreadable file(s) left out" in lim["decoder"]
    assert unreadable_files(paths) == [(p, r) for p, r in [(paths[3], limits["full"]["first_unreadable"]["reason"]),
                                                          (paths[4], unreadable_files(paths)[1][1])]]
    lines = []
    results = run_suite(str(tmp_path / "odd"), out=str(tmp_path / "res"), threads=1,
                        only=["fastload", "fastload-packed", "generator", "torch-0"], sizes={"runs": 1},
                        cache=str(tmp_path / "cache"), scaling=False, log=lines.append)
    assert any(line.startswith("  left out of every contender: 2 unreadable file(s), the first " + paths[3])
               for line in lines), lines
    task = results["tasks"][0]
    assert task["samples"] == 3 and task["left_out"]["files"] == 2 and task["left_out"]["first"]["path"] == paths[3]
    for name in ("fastload", "fastload-packed", "generator", "torch-0"):
        assert task["results"][name]["status"] == "ok" and task["results"][name]["images"] == 3, task["results"][name]
    assert results["targets"] == []   # the project's targets are figures of the generated sets
    with open(tmp_path / "res" / "results.md") as f:
        md = f.read()
    assert f"2 unreadable file(s) left out of every contender* (the first: {paths[3]}: " in md


def test_bench_out_that_cannot_be_a_folder_is_one_line_before_the_run(tmp_path, capsys, monkeypatch):
    """--out naming a file ran the whole suite, then ended in a FileExistsError traceback and lost the results."""
    monkeypatch.setenv("FASTLOAD_BENCH_CACHE", str(tmp_path / "cache"))
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / cls / "0.jpg")
    (tmp_path / "file").write_text("x")
    for out, why in ((tmp_path / "file", "not a folder"), (tmp_path / "file" / "sub", "Not a directory")):
        assert _usage_error(capsys, "bench", str(tmp_path / "data"), "--no-envs", "--contenders", "fastload",
                            "--out", str(out)) == f"fastload: error: --out {out}: {why}"
    assert not os.path.exists(tmp_path / "cache")   # nothing measured


def test_bench_threads_below_one_is_one_line(tmp_path, capsys, monkeypatch):
    """--threads -1 ran to a ZeroDivisionError traceback, and --threads 0 quietly meant every core."""
    monkeypatch.setenv("FASTLOAD_BENCH_CACHE", str(tmp_path / "cache"))
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / cls / "0.jpg")
    for n in ("-1", "0"):
        assert _usage_error(capsys, "bench", str(tmp_path / "data"), "--no-envs", "--contenders", "fastload",
                            "--threads", n, "--out", str(tmp_path / "res")) == \
            "fastload: error: --threads must be at least 1"
    assert not os.path.exists(tmp_path / "res") and not os.path.exists(tmp_path / "cache")


def test_the_suite_shows_each_progress_line_as_it_goes(monkeypatch):
    """Piped (`fastload bench | tee log`, CI) the progress lines were block-buffered: nothing showed
    until the suite ended minutes later."""
    import inspect
    import io

    class Pipe(io.StringIO):
        shown = ""

        def flush(self):
            self.shown = self.getvalue()
    pipe = Pipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    log = inspect.signature(run_suite).parameters["log"].default
    log("== rrc224: a task")
    log("  fastload 100 img/s")
    assert pipe.shown == "== rrc224: a task\n  fastload 100 img/s\n"


@pytest.mark.filterwarnings("ignore:Tight layout not applied")   # the plot of a task with one contender
def test_the_log_says_not_run_where_a_contender_was_not_run(tmp_path):
    """The scaling and memory lines printed 'torch 0' and 'torch-1 0 MB' for a torch that was not
    selected: figures that read as measured."""
    lines = []
    results = run_suite(mode="quick", out=str(tmp_path / "res"), threads=1, only=["fastload"],
                        sizes={"tasks": ("rrc64",), "small": 8, "memory": (8, 16), "runs": 1},
                        cache=str(tmp_path / "cache"), log=lines.append)
    assert results["scaling"]["torch"] == [None] and results["memory"]["torch-1"] == [None, None]
    said = [line for line in lines if line.startswith(("  1 threads: ", "  8 files: ", "  16 files: "))]
    assert len(said) == 3, lines
    for line in said:
        assert "torch not run, " in line or line.endswith("torch-1 not run"), line
        assert " 0 MB" not in line and "torch 0" not in line and "fastload not run" not in line


@pytest.mark.parametrize("n", [5, 15])
def test_the_benchmarks_data_sets_hold_n_images(tmp_path, n):
    """benchmarks/common.py wrote n // 10 images per class: --n 5 an empty set marked complete (the
    script then failed, and every later run on the cached set), --n 15 a set of 10."""
    import fastload as fl
    where = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "common.py")
    if not os.path.exists(where):
        pytest.skip("benchmarks/ is not beside these tests (an installed wheel's tests run on their own)")
    spec = importlib.util.spec_from_file_location("benchmarks_common", where)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    path = common.dataset("small", n, root=str(tmp_path))
    assert len(fl.ImageFolder(path)) == n
    assert common.dataset("small", n, root=str(tmp_path)) == path   # cached, complete


def test_readme_links_the_plot_only_where_the_run_drew_it(tmp_path):
    """Results written without matplotlib put ![throughput](.../throughput.png) into README all the
    same: a link to a missing plot, or to an earlier run's plot beside the new table."""
    results = {"meta": {"mode": "quick", "threads": 2, "runs": 3, "plots": [],
                        "machine": {"cores": 2, "cpu": "x", "load_average": [0.1, 0.1, 0.1]}},
               "tasks": [{"name": "rrc224", "results": {"fastload": {"status": "ok", "median": 100.0}},
                          "limits": {}}], "targets": []}
    out = tmp_path / "results"
    out.mkdir()
    readme = tmp_path / "README.md"
    for stale in (False, True):   # no plot at all; an earlier run's plot
        if stale:
            (out / "throughput.png").write_bytes(b"an earlier run's plot")
        (out / "results.json").write_text(json.dumps(results))
        readme.write_text("# x\n")
        assert cli.main(["bench", "--readme", str(readme), "--out", str(out)]) == 0
        assert "**100**" in readme.read_text() and "throughput.png" not in readme.read_text()
    results["meta"]["plots"] = list(report.PLOTS)
    (out / "results.json").write_text(json.dumps(results))
    assert cli.main(["bench", "--readme", str(readme), "--out", str(out)]) == 0
    assert "![throughput](results/throughput.png)" in readme.read_text()


@pytest.mark.skipif(not _batch.HAVE_LIBJPEG_TURBO, reason="the limit's own decoder needs libjpeg-turbo")
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")   # Pillow's, on the malformed block
def test_the_decode_limit_times_turned_jpegs_through_fastloads_decoder_as_the_loader_reads_them(tmp_path):
    """The loader decodes an EXIF-turned JPEG itself and turns it as it writes; only a turn that
    Pillow alone reads (XMP behind a malformed Exif block) takes the loader's Pillow route. The limit
    timed every turned file through Pillow."""
    import struct
    from fastload.bench.limits import decode_limits
    from fastload.synthetic import encode, photo_like

    def app1(data, payload):
        return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    (tmp_path / "a").mkdir()
    paths = []
    for k, orientation in enumerate((1, 3, 6, 8)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        paths.append(str(tmp_path / "a" / f"{k}.jpg"))
        Image.fromarray(photo_like(300 + 20 * k, 260, seed=k)).save(paths[-1], quality=90, exif=exif)
    xmp = app1(encode(photo_like(280, 250, seed=9), quality=90), b'http://ns.adobe.com/xap/1.0/\0<x tiff:Orientation="6"/>')
    only_pillow = app1(xmp, b"Exif\0\0II*\0\xff\xff\xff\x7f")
    paths.append(str(tmp_path / "a" / "xmp.jpg"))
    with open(paths[-1], "wb") as f:
        f.write(only_pillow)
    limits = decode_limits(paths, TASKS[0].transforms(), threads=1, runs=1)
    for lim in limits.values():
        assert lim["images"] == 5 and lim["unreadable"] == 0 and lim["pillow_images"] == 1, lim.get("first_unreadable")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_plans_box_for_a_turned_image_is_the_shown_box_in_stored_pixels(orientation):
    """What the region limit decodes of a turned JPEG: the box the plan draws on the image as shown,
    carried to the stored pixels (checked by cropping both through Pillow)."""
    from fastload import RandomCrop
    from fastload.image.field import compile_plan
    from fastload.synthetic import photo_like
    stored = Image.fromarray(photo_like(37, 53, seed=orientation))
    shown = ImageOps.exif_transpose(_with_orientation(stored.copy(), orientation))
    plan, _ = compile_plan([RandomCrop((17, 23))])
    for index in range(6):
        (x0, y0, x1, y1), size = plan.box(53, 37, 0, 0, index, orientation)
        (a0, b0, a1, b1), _ = plan.box(*shown.size, 0, 0, index)
        assert size == (17, 23) and (x1 - x0, y1 - y0) == ((17, 23) if orientation >= 5 else (23, 17))
        want = np.asarray(shown.crop((int(a0), int(b0), int(a1), int(b1))))
        got = ImageOps.exif_transpose(_with_orientation(stored.crop((int(x0), int(y0), int(x1), int(y1))), orientation))
        np.testing.assert_array_equal(np.asarray(got), want)


def _with_orientation(im, orientation):
    im.getexif()[0x0112] = orientation
    return im


def test_a_failed_environment_is_remembered_and_says_how_to_try_again(tmp_path, monkeypatch):
    """A contender whose environment failed to build reported the old failure on every later run,
    without saying it was remembered nor how to build again."""
    from fastload.bench import envs
    monkeypatch.setitem(envs.ENVS, "broken", {"pip": [str(tmp_path / "no-such-package")], "pkg_config": [],
                                              "libs": [], "apt": []})
    with pytest.raises(envs.EnvUnavailable) as first:
        envs.ensure("broken", str(tmp_path), log=lambda *a: None)
    assert "pip install" in str(first.value) and "no-such-package" in str(first.value)
    assert "remembered" not in str(first.value)
    log = []
    with pytest.raises(envs.EnvUnavailable) as again:
        envs.ensure("broken", str(tmp_path), log=log.append)
    assert log == [] and str(again.value) == (f"{first.value} (remembered from the build of "
                                              f"{tmp_path / 'venvs' / 'broken'}; `fastload bench --rebuild-envs` "
                                              "tries again)")
    with pytest.raises(envs.EnvUnavailable) as rebuilt:
        envs.ensure("broken", str(tmp_path), rebuild=True, log=log.append)
    assert str(rebuilt.value) == str(first.value) and len(log) == 1 and "building the broken environment" in log[0]


def test_an_environment_whose_shared_libraries_are_missing_says_which_and_how_to_get_them(tmp_path, monkeypatch):
    """SPDL's wheels load the system's FFmpeg: without it the contender failed inside its worker
    with SPDL's own import error, which never said what to install."""
    from fastload.bench import envs
    assert set(envs.ENVS["spdl"]["libs"]) >= {"avutil", "avcodec", "avformat", "avfilter", "avdevice"}
    present = "c"   # the C library, on every machine these tests run on
    monkeypatch.setitem(envs.ENVS, "needs-libs", {"pip": ["nothing-is-installed"], "pkg_config": [],
                                                  "libs": [present, "fastload-no-such-lib"],
                                                  "apt": ["pkg-one", "pkg-two"]})
    with pytest.raises(envs.EnvUnavailable) as e:
        envs.ensure("needs-libs", str(tmp_path), log=lambda *a: None)
    assert str(e.value) == ("shared libraries missing (libfastload-no-such-lib): "
                            "apt-get install pkg-one pkg-two")
    assert not (tmp_path / "venvs").exists()   # refused before building anything


def test_the_decode_limit_of_other_formats_names_pillows_decoders(tmp_path):
    """A folder of WebP or BMP files was timed through Pillow under the label "Pillow (zlib)"."""
    from fastload.bench.limits import decode_limits
    from fastload.synthetic import photo_like
    paths = []
    for k, fmt in enumerate(("BMP", "BMP", "TIFF")):
        paths.append(str(tmp_path / f"{k}.{fmt.lower()}"))
        Image.fromarray(photo_like(30, 40, seed=k)).save(paths[-1], fmt)
    limits = decode_limits(paths, TASKS[0].transforms(), threads=1, runs=1)
    assert list(limits) == ["full"] and limits["full"]["images"] == 3
    assert limits["full"]["decoder"] == f"Pillow {Image.__version__} (its own decoders)"


def test_shards_and_packs_made_from_a_folder_are_made_anew_when_its_images_change(tmp_path):
    # The cache was keyed by the folder and its file names only: images replaced under the same
    # names were benchmarked as the old ones by every contender reading shards or a pack.
    import tarfile

    from fastload.bench import _worker
    from fastload.synthetic import encode, photo_like
    root = tmp_path / "data" / "c"
    root.mkdir(parents=True)
    files = [(str(root / f"{i}.jpg"), 0) for i in range(3)]
    task = {"path": str(tmp_path / "data"), "dataset": "user", "batch": 2, "transform": "rrc", "size": 16}
    spec = {"cache": str(tmp_path / "cache"), "workers": 1}

    def write(seed):
        for i, (path, _) in enumerate(files):
            with open(path, "wb") as f:
                f.write(encode(photo_like(24 + 8 * seed, 24, seed=seed + i), quality=90))

    def member_bytes(shards):
        got = {}
        for shard in shards:
            with tarfile.open(shard) as tar:
                got.update({m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")})
        return [got[k] for k in sorted(got)]
    write(0)
    old = _worker._tar_shards(files, task, spec)
    write(1)
    new = _worker._tar_shards(files, task, spec)
    assert old != new and member_bytes(new) == [pathlib.Path(p).read_bytes() for p, _ in files] != member_bytes(old)
    assert _worker._tar_shards(files, task, spec) == new   # unchanged files: the same shards, not made again


def test_readme_markers_out_of_pairs_are_refused_and_the_file_left_as_it_was(suite, tmp_path, capsys):
    # A start marker with no end: the first run appended a section, the second deleted everything
    # from the stray marker to the new section's end.
    _, out, _ = suite
    readme = tmp_path / "R.md"
    for text in ("# T\n<!-- bench:start -->\nIMPORTANT\n## More\n",
                 "# T\n<!-- bench:end -->\nIMPORTANT\n<!-- bench:start -->\n",
                 "# T\n<!-- bench:start -->\n<!-- bench:end -->\nIMPORTANT\n<!-- bench:start -->\n<!-- bench:end -->\n"):
        readme.write_text(text)
        line = _usage_error(capsys, "bench", "--readme", str(readme), "--out", out)
        assert f"{readme} holds" in line and "mend them by hand" in line
        assert readme.read_text() == text


def test_a_cache_that_cannot_be_a_folder_is_one_line_before_the_run(tmp_path, capsys, monkeypatch):
    make_image_folder(tmp_path / "imgs", classes=1, per_class=2, size=(20, 24))
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FASTLOAD_BENCH_CACHE", str(tmp_path / "afile"))
    line = _usage_error(capsys, "bench", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--threads", "1")
    assert line.startswith(f"fastload: error: cache {tmp_path / 'afile'} (FASTLOAD_BENCH_CACHE): ")


def test_a_failure_carried_out_of_a_worker_process_is_reported_by_its_cause():
    from fastload.bench._worker import failure_reason
    carried = OSError("Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                      '  File "fetch.py", line 44, in fetch\n    data = self.dataset[i]\n'
                      "OSError: image file is truncated (76 bytes not processed)\n")
    assert failure_reason(carried) == "OSError: image file is truncated (76 bytes not processed)"
    assert failure_reason(ValueError("bad")) == "ValueError: bad" and failure_reason(KeyError()) == "KeyError: "
    assert len(failure_reason(RuntimeError("x" * 1000))) == 400


@pytest.mark.filterwarnings("ignore:Tight layout not applied")   # the plot of a task with one contender
def test_a_folder_of_names_that_are_not_utf8_and_of_no_jpegs_or_pngs(tmp_path, capsys, monkeypatch):
    # The report crashed writing a name that is not UTF-8 (results.md left empty, no plots); the
    # scaling figures showed the full-decode limit as a region limit never measured; a run that
    # measured nothing (every file unreadable) exited 0.
    monkeypatch.setenv("FASTLOAD_BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data" / "c"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo_like(24, 24, seed=i)).save(root / f"{i}.bmp")
    with open(os.path.join(os.fsencode(root), b"bad\xfe.bmp"), "wb") as f:
        f.write(b"BM garbage")
    out = tmp_path / "out"
    argv = ["bench", str(tmp_path / "data"), "--contenders", "fastload", "--threads", "1", "--out", str(out),
            "--no-envs"]
    assert cli.main(argv) == 0   # the corrupt file left out of every contender, and named
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["scaling"]["limit_region"] == [None] and results["scaling"]["limit_full"][0] > 0
    assert results["tasks"][0]["results"]["fastload"]["images"] == 3
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "bad\\udcfe.bmp" in md and "| limit_region | — |" in md
    for i in range(3):   # now every file is unreadable: nothing measured
        (root / f"{i}.bmp").write_bytes(b"BM garbage")
    assert cli.main(argv) == 1
    assert "no contender measured anything" in capsys.readouterr().err
    with open(out / "results.json") as f:
        assert json.load(f)["tasks"][0]["results"]["fastload"]["reason"] == "no file of the task reads"


def test_scaling_curve_thread_counts():
    """Every count up to 4, then powers of two and every core: a 16-core machine's curve is six runs
    of each contender, not sixteen."""
    from fastload.bench.suite import _thread_counts
    assert _thread_counts(1) == [1] and _thread_counts(2) == [1, 2] and _thread_counts(4) == [1, 2, 3, 4]
    assert _thread_counts(16) == [1, 2, 3, 4, 8, 16]
    assert _thread_counts(12) == [1, 2, 3, 4, 8, 12]
    assert _thread_counts(64) == [1, 2, 3, 4, 8, 16, 32, 64]
