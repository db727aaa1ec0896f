"""PathTable: the compact path list behind the folder sources."""
import os
import pickle
import sys

import numpy as np
import pytest

import fastload as fl
from fastload.sources.paths import PathTable


def _paths(n, root="/data/train/"):
    return [f"{root}class_{i % 7:03d}/img_{i:06d}.jpg" for i in range(n)]


def test_behaves_as_the_list_it_replaces():
    paths = _paths(1000)
    table = PathTable([paths[:300], [], paths[300:]], prefix="/data/train/")
    assert len(table) == 1000 and list(table) == paths and table == paths
    assert table[0] == paths[0] and table[-1] == paths[-1] and table[417] == paths[417]
    assert table[10:20] == paths[10:20] and table[::-97] == paths[::-97]
    assert table.take(np.array([5, 0, 999, 5])) == [paths[5], paths[0], paths[999], paths[5]]
    assert table.take([]) == []
    for bad in (1000, -1001):
        with pytest.raises(IndexError):
            table[bad]
    with pytest.raises(IndexError):
        table.take([1000])
    assert pickle.loads(pickle.dumps(table)) == paths
    assert paths[3] in table and table.index(paths[3]) == 3


def test_names_that_are_not_utf8_round_trip():
    odd = os.fsdecode(b"/r/caf\xe9/\xff\xfe.jpg")   # surrogate-escaped, as os.scandir gives them
    table = PathTable.of(["/r/plain/a.jpg", odd, "/r/ünï/b.jpg"])
    assert table.prefix == "/r/"
    assert list(table) == ["/r/plain/a.jpg", odd, "/r/ünï/b.jpg"]
    assert os.fsencode(table[1]) == b"/r/caf\xe9/\xff\xfe.jpg"


def test_a_path_outside_the_prefix_is_refused():
    with pytest.raises(ValueError, match="does not start with the prefix"):
        PathTable([["/a/x.jpg", "/b/y.jpg"]], prefix="/a/")


def test_smaller_than_a_list_of_str():
    paths = _paths(20000)
    table = PathTable([paths], prefix="/data/train/")
    as_list = sys.getsizeof(paths) + sum(sys.getsizeof(p) for p in paths)
    assert table.nbytes() < as_list / 3, (table.nbytes(), as_list)


def test_folder_sources_hold_a_table(tmp_path):
    from PIL import Image
    for c in ("b", "a"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (4, 4)).save(tmp_path / c / f"{i}.png")
    src = fl.ImageFolder(tmp_path)
    assert isinstance(src.paths, PathTable)
    expected = [str(tmp_path / c / f"{i}.png") for c in ("a", "b") for i in range(3)]
    assert list(src.paths) == expected and src.labels().tolist() == [0, 0, 0, 1, 1, 1]
    assert src.gather(np.array([4, 1])) == [(expected[4], 1), (expected[1], 0)]
    files = fl.ImageFiles(expected[::-1])
    assert list(files.paths) == expected[::-1] and files.gather(np.array([0])) == [expected[-1]]
