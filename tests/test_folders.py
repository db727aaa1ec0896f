"""ImageFolder and ImageFiles on trees that are not clean: loops, unreadable folders, odd names, wrong layouts."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastload as fl
from fastload.sources.folders import DiscoveryWarning, ImageFiles, ImageFolder
from fastload.synthetic import encode, photo_like

JPEG = encode(photo_like(12, 16, seed=1), quality=90)


def put(path, data=JPEG):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def test_class_tree_labels_follow_sorted_class_names(tmp_path):
    files = [put(tmp_path / c / f"{i}.jpg") for c in ("b", "a", "c") for i in range(2)]
    src = ImageFolder(tmp_path)
    assert src.classes == ["a", "b", "c"] and src.skipped == []
    assert [src[i] for i in range(len(src))] == sorted((p, "abc".index(os.path.basename(os.path.dirname(p))))
                                                       for p in files)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs POSIX symbolic links")
def test_symlink_loops_are_skipped_with_a_warning_and_other_links_followed(tmp_path):
    a = put(tmp_path / "data" / "cat" / "0.jpg")
    b = put(tmp_path / "data" / "dog" / "sub" / "1.jpg")
    shared = put(tmp_path / "shared" / "2.jpg")
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "cat" / "again")   # to itself
    os.symlink(tmp_path / "data", tmp_path / "data" / "dog" / "sub" / "up")      # to an ancestor
    os.symlink(tmp_path / "shared", tmp_path / "data" / "cat" / "s1")            # not a loop: followed
    os.symlink(tmp_path / "shared", tmp_path / "data" / "dog" / "s2")            # the same folder again
    with pytest.warns(DiscoveryWarning) as record:
        src = ImageFolder(tmp_path / "data")
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2 and all("a loop" in m for m in messages)
    assert any("again" in m for m in messages) and any(os.path.join("sub", "up") in m for m in messages)
    s1, s2 = (os.path.join(tmp_path, "data", *p, "2.jpg") for p in (("cat", "s1"), ("dog", "s2")))
    assert [src[i] for i in range(len(src))] == [(a, 0), (s1, 0), (s2, 1), (b, 1)]   # sorted by path
    assert os.path.samefile(s1, shared)
    assert len(src.skipped) == 2
    with pytest.warns(DiscoveryWarning, match="a loop"):
        assert sorted(ImageFiles(tmp_path / "data").paths) == sorted([a, b, s1, s2])


def run_without_read_override(code, cwd, *args):
    """Run ``code`` in a Python child for which a mode-000 directory is really unreadable.

    Root bypasses permission bits through two capabilities; the child drops them
    (util-linux ``setpriv``), so ``os.scandir`` fails as it would for any user.
    """
    cmd = [sys.executable, "-c", textwrap.dedent(code), *map(os.fspath, args)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv to drop CAP_DAC_OVERRIDE")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__))))
    # cwd: not the checkout, whose uncompiled package `python -c` would import first
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_an_unreadable_subdirectory_is_reported_not_fatal(tmp_path):
    keep = [put(tmp_path / "cat" / "0.jpg"), put(tmp_path / "dog" / "1.jpg")]
    put(tmp_path / "dog" / "locked" / "2.jpg")
    locked = tmp_path / "dog" / "locked"
    locked.chmod(0)
    try:
        child = run_without_read_override("""
            import os, sys, warnings
            from fastload.sources.folders import DiscoveryWarning, ImageFiles, ImageFolder
            root, locked = sys.argv[1], sys.argv[2]
            try:
                os.scandir(locked)
                sys.exit("the directory is readable: the test would prove nothing")
            except PermissionError:
                pass
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                src = ImageFolder(root)
                files = ImageFiles(root)
            print(len(caught), all(issubclass(w.category, DiscoveryWarning) for w in caught))
            print(repr(str(caught[0].message)))
            print([p for p, _ in (src[i] for i in range(len(src)))], src.classes, [p for p, _ in src.skipped])
            print(list(files.paths))
            try:
                ImageFolder(root, on_error="raise")
            except OSError as e:
                print("raised", type(e).__name__, e.errno, repr(str(e)))
        """, tmp_path, tmp_path, locked)
    finally:
        locked.chmod(0o755)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "2 True"
    assert str(locked) in lines[1] and "cannot be listed" in lines[1] and "Permission denied" in lines[1]
    assert lines[2] == repr(keep) + " ['cat', 'dog'] " + repr([str(locked)])
    assert lines[3] == repr(keep)
    assert lines[4].startswith("raised PermissionError 13") and str(locked) in lines[4]


def test_a_flat_folder_of_images_points_to_image_files(tmp_path):
    for i in range(3):
        put(tmp_path / f"{i}.jpg")
    with pytest.raises(FileNotFoundError, match=r"holds 3 images but no class subfolders.*ImageFiles"):
        ImageFolder(tmp_path)
    (tmp_path / "notes").mkdir()   # a stray empty subfolder does not change the diagnosis
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        ImageFolder(tmp_path)
    assert len(ImageFiles(tmp_path)) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images with extensions"):
        ImageFolder(empty)


def test_images_beside_the_class_folders_are_left_out_with_a_warning(tmp_path, capsys):
    """A folder of images with one stray subfolder: as torchvision, only the subfolder's image is a
    sample, but the 5 images at the top were dropped without a word (by pack and demo too)."""
    for i in range(5):
        put(tmp_path / "photos" / f"img{i}.jpg")
    put(tmp_path / "photos" / "thumbs" / "t.jpg")
    root = str(tmp_path / "photos")
    with pytest.warns(DiscoveryWarning) as caught:
        src = ImageFolder(root)
    assert len(src) == 1 and len(caught) == 1
    assert str(caught[0].message) == (
        f"ImageFolder: leaving out the 5 image(s) directly in {root!r} (e.g. 'img0.jpg'): only images in "
        "class folders are samples; move them into one, or use ImageFiles for unlabeled images")
    from fastload import cli
    with pytest.warns(DiscoveryWarning, match="leaving out the 5 image"):
        assert cli.main(["pack", root, str(tmp_path / "out"), "--quiet"]) == 0
    assert "packed 1 records" in capsys.readouterr().out


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    put(tmp_path / "cat" / "0.jpg")
    put(tmp_path / "dog" / "readme.txt", b"not an image")
    (tmp_path / "emu").mkdir()
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) without images.*\['dog', 'emu'\]"):
        ImageFolder(tmp_path)
    (tmp_path / "emu").rmdir()
    with pytest.raises(FileNotFoundError, match=r"without images.*\['dog'\]"):
        ImageFolder(tmp_path)
    assert ImageFolder(tmp_path, extensions=[".jpg", "txt"]).classes == ["cat", "dog"]


def test_on_error_is_checked():
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        ImageFolder(".", on_error="ignore")


def test_a_file_name_that_is_not_utf8_keeps_messages_printable(tmp_path):
    d = os.fsencode(tmp_path / "cls")
    os.makedirs(d)
    name = os.path.join(d, b"caf\xe9.jpg")
    try:
        with open(name, "wb") as f:
            f.write(b"\xff\xd8 not a JPEG")
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    put(tmp_path / "cls" / "good.jpg")
    src = ImageFolder(tmp_path)
    assert len(src) == 2
    rid = src.record_id(0)
    assert rid.encode("utf-8") and rid.endswith("caf\\xe9.jpg")
    with pytest.raises(fl.errors.RecordError) as info:
        list(fl.Loader(src, batch_size=2, transforms=[fl.Resize((8, 8))]))
    message = str(info.value)
    message.encode("utf-8")   # printable: encoding it must not raise
    assert "caf\\xe9.jpg" in message
    loader = fl.Loader(src, batch_size=2, transforms=[fl.Resize((8, 8))], on_error="skip")
    with pytest.warns(RuntimeWarning, match=r"caf\\xe9\.jpg"):
        (x, y), = list(loader)
    assert x.shape[0] == 1 and y.tolist() == [0] and np.isfinite(x).all()
