"""Tokenize against a pure-Python reference written here, plus the byte level and the kernel's contracts."""
import json
import random
import string
import threading

import numpy as np
import pytest

from fastload._kernels import _tokenize
from fastload.text.tokenize import Tokenize

WORDS = ["the", "cat", "sat", "on", "mat", "café", "naïve", "日本", "dog's"]


def reference(text, vocab, max_length, *, lower=True, strip=True, pad=0, unk=1, bos=None, eos=None):
    """The classic recipe: lower, delete punctuation, split on whitespace, dict lookup, truncate, pad."""
    if lower:
        text = text.lower()
    if strip:
        text = text.translate(str.maketrans("", "", string.punctuation))
    ids = [vocab.get(w, unk) for w in text.split()]
    room = max_length - (bos is not None) - (eos is not None)
    ids = ([bos] if bos is not None else []) + ids[:room] + ([eos] if eos is not None else [])
    return ids + [pad] * (max_length - len(ids)), len(ids)


def buffers(n, width, name="text"):
    return {name: np.full((n, width), -9, np.int32), f"{name}_length": np.full(n, -9, np.int32),
            f"{name}_mask": np.full((n, width), 9, np.uint8)}


def check_against_reference(tok, texts, vocab, **kw):
    outs = buffers(len(texts), tok.max_length, tok.name)
    assert tok.fill(texts, outs, None) == {}
    for r, text in enumerate(texts):
        ids, n = reference(text, vocab, tok.max_length, **kw)
        assert outs[tok.name][r].tolist() == ids, text
        assert outs[f"{tok.name}_length"][r] == n
        assert outs[f"{tok.name}_mask"][r].tolist() == [1] * n + [0] * (tok.max_length - n)


TEXTS = ["The cat sat on the mat.", "", "   ", "CAFÉ, naïve!! 日本\u3000dog's\u00a0cat",
         "unknown words here", "tab\tsep\nnew\x1cline\x1fend", "the " * 40, "Ünïcödé ÀÉÎ"]


def test_word_level_matches_reference_plain_list():
    tok = Tokenize(WORDS, max_length=12)
    vocab = {w: i + 2 for i, w in enumerate(WORDS)}   # a plain word list starts after pad=0, unk=1
    check_against_reference(tok, TEXTS, vocab)


def test_word_level_bos_eos_truncation_keeps_eos():
    tok = Tokenize(WORDS, max_length=6, bos_id=2, eos_id=3)
    vocab = {w: i + 4 for i, w in enumerate(WORDS)}
    check_against_reference(tok, TEXTS, vocab, bos=2, eos=3)


def test_no_lower_no_strip():
    words = ["The", "cat.", "sat"]
    tok = Tokenize(words, max_length=5, lower=False, strip=False)
    check_against_reference(tok, ["The cat. sat", "the cat sat"], {w: i + 2 for i, w in enumerate(words)},
                            lower=False, strip=False)


def test_random_texts_match_reference():
    rng = random.Random(0)
    vocab_words = sorted({"".join(rng.choices("abcdeé", k=rng.randint(1, 4))) for _ in range(300)})
    tok = Tokenize(vocab_words, max_length=16)
    alphabet = "abcdeéÉ .,!?'\t\n"
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(500)]
    check_against_reference(tok, texts, {w: i + 2 for i, w in enumerate(vocab_words)})


def test_vocab_file_with_its_own_specials_uses_line_indices(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nhello\n[UNK]\nworld\n", encoding="utf-8")
    tok = Tokenize(path, max_length=4, unk_id=2)
    outs = buffers(1, 4)
    tok.fill(["Hello, world! bye"], outs, None)
    assert outs["text"][0].tolist() == [1, 3, 2, 0]
    assert tok.vocab_size == 4


def test_vocab_file_plain_list_and_duplicates(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("hello\nworld\n", encoding="utf-8")
    assert Tokenize(path).vocab == {"hello": 2, "world": 3}
    path.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"duplicate vocabulary token 'a' in .*vocab\.txt \(lines 1 and 3\)"):
        Tokenize(path)


def test_dict_vocab_verbatim_and_vocab_built_by_prepare():
    tok = Tokenize({"x": 7}, max_length=3)
    outs = buffers(1, 3)
    tok.fill(["x y"], outs, None)
    assert outs["text"][0].tolist() == [7, 1, 0]
    built = Tokenize(max_length=4)
    built.prepare(["b a b", "c, B!", None])
    assert built.vocab == {"b": 2, "a": 3, "c": 4}
    check_against_reference(built, ["a b c d"], built.vocab)


def test_fill_without_vocabulary_is_an_error():
    with pytest.raises(RuntimeError, match="no vocabulary"):
        Tokenize().fill(["a"], buffers(1, 64), None)


def test_non_strings_are_failures_not_exceptions():
    tok = Tokenize(WORDS, max_length=4, name="caption")
    outs = buffers(3, 4, "caption")
    failures = tok.fill(["cat", None, 3.5], outs, None)
    assert failures == {1: "expected a string, got NoneType",
                        2: "expected a string, got float"}
    assert outs["caption"][0].tolist() == [3, 0, 0, 0]
    assert [o.name for o in tok.outputs()] == ["caption", "caption_length", "caption_mask"]
    assert [o.shape for o in tok.outputs()] == [(4,), (), (4,)]


def test_byte_level_exact():
    tok = Tokenize(level="byte", max_length=8, lower=False, strip=False, bos_id=2)
    texts = ["héllo wörld", "", "ab"]
    outs = buffers(3, 8)
    assert tok.fill(texts, outs, None) == {}
    for r, text in enumerate(texts):
        ids = [2] + [b + 3 for b in text.encode()][:7]
        assert outs["text"][r].tolist() == ids + [0] * (8 - len(ids))
        assert outs["text_length"][r] == len(ids)
        assert outs["text_mask"][r].tolist() == [1] * len(ids) + [0] * (8 - len(ids))
    assert tok.vocab_size == 3 + 256


def test_byte_level_default_offset_and_normalisation():
    tok = Tokenize(level="byte", max_length=4)
    outs = buffers(1, 4)
    tok.fill(["A,b"], outs, None)
    assert outs["text"][0].tolist() == [ord("a") + 2, ord("b") + 2, 0, 0]


def test_kernel_rejects_undersized_outputs():
    table = _tokenize.WordTable([b"a"], [2])
    data, lengths = b"aa", np.array([1, 1], np.int64)
    small = buffers(1, 4)
    with pytest.raises(ValueError, match="too few"):
        _tokenize.encode_words(data, lengths, table, small["text"], small["text_length"], small["text_mask"], 0, 1)
    ok = buffers(2, 4)
    with pytest.raises(ValueError, match="lengths sum past the 2 bytes data holds, at text 1"):
        _tokenize.encode_bytes(data, np.array([1, 2], np.int64), ok["text"], ok["text_length"], ok["text_mask"], 2, 0)
    with pytest.raises(ValueError, match="lengths sum to 1 bytes but data holds 2"):
        _tokenize.encode_bytes(data, np.array([1, 0], np.int64), ok["text"], ok["text_length"], ok["text_mask"], 2, 0)
    big = buffers(3, 4)   # lengths whose sum wraps around to len(data) read far outside it
    with pytest.raises(ValueError, match="lengths sum past"):
        _tokenize.encode_bytes(data, np.array([2**63 - 1, 2**63 - 1, 4], np.int64), big["text"], big["text_length"],
                               big["text_mask"], 2, 0)
    narrow = buffers(2, 1)
    with pytest.raises(ValueError, match="cannot hold"):
        _tokenize.encode_words(data, lengths, table, narrow["text"], narrow["text_length"], narrow["text_mask"],
                               0, 1, 2, 3)


def test_word_table_lookup_and_duplicates():
    table = _tokenize.WordTable(["a".encode(), "日本".encode(), b""], [5, 6, 7])
    assert table.lookup("日本".encode()) == 6 and table.lookup(b"b") == -1 and len(table) == 3
    with pytest.raises(ValueError, match="duplicate"):
        _tokenize.WordTable([b"a", b"a"], [1, 2])


def test_threads_give_the_same_rows():
    rng = random.Random(1)
    tok = Tokenize(WORDS, max_length=16)
    texts = [" ".join(rng.choices(WORDS + ["zzz"], k=rng.randint(0, 20))) for _ in range(4000)]
    expected = buffers(4000, 16)
    tok.fill(texts, expected, None)
    got = buffers(4000, 16)

    def work(lo):
        view = {k: v[lo:lo + 500] for k, v in got.items()}
        for _ in range(5):
            tok.fill(texts[lo:lo + 500], view, None)

    threads = [threading.Thread(target=work, args=(lo,)) for lo in range(0, 4000, 500)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


class FakeEncoding:
    def __init__(self, ids):
        self.ids = ids


class FakeHFTokenizer:
    """Stands in for tokenizers.Tokenizer: only encode_batch is used."""

    def encode_batch(self, texts):
        return [FakeEncoding([len(w) + 10 for w in t.split()]) for t in texts]

    def get_vocab_size(self):
        return 100


def test_hugging_face_adapter_truncates_and_pads():
    tok = Tokenize(tokenizer=FakeHFTokenizer(), max_length=3)
    outs = buffers(3, 3)
    assert tok.fill(["a bb", "a bb ccc dddd", 7], outs, None) == {2: "expected a string, got int"}
    assert outs["text"].tolist() == [[11, 12, 0], [11, 12, 13], [0, 0, 0]]
    assert outs["text_length"].tolist() == [2, 3, 0]
    assert outs["text_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [0, 0, 0]]
    assert tok.vocab_size == 100
    with pytest.raises(ValueError, match="brings its own"):
        Tokenize(WORDS, tokenizer=FakeHFTokenizer())


def test_argument_validation():
    with pytest.raises(ValueError, match="level"):
        Tokenize(level="char")
    with pytest.raises(ValueError, match="no room"):
        Tokenize(WORDS, max_length=2, bos_id=2, eos_id=3)
    with pytest.raises(ValueError, match="must differ"):
        Tokenize(WORDS, bos_id=0)
    with pytest.raises(ValueError, match="needs no vocab"):
        Tokenize(WORDS, level="byte")


# -- lone surrogates -------------------------------------------------------------------

def test_lone_surrogate_is_replaced_not_fatal():
    tok = Tokenize({"hello": 2, "world": 3, "\ufffd": 4}, max_length=5)
    texts = [json.loads('"hello \\ud83d world"'), "hello world", json.loads('"\\ud83d\\ude00 x\\udc00"')]
    outs = buffers(3, 5)
    assert tok.fill(texts, outs, None) == {}
    assert outs["text"][0].tolist() == [2, 4, 3, 0, 0]   # the surrogate became U+FFFD, a word of its own
    assert outs["text"][1].tolist() == [2, 3, 0, 0, 0]
    assert outs["text"][2].tolist() == [1, 1, 0, 0, 0]   # "😀" (a valid pair) and "x\ufffd": unknown words


def test_lone_surrogate_at_byte_level_is_the_replacement_characters_bytes():
    tok = Tokenize(level="byte", max_length=6, lower=False, strip=False)
    outs = buffers(1, 6)
    assert tok.fill(["a\ud83d"], outs, None) == {}
    assert outs["text"][0, :4].tolist() == [b + 2 for b in "a\ufffd".encode()]


def test_surrogates_in_separate_code_points_are_joined():
    tok = Tokenize(level="byte", max_length=8, lower=False, strip=False)
    outs = buffers(1, 8)
    tok.fill(["\ud83d\ude00"], outs, None)   # a pair as two code points: the one emoji's 4 bytes
    assert outs["text"][0, :4].tolist() == [b + 2 for b in "\U0001F600".encode()]


def test_vocabulary_from_texts_with_lone_surrogates():
    tok = Tokenize(max_length=4)
    tok.prepare(["ab\ud800 cd", "cd"])
    assert tok.vocab == {"cd": 2, "ab\ufffd": 3}
    outs = buffers(1, 4)
    assert tok.fill(["AB\udbff cd"], outs, None) == {}
    assert outs["text"][0].tolist() == [3, 2, 0, 0]


def test_lone_surrogate_in_a_jsonl_file_through_the_loader(tmp_path):
    from fastload.pipeline.loader import Loader
    from fastload.sources.text import JSONRecords

    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "good one"}\n{"text": "bad \\ud83d one"}\n{"text": "good two"}\n', encoding="ascii")
    tok = Tokenize(max_length=4)
    loader = Loader(JSONRecords(p), batch_size=3, fields={"text": tok})
    (batch,) = list(loader)
    assert batch["text_length"].tolist() == [2, 3, 2]
    v = tok.vocab
    assert batch["text"].tolist() == [[v["good"], v["one"], 0, 0], [v["bad"], v["\ufffd"], v["one"], 0],
                                      [v["good"], v["two"], 0, 0]]


# -- streamed vocabulary ---------------------------------------------------------------

def test_prepare_chunks_equals_prepare_and_ignores_none():
    rng = random.Random(4)
    texts = [" ".join(rng.choice(WORDS + ["Cat!", "THE"]) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    one = Tokenize()
    one.prepare(texts)
    chunks = [texts[i:i + 1024] + [None] for i in range(0, len(texts), 1024)]
    streamed = Tokenize()
    assert streamed.needs_prepare
    streamed.prepare_chunks(iter(chunks))   # a generator, as a loader passes it
    assert streamed.vocab == one.vocab and not streamed.needs_prepare
    counts = {}
    for t in texts:   # the reference: frequency then alphabetical, after the reserved ids
        for w in t.lower().translate(str.maketrans("", "", string.punctuation)).split():
            counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    assert one.vocab == {w: 2 + i for i, w in enumerate(ranked)}


def test_needs_prepare_only_for_a_word_vocabulary_to_build():
    assert Tokenize().needs_prepare
    assert not Tokenize(["a"]).needs_prepare
    assert not Tokenize(level="byte").needs_prepare
    tok = Tokenize({"a": 5})
    tok.prepare_chunks([["b c"]])   # nothing to do: the given vocabulary stays
    assert tok.vocab == {"a": 5}


@pytest.mark.parametrize("vocab", ["given", "built by prepare"])
def test_a_loader_with_a_word_vocabulary_pickles(tmp_path, vocab):
    # Loaders cross spawn and forkserver boundaries pickled; the compiled table is rebuilt on the
    # other side from the vocabulary ("no default __reduce__ due to non-trivial __cinit__" before).
    import pickle

    from fastload.pipeline.loader import Loader
    from fastload.sources.text import JSONRecords

    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    tok = Tokenize(WORDS if vocab == "given" else None, max_length=8, bos_id=2, eos_id=3)
    loader = Loader(JSONRecords(p), batch_size=3, fields={"text": tok})
    want = [b["text"].copy() for b in loader]
    again = pickle.loads(pickle.dumps(loader))
    got = [b["text"].copy() for b in again]
    assert len(got) == len(want) == 3
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.vocab == tok.vocab and copy.vocab_size == tok.vocab_size
    check_against_reference(copy, TEXTS, tok.vocab, bos=2, eos=3)


def test_a_real_hugging_face_tokenizer_padding_and_closing_token():
    # The tokenizer's own padding was counted as text, and a long text lost its [SEP] to the cut.
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "b": 5, "c": 6, "d": 7}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    texts = ["a b", "a b c d a b", "zz"]
    for side in ("right", "left"):
        tok.enable_padding(length=10, pad_id=0, pad_token="[PAD]", direction=side)
        field = Tokenize(tokenizer=tok, max_length=5, pad_id=9)
        outs = buffers(3, 5)
        assert field.fill(texts, outs, None) == {}
        assert outs["text"].tolist() == [[2, 4, 5, 3, 9], [2, 4, 5, 6, 3], [2, 1, 3, 9, 9]]
        assert outs["text_length"].tolist() == [4, 5, 3]
        assert outs["text_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # the same rows as the tokenizer's own truncation to 5
    tok.no_padding()
    tok.enable_truncation(max_length=5)
    assert [e.ids for e in tok.encode_batch(texts)] == [[2, 4, 5, 3], [2, 4, 5, 6, 3], [2, 1, 3]]
