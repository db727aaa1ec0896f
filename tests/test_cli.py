"""The fastload command: one-line errors, the demo's and doctor's reports, help text, subcommand registration."""
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import fastload as fl
from fastload.pack import pack
from fastload import cli
from fastload.synthetic import make_image_folder
from _child import HOME
from helpers import photo_like
from threadutil import new_threads


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """2 classes x 10 JPEGs, one truncated, plus a file that is not an image."""
    root = make_image_folder(tmp_path_factory.mktemp("cli") / "train", classes=2, per_class=10, size=(60, 70))
    broken = os.path.join(root, "class_000", "img_00003.jpg")
    with open(broken, "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[:len(data) // 3])
    with open(os.path.join(root, "class_001", "zz.jpg"), "wb") as f:
        f.write(b"not an image")
    return root, broken, os.path.join(root, "class_001", "zz.jpg")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastload: error: "), err
    return lines[0]


def test_user_mistakes_are_one_line(tmp_path, capsys, bad_folder):
    missing = str(tmp_path / "nope")
    for command in ("demo", "doctor"):
        assert usage_error(capsys, command, missing) == f"fastload: error: {missing}: no such file or directory"
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert "not a folder" in usage_error(capsys, "doctor", str(tmp_path / "file.jpg"))
    (tmp_path / "empty").mkdir()
    assert "the folder is empty" in usage_error(capsys, "demo", str(tmp_path / "empty"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"{i}.jpg").write_bytes(b"x")
    assert "no class subfolders; it holds 3 image(s) directly" in usage_error(capsys, "demo", str(flat))
    (tmp_path / "noimg" / "cats").mkdir(parents=True)
    (tmp_path / "noimg" / "cats" / "notes.txt").write_text("x")
    assert "no images with extensions" in usage_error(capsys, "doctor", str(tmp_path / "noimg"))
    (tmp_path / "noimg" / "dogs").mkdir()
    (tmp_path / "noimg" / "dogs" / "a.jpg").write_bytes(b"x")   # one class with an image, one without
    assert "class folder(s) without images" in usage_error(capsys, "demo", str(tmp_path / "noimg")) \
        and "['cats']" in usage_error(capsys, "demo", str(tmp_path / "noimg"))
    assert "--size must be at least 1" in usage_error(capsys, "demo", str(tmp_path / "noimg"), "--size", "0")
    out = str(tmp_path / "packed")
    assert usage_error(capsys, "pack", missing, out) == f"fastload: error: {missing}: no such file or directory"
    assert usage_error(capsys, "pack", str(tmp_path / "noimg"), out, "--shard-size", "10") == \
        "fastload: error: --shard-size must be at least 4096 bytes, got 10"
    assert "No module named 'no_such_module'" in usage_error(capsys, "pack", "no_such_module:records", out)
    assert "unknown 'blur'" in usage_error(capsys, "doctor", bad_folder[0], "--transforms", "crop,blur")
    assert "must include crop, resize or center" in usage_error(capsys, "doctor", bad_folder[0], "--transforms",
                                                                "flip")


def test_demo_reports_batch_shape_and_skipped_files(bad_folder, capsys):
    root, broken, junk = bad_folder
    code, out, err = run(capsys, "demo", root, "--size", "32", "--batch-size", "8", "--workers", "2")
    assert code == 0 and "Traceback" not in err and "RuntimeWarning" not in err
    # 21 files, 2 unreadable: batches of 8, 7 (one dropped), 4 (one dropped): the shape is the full batch's.
    assert "epoch 0: 19 images" in out
    assert "batches: (8, 3, 32, 32) float32" in out
    assert f"skipped 2 unreadable file(s):\n  {broken}: " in out and f"  {junk}: field 'image': not an image format" in out
    assert "stats()" not in out
    how = [line for line in out.splitlines() if line.startswith("for the faster linked JPEG route")]
    assert len(how) == (0 if fl.features()["libjpeg_turbo_linked"] else 1)


def test_doctor_profiles_the_users_configuration(bad_folder, capsys):
    root, broken, junk = bad_folder
    code, out, err = run(capsys, "doctor", root, "--seconds", "0.5", "--size", "24", "--batch-size", "4",
                         "--workers", "1", "--transforms", "resize,flip")
    assert code == 0 and "Traceback" not in err
    cores = os.cpu_count()
    assert f"batches of 4; 1 worker thread(s) on {cores} CPU cores" in out
    assert "images/s" in out and "ms of CPU per image" in out
    if cores > 1:
        assert f"with {cores} workers (one per core):" in out and f"workers={cores} gave" in out
    assert out.count(broken) == 1 and out.count(junk) == 1   # listed once each, however many epochs ran
    assert "2 file(s) could not be read and were skipped" in out and "checked 21 of 21 records" in out
    code, out, _ = run(capsys, "doctor", root, "--seconds", "0.2", "--size", "24", "--workers", str(cores + 2))
    assert f"{cores + 2} workers on {cores} cores" in out


def test_doctor_lists_an_image_over_pillows_bomb_guard_and_carries_on(tmp_path, capsys):
    """Pillow refuses to open a 65000x65000 header (DecompressionBombError, not an OSError): the
    run skips and lists it, and the advice that reads image sizes carries on past it."""
    root = tmp_path / "bomb"
    (root / "a").mkdir(parents=True)
    Image.fromarray(photo_like(40, 40, seed=1)).save(root / "a" / "ok.jpg")
    data = bytearray((root / "a" / "ok.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    (root / "a" / "huge.jpg").write_bytes(bytes(data))
    code, out, err = run(capsys, "doctor", str(root), "--seconds", "0.3", "--size", "24", "--workers", "1")
    assert code == 0 and "Traceback" not in err, err
    assert "huge.jpg" in out and "1 file(s) could not be read and were skipped" in out


def test_doctor_with_a_loader_file(bad_folder, tmp_path, capsys):
    root, _, _ = bad_folder
    config = tmp_path / "my_loader.py"
    config.write_text("import fastload as fl\n"
                      "def make_loader(path):\n"
                      "    return fl.Loader(fl.ImageFolder(path), batch_size=5, workers=1, layout='NHWC',\n"
                      "                     transforms=[fl.Resize((20, 20))])\n")
    code, out, _ = run(capsys, "doctor", "--config", str(config), root, "--seconds", "0.3")
    assert code == 0 and "batches of 5; 1 worker thread(s)" in out and "2 file(s) could not be read" in out
    config.write_text("loader = 3\n")
    assert "must define `loader`" in usage_error(capsys, "doctor", "--config", str(config))
    assert "no such file" in usage_error(capsys, "doctor", "--config", str(tmp_path / "none.py"))


def test_doctor_function_returns_figures(bad_folder):
    from fastload.doctor import doctor
    root, broken, _ = bad_folder
    lines, before = [], threading.enumerate()
    loader = fl.Loader(fl.ImageFolder(root), batch_size=4, workers=1, transforms=[fl.Resize((16, 16))])
    report = doctor(loader, whole_epoch=True, out=lines.append)
    assert new_threads(before) == []
    stats = loader.stats()   # 19 images read; the batch of the last record, which fails, has a stand-in
    assert stats["skipped"] == 2 and stats["batches"] == len(loader) == 6 and stats["stand_ins"] == 1
    assert report["images"] == stats["samples"] == 22 and report["workers"] == 1 and report["images_per_s"] > 0
    assert len(report["failures"]) == 2 and dict(report["failures"])[broken]   # a reason for each
    assert any(line.startswith("advice: ") for line in lines)


def test_help_is_plain_words_with_examples(capsys):
    """pack, bench and features showed no examples, and pack and bench their reST docstrings."""
    for argv in ([], ["demo"], ["doctor"], ["pack"], ["bench"], ["features"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv + ["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "``" not in out and ":class:" not in out


def test_features_prints_json(capsys):
    code, out, _ = run(capsys, "features")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(fl.features()))


def test_output_into_a_pipe_its_reader_closed_ends_quietly(bad_folder, tmp_path):
    """`fastload demo PATH | head -1`: a BrokenPipeError traceback, or 'Exception ignored ...' at exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    for argv in (["features"], ["demo", bad_folder[0], "--size", "16", "--workers", "1"],
                 ["pack", bad_folder[0], str(tmp_path / "out"), "--quiet", "--on-error", "skip"]):
        read, write = os.pipe()
        os.close(read)   # the reader is gone before the first line: every write fails
        try:
            r = subprocess.run([sys.executable, "-m", "fastload", *argv], stdout=write, stderr=subprocess.PIPE,
                               env=env, text=True, timeout=240, cwd=tmp_path)   # not a checkout's fastload
        finally:
            os.close(write)
        assert r.returncode == 1 and "BrokenPipe" not in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="told apart where a closed reader polls as an error")
def test_a_broken_pipe_other_than_standard_output_is_not_taken_for_a_reader_gone(tmp_path):
    """Every BrokenPipeError ended the command with status 1 and no word, as if a reader of the
    output had stopped: one from another pipe (a child process that died) is that failure's own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    code = ("import sys, fastload.features\n"
            "def features(): raise BrokenPipeError(32, 'the child process is gone')\n"
            "sys.modules['fastload.features'].features = features\n"
            "from fastload.cli import main\n"
            "sys.exit(main(['features']))\n")
    with open(tmp_path / "out.txt", "w") as out:
        r = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE, env=env, text=True,
                           timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.rstrip().endswith(
        "BrokenPipeError: [Errno 32] the child process is gone"), r.stderr


def test_progress_with_and_without_tqdm(monkeypatch, capsys):
    bar = cli.progress(10, "x")
    bar.update(4)
    bar.update(6)
    assert bar.n == 10 and bar.close() >= 0
    monkeypatch.setitem(sys.modules, "tqdm", None)   # as if tqdm were not installed
    bar = cli.progress(10, "x")
    assert bar.bar is None
    bar.update(10)
    assert bar.n == 10 and bar.close() >= 0
    assert capsys.readouterr().err.count("x") <= 2


def test_a_subcommand_registers_in_a_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello_cmd.py").write_text(
        "def add_parser(subparsers):\n"
        "    p = subparsers.add_parser('hello', help='say hello')\n"
        "    p.add_argument('--name', default='world')\n"
        "    return p\n"
        "def run(args):\n"
        "    print('hello', args.name)\n"
        "    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("hello_cmd", "no_such_module_xyz"))
    assert run(capsys, "hello", "--name", "you")[:2] == (0, "hello you\n")


def test_pack_names_an_image_it_cannot_re_encode_in_one_line(bad_folder, tmp_path, capsys):
    """--max-side re-encodes images: one that is not an image was a traceback ending in Pillow's
    'cannot identify image file <_io.BytesIO object at 0x...>'."""
    root, broken, junk = bad_folder
    line = usage_error(capsys, "pack", root, str(tmp_path / "out"), "--max-side", "32", "--quiet")
    assert line.startswith(f"fastload: error: {broken}: field 'image': cannot re-encode the image: OSError: "
                           "image file is truncated") and "--on-error skip" in line, line
    only_junk = tmp_path / "junk" / "a"
    only_junk.mkdir(parents=True)
    shutil.copy(junk, only_junk / "zz.jpg")
    line = usage_error(capsys, "pack", str(only_junk.parent), str(tmp_path / "out2"), "--max-side", "32", "--quiet")
    assert line.startswith(f"fastload: error: {only_junk / 'zz.jpg'}: field 'image': cannot re-encode the image: "
                           "not an image format Pillow reads (starts with b'not an i')") and "BytesIO" not in line


def test_pack_reads_an_image_folder_at_a_url(tmp_path, capsys):
    """`fastload pack http://host/train OUT` was taken for module 'http', function '//host/train'."""
    pytest.importorskip("fsspec")   # URLs are read through it (fastload[remote])
    pytest.importorskip("aiohttp")
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    root = make_image_folder(tmp_path / "www" / "train", classes=2, per_class=3, size=(20, 24))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/train"
        assert run(capsys, "pack", url, str(tmp_path / "remote"), "--quiet")[0] == 0
        assert run(capsys, "pack", str(root), str(tmp_path / "local"), "--quiet")[0] == 0
    finally:
        server.shutdown()
        server.server_close()
    remote, local = fl.PackedDataset(str(tmp_path / "remote")), fl.PackedDataset(str(tmp_path / "local"))
    assert len(remote) == len(local) == 6
    assert [remote[i] for i in range(6)] == [local[i] for i in range(6)]


def test_doctor_lists_and_demo_names_a_folder_of_which_no_file_reads(tmp_path, capsys):
    """Git LFS pointers named .jpg (a clone without `git lfs pull`): an epoch where every record
    fails raises, and doctor and demo died with that traceback, telling a command-line user to
    look at loader.stats(). Doctor lists the files; demo says in one line what is wrong."""
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.jpg").write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{i:064x}\n")
    code, out, _ = run(capsys, "doctor", str(tmp_path), "--size", "32", "--seconds", "1")
    assert code == 0 and "6 file(s) could not be read and were skipped" in out
    assert out.count("not an image format Pillow reads (starts with b'version ')") == 6
    assert "advice: not one file could be read" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", str(tmp_path), "--size", "32"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and lines[-1].startswith(f"fastload: error: {tmp_path}: none of the 6 file(s) read "
                                                      f"could be decoded (the first: {tmp_path}") \
        and "Traceback" not in "".join(lines) and lines[-1].endswith("'fastload doctor' lists them")


def test_demo_and_doctor_count_every_unreadable_file_not_the_first_thousand_listed(tmp_path, capsys):
    """stats()["failures"] lists at most 1000 a pass: demo and doctor took its length for the count,
    and doctor --all said it checked 1000 fewer records than it read."""
    make_image_folder(tmp_path / "data", classes=2, per_class=10, size=(20, 24))
    for i in range(1100):
        (tmp_path / "data" / f"class_{i % 2:03d}" / f"empty_{i:04d}.jpg").write_bytes(b"")
    code, out, _ = run(capsys, "doctor", str(tmp_path / "data"), "--size", "16", "--all", "--workers", "2")
    assert code == 0 and "1100 file(s) could not be read and were skipped" in out, out
    assert "  ... and 1050 more" in out and "checked 1120 of 1120 records" in out, out
    code, out, _ = run(capsys, "demo", str(tmp_path / "data"), "--size", "16")
    assert code == 0 and "skipped 1100 unreadable file(s):" in out and "... and 1050 more" in out, out


def test_doctor_cpu_per_image_is_cpu_time_not_time_waiting(tmp_path):
    """The figure was the workers' wall time: a fill that waits (a read, a sleep with the GIL
    released) was counted as CPU, and the ceiling doctor advises from it was too low."""
    from fastload.doctor import doctor
    from fastload.pipeline.fields import Field, Output

    class Waits(Field):
        def outputs(self):
            return [Output(self.name, (), np.dtype(np.int64))]

        def fill(self, values, outs, ctx):
            time.sleep(0.002 * len(values))   # waiting, not computing
            outs[self.name][:] = values
            return {}
    loader = fl.Loader(fl.ListSource([{"n": i} for i in range(200)]), batch_size=10, workers=2,
                       fields={"n": Waits()})
    report = doctor(loader, whole_epoch=True, out=lambda line: None)
    s = loader.stats()
    assert s["busy_s"] > 0.35 and s["cpu_s"] < 0.5 * s["busy_s"], s
    assert report["cpu_ms_per_image"] == pytest.approx(1000 * s["cpu_s"] / 200) and report["cpu_ms_per_image"] < 1.0


def test_fields_on_records_of_single_values_say_to_give_transforms():
    """fields={"image": ...} on ImageFiles (records are paths) failed every record with "missing image"."""
    with pytest.raises(ValueError, match=r"records are single values \(strs, such as 'a.jpg'\), not dicts or tuples, "
                                         r"so fields= names none of them \(got \['image'\]\): give image transforms "
                                         r"as transforms=\[\.\.\.\], or name the values with fl\.zip\(image=source\)"):
        fl.Loader(fl.ImageFiles(["a.jpg", "b.jpg"]), batch_size=1, fields={"image": [fl.Resize((8, 8))]})


def test_a_text_only_source_is_tokenized_through_the_zip_its_error_names(tmp_path):
    # The error said only "give the transforms as transforms=[...]", which refuses a Tokenize.
    (tmp_path / "t.jsonl").write_text('{"text": "hello world"}\n{"text": "hello"}\n')
    src = fl.JSONRecords(tmp_path / "t.jsonl", field="text")
    with pytest.raises(ValueError, match=r"fl\.zip\(text=source\) and keep fields=\{'text': \.\.\.\}"):
        fl.Loader(src, batch_size=2, fields={"text": fl.Tokenize(["hello", "world"])})
    batch = next(iter(fl.Loader(fl.zip(text=src), batch_size=2, fields={"text": fl.Tokenize(["hello", "world"])})))
    assert batch["text"][:, :2].tolist() == [[2, 3], [2, 0]] and batch["text_length"].tolist() == [2, 1]


def test_pack_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    """OUT an existing file, SRC empty or holding only hidden entries, a .tar that is not there, a
    module:function that returns a list: each ended in a traceback."""
    make_image_folder(tmp_path / "imgs", classes=1, per_class=1, size=(20, 24))
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_hidden" / ".ipynb_checkpoints").mkdir(parents=True)
    (tmp_path / "mysrc.py").write_text("def make():\n    return ['imgs/class_000/img_00000.jpg']\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert usage_error(capsys, "pack", "imgs", "a_file.txt", "--quiet") == \
        "fastload: error: a_file.txt: exists and is not a directory (give a new output directory)"
    for empty in ("empty", "only_hidden"):
        assert usage_error(capsys, "pack", empty, "out", "--quiet").startswith(
            f"fastload: error: {empty}: no images with extensions ('.jpg', ")
    assert usage_error(capsys, "pack", "missing.tar", "out", "--quiet").startswith(
        "fastload: error: TarShards: 1 of 1 shards cannot be read: missing.tar: ")
    assert usage_error(capsys, "pack", "mysrc:make", "out", "--quiet") == \
        "fastload: error: mysrc:make gave a list, not a fastload Source (for a list of image paths: " \
        "return fl.ImageFiles(paths))"
    for workers in ("0", "-2"):   # taken for 1 without a word, as pack(workers=...) was too
        assert usage_error(capsys, "pack", "imgs", "out", "--quiet", "--workers", workers) == \
            f"fastload: error: --workers must be at least 1, got {workers}"
        with pytest.raises(ValueError, match=rf"workers must be an integer >= 1, got {workers}"):
            pack(fl.ImageFolder("imgs"), "out", workers=int(workers), progress=False)
    assert not os.path.exists("out")


def console_script(tmp_path, *argv, cwd):
    """``fastload ARGV`` as the script pip installs runs it: sys.path[0] is its bin folder, not ``cwd``."""
    script = tmp_path / "bin" / "fastload"
    if not script.exists():
        script.parent.mkdir()
        script.write_text("import sys\nfrom fastload.cli import main\nsys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, str(script), *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_pack_imports_a_module_from_the_current_directory(tmp_path):
    """`fastload pack mysrc:make OUT` beside mysrc.py worked as `python -m fastload` and not from the
    installed command: 'No module named mysrc'."""
    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=2, size=(20, 24))
    work = tmp_path / "work"
    work.mkdir()
    (work / "mysrc.py").write_text(f"import fastload as fl\ndef make():\n    return fl.ImageFolder({root!r})\n")
    r = console_script(tmp_path, "pack", "mysrc:make", str(tmp_path / "out"), "--quiet", cwd=work)
    assert r.returncode == 0 and "packed 4 records into 1 shards" in r.stdout, r.stderr
    assert len(fl.PackedDataset(str(tmp_path / "out"))) == 4
    r = console_script(tmp_path, "pack", "othersrc:make", str(tmp_path / "out2"), "--quiet", cwd=work)
    assert r.returncode == 2 and r.stderr == (
        f"fastload: error: othersrc:make: No module named 'othersrc' (not in the current directory, {work}, "
        "nor on Python's path)\n"), r.stderr


def test_pack_takes_a_folder_whose_name_looks_like_tar_shards(tmp_path, capsys):
    """A folder named 'photos.tar.extracted' or 'set{1}' was opened as tar shards and failed."""
    for name in ("photos.tar.extracted", "set{1}"):
        root = make_image_folder(tmp_path / name, classes=2, per_class=2, size=(20, 24))
        out = str(tmp_path / ("out-" + name))
        assert run(capsys, "pack", root, out, "--quiet")[0] == 0
        assert len(fl.PackedDataset(out)) == 4


def test_a_symlink_loop_in_the_root_is_no_crash(tmp_path, capsys):
    """Links to themselves beside the class folders: ImageFolder passes over them, but demo's and
    doctor's check of the folder (and pack's) died with an OSError (too many levels of links)."""
    root = make_image_folder(tmp_path / "data", classes=1, per_class=2, size=(20, 24))
    for n in "abcdefgh":   # several, so one is listed before the class folder whatever the order
        os.symlink(n, os.path.join(root, n))
    assert run(capsys, "demo", root, "--size", "16")[0] == 0
    assert run(capsys, "doctor", root, "--size", "16", "--seconds", "0.2")[0] == 0
    assert run(capsys, "pack", root, str(tmp_path / "out"), "--quiet")[0] == 0
    assert fl.PackedDataset(str(tmp_path / "out")).classes == ["class_000"]


def test_doctor_mistakes_of_order_memory_and_config_are_one_line(bad_folder, tmp_path, capsys):
    root = bad_folder[0]
    line = usage_error(capsys, "doctor", root, "--transforms", "normalize,crop")
    assert line.startswith("fastload: error: --transforms normalize,crop: Normalize must be the last transform")
    assert usage_error(capsys, "doctor", root, "--seconds", "-1") == "fastload: error: --seconds must be more than 0"
    config = tmp_path / "cfg.py"
    config.write_text("import fastload as fl\n"
                      f"loader = fl.Loader(fl.ImageFolder({root!r}), batch_size=4, transforms=[fl.Resize((8, 8))])\n")
    assert usage_error(capsys, "doctor", "--config", str(config), "--size", "32", "--workers", "1") == \
        "fastload: error: --config builds the loader, so --size, --workers would be ignored: set them in the file"
    for command in ("demo", "doctor"):   # batch buffers past any memory: the pool's own sentence, not a traceback
        with pytest.raises(SystemExit) as e:
            cli.main([command, root, "--size", "100000", "--workers", "1"])
        out, err = capsys.readouterr()
        assert e.value.code == 1 and "Traceback" not in err, err
        last = err.strip().replace("\r", "\n").split("\n")[-1]   # after the progress bar, which clears its line
        assert last.startswith("fastload: error: ") and "use a smaller batch_size" in last, err


def test_doctor_advice_counts_the_loop_thread_and_names_an_oversized_image(tmp_path, capsys):
    root = make_image_folder(tmp_path / "train", classes=2, per_class=8, size=(40, 50))
    big = os.path.join(root, "class_001", "huge.jpg")
    Image.fromarray(photo_like(600, 800, seed=1)).save(big, quality=80)
    code, out, _ = run(capsys, "doctor", root, "--seconds", "0.3", "--size", "16", "--workers", "0")
    assert code == 0
    cores = os.cpu_count()
    if cores > 1:   # measured against every core, as for any count below it
        assert f"with {cores} workers (one per core):" in out and "of workers=0" in out, out
    assert f"advice: the largest sampled, {big}, is 800x600" in out, out
