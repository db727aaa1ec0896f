"""Text to fixed-length int32 id rows: the :class:`Tokenize` field.

Per chunk of records, Python does what Python's string methods do best and
nothing else: lower-case, strip punctuation, encode to UTF-8 (an ASCII text
takes a ``bytes.translate`` fast path). The compiled kernel
(:mod:`fastload._kernels._tokenize`) then splits, looks every word up in a C
hash table, truncates, pads and writes the mask straight into the batch rows,
with the GIL released. Byte level skips the lookup: ids are bytes plus an offset.

Id conventions (all ids are int32):

* ``pad_id`` (default 0) fills the row after the text; ``text_mask`` is 0 there.
* ``unk_id`` (default 1) stands for a word not in the vocabulary.
* ``bos_id`` / ``eos_id`` (default none) open and close every row; ``eos`` is
  kept when a long text is truncated.
* A vocabulary *file* or *list* holds one token per line; token ids are line
  indices. If the file already carries its special tokens (``<pad>``/``[PAD]``
  at line ``pad_id`` and ``<unk>``/``[UNK]`` at line ``unk_id``, as a BERT
  vocabulary does with ``unk_id=100``) ids are exactly the line indices.
  Otherwise the file is a plain word list and its ids start after the
  reserved ids: line 0 gets ``1 + max(pad_id, unk_id, bos_id, eos_id)``
  (2 by default). In a file that carries its specials, the line at ``bos_id``
  / ``eos_id`` (if the file has that many lines) must be blank or hold that token
  (``<bos>``, ``<s>``, ``[BOS]``, ``[CLS]`` / ``<eos>``, ``</s>``, ``[EOS]``,
  ``[SEP]``): a word there would share its id with BOS/EOS, so it is an error.
* A *dict* vocabulary is used verbatim.
* ``vocab=None`` at word level builds the vocabulary in :meth:`prepare` from
  the training texts: every word, most frequent first (ties alphabetical),
  numbered after the reserved ids.
* Byte level: the id of UTF-8 byte ``b`` is ``b + 1 + max(reserved ids)``
  (``b + 2`` by default), so ids stay clear of pad and unk.

A lone surrogate (valid JSON such as ``"\\ud83d"``, common in scraped text,
decodes to one) has no UTF-8 encoding. It is replaced by U+FFFD, as a
browser's ``TextEncoder`` does, so the record keeps its other words instead of
failing; a surrogate *pair* held as two code points becomes its one character.
"""
from __future__ import annotations

import os
import string
from collections import Counter
from typing import Any, Sequence

import numpy as np

from .._optional import need
from .._kernels import _tokenize
from ..pipeline.fields import ChunkContext, Field, Output

__all__ = ["Tokenize"]

_PAD_TOKENS = ("<pad>", "[PAD]")
_UNK_TOKENS = ("<unk>", "[UNK]")
_BOS_TOKENS = ("<bos>", "<s>", "[BOS]", "[CLS]")
_EOS_TOKENS = ("<eos>", "</s>", "[EOS]", "[SEP]")
_PUNCT = string.punctuation
# str.split() also splits on these; mapping them to a space lets the kernel split on ASCII only.
_UNICODE_SPACES = {c: " " for c in range(0x80, 0x3001) if chr(c).isspace()}


def _read_vocab_file(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as f:   # a byte-order mark is not part of the first token
        return [line.rstrip("\r\n") for line in f]


def _well_formed(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (and surrogate pairs joined)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


class Tokenize(Field):
    """A text field: ``name`` (max_length,) int32 ids, ``name_length`` () int32, ``name_mask`` (max_length,) uint8.

    Args:
        vocab: path of a one-token-per-line file, a list of tokens, a dict
            token -> id, or None (built from training texts in :meth:`prepare`).
        max_length: row width, bos/eos included.
        lower: lower-case before splitting (``str.lower``).
        strip: delete ASCII punctuation (``string.punctuation``) before splitting.
        level: ``"word"`` (split on whitespace, look words up) or ``"byte"``
            (UTF-8 bytes; no vocabulary).
        tokenizer: a Hugging Face ``tokenizers.Tokenizer`` (or the path of its
            JSON file) to use instead: its ``encode_batch`` ids are truncated
            (keeping the closing special tokens, such as [SEP]) and padded here
            (its own padding left out), and its own normaliser replaces lower/strip.
        pad_id, unk_id, bos_id, eos_id: see the module docstring.
        name: output name prefix; a loader sets it to the field's key.

    A value that is not a ``str`` is reported as a failure of its record.
    """

    def __init__(self, vocab: str | os.PathLike | Sequence[str] | dict[str, int] | None = None, *,
                 max_length: int = 64, lower: bool = True, strip: bool = True, level: str = "word",
                 tokenizer: Any = None, pad_id: int = 0, unk_id: int = 1,
                 bos_id: int | None = None, eos_id: int | None = None, name: str = "text"):
        if level not in ("word", "byte"):
            raise ValueError(f"Tokenize level must be 'word' or 'byte', got {level!r}")
        specials = [i for i in (pad_id, unk_id, bos_id, eos_id) if i is not None]
        if any(not isinstance(i, (int, np.integer)) or i < 0 for i in specials):
            raise ValueError(f"special ids must be non-negative ints, got {specials}")
        if len({pad_id, bos_id, eos_id} - {None}) != 1 + (bos_id is not None) + (eos_id is not None):
            raise ValueError("pad_id, bos_id and eos_id must differ")
        n_specials = (bos_id is not None) + (eos_id is not None)
        if max_length < 1 + n_specials:
            raise ValueError(f"max_length={max_length} leaves no room for text after bos/eos")
        if tokenizer is not None and (vocab is not None or level != "word" or n_specials):
            raise ValueError("tokenizer= brings its own vocabulary and special tokens; "
                             "do not combine it with vocab, level='byte', bos_id or eos_id")
        if level == "byte" and vocab is not None:
            raise ValueError("level='byte' needs no vocab")
        self.name = name
        self.max_length = int(max_length)
        self.lower, self.strip, self.level = bool(lower), bool(strip), level
        self.pad_id, self.unk_id = int(pad_id), int(unk_id)
        self.bos_id = -1 if bos_id is None else int(bos_id)
        self.eos_id = -1 if eos_id is None else int(eos_id)
        self._first_id = 1 + max(specials)
        self._tokenizer = tokenizer
        self._delete = _PUNCT.encode() if strip else b""
        self._str_table = dict(_UNICODE_SPACES) if level == "word" else {}
        if strip:
            self._str_table.update({ord(c): None for c in _PUNCT})
        self.vocab: dict[str, int] | None = None
        self._table = None
        if vocab is not None:
            self._set_vocab(self._load_vocab(vocab))

    def __getstate__(self):
        return {**self.__dict__, "_table": None}   # the compiled table is rebuilt from the vocabulary

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.vocab is not None:
            self._set_vocab(self.vocab)

    # -- vocabulary -------------------------------------------------------
    def _load_vocab(self, vocab) -> dict[str, int]:
        if isinstance(vocab, dict):
            return {str(t): int(i) for t, i in vocab.items()}
        tokens = _read_vocab_file(os.fspath(vocab)) if isinstance(vocab, (str, os.PathLike)) else list(vocab)
        has_specials = (len(tokens) > max(self.pad_id, self.unk_id)
                        and tokens[self.pad_id] in _PAD_TOKENS and tokens[self.unk_id] in _UNK_TOKENS)
        offset = 0 if has_specials else self._first_id
        where = f" in {os.fspath(vocab)}" if isinstance(vocab, (str, os.PathLike)) else ""
        if has_specials:
            self._check_bos_eos(tokens, f"vocabulary file {os.fspath(vocab)}" if where else "vocabulary list")
        out: dict[str, int] = {}
        for line, token in enumerate(tokens):
            if not token:
                continue  # a blank line keeps its id but can never match a word
            if token in out:
                raise ValueError(f"duplicate vocabulary token {token!r}{where} "
                                 f"(lines {out[token] - offset + 1} and {line + 1})")
            out[token] = line + offset
        return out

    def _check_bos_eos(self, tokens: list[str], what: str) -> None:
        """Ids are line indices: a word on the line of bos_id/eos_id would be read as BOS/EOS."""
        for option, id_, allowed in (("bos_id", self.bos_id, _BOS_TOKENS), ("eos_id", self.eos_id, _EOS_TOKENS)):
            if 0 <= id_ < len(tokens) and tokens[id_] and tokens[id_] not in allowed:
                raise ValueError(f"{what}: line {id_ + 1} holds the word {tokens[id_]!r}, whose id {id_} "
                                 f"is also {option}={id_} (the vocabulary has its own pad/unk tokens, so its "
                                 f"ids are line indices); put a {option[:3].upper()} token ({', '.join(allowed)}) "
                                 f"on that line, or choose {option} >= {len(tokens)}, past the last line")

    def _set_vocab(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self._table = _tokenize.WordTable([t.encode() for t in vocab], np.fromiter(vocab.values(), np.int32,
                                                                                     len(vocab)))

    @property
    def vocab_size(self) -> int:
        """One more than the largest id this field can emit (the embedding table size)."""
        if self._tokenizer is not None:
            return int(self._hf().get_vocab_size())
        if self.level == "byte":
            return self._first_id + 256
        if self.vocab is None:
            raise RuntimeError("vocabulary not built yet: call prepare(training texts) or pass vocab=")
        return 1 + max([self._first_id - 1, *self.vocab.values()])

    @property
    def needs_prepare(self) -> bool:
        """True when a word-level vocabulary must be built from the training texts."""
        return self.level == "word" and self._tokenizer is None and self.vocab is None

    def prepare(self, values) -> None:
        """Build the vocabulary from the training texts when none was given: ``prepare_chunks([values])``."""
        self.prepare_chunks([values])

    def prepare_chunks(self, chunks) -> None:
        """Build the vocabulary from chunks of texts, counting words chunk by chunk.

        Values that are not strings (None for a record a loader could not read) are left out.
        """
        if not self.needs_prepare:
            return
        counts: Counter[str] = Counter()
        for chunk in chunks:
            # one normalise and split per chunk: a space between texts splits exactly as the texts would alone
            counts.update(self.normalise(" ".join(v for v in chunk if isinstance(v, str))).split())
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        self._set_vocab({w: self._first_id + i for i, w in enumerate(ranked)})

    # -- text -> ids --------------------------------------------------------
    def normalise(self, text: str) -> str:
        """The text as the kernel sees it: lower-cased, punctuation deleted, other whitespace as spaces."""
        if self.lower:
            text = text.lower()
        text = text.translate(self._str_table)
        return text if text.isascii() else _well_formed(text)

    def _encode(self, text: str) -> bytes:
        if self.lower:
            text = text.lower()
        if text.isascii():
            return text.encode("ascii").translate(None, self._delete)
        text = text.translate(self._str_table)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return _well_formed(text).encode("utf-8")

    def outputs(self) -> list[Output]:
        return [Output(self.name, (self.max_length,), np.dtype(np.int32)),
                Output(f"{self.name}_length", (), np.dtype(np.int32)),
                Output(f"{self.name}_mask", (self.max_length,), np.dtype(np.uint8))]

    def fill(self, values: Sequence[Any], outs: dict[str, np.ndarray], ctx: ChunkContext | None = None) -> dict[int, str]:
        ids, length, mask = outs[self.name], outs[f"{self.name}_length"], outs[f"{self.name}_mask"]
        failures: dict[int, str] = {}
        texts = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                texts.append(v)
            else:
                failures[i] = f"expected a string, got {type(v).__name__}"   # the Loader names the field
                texts.append("")
        if self._tokenizer is not None:
            self._fill_hf(texts, ids, length, mask)
            return failures
        encoded = [self._encode(t) for t in texts]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        if self.level == "byte":
            _tokenize.encode_bytes(data, lengths, ids, length, mask, self._first_id, self.pad_id,
                                   self.bos_id, self.eos_id)
        else:
            if self._table is None:
                raise RuntimeError(f"Tokenize({self.name!r}) has no vocabulary: pass vocab= or call prepare()")
            _tokenize.encode_words(data, lengths, self._table, ids, length, mask, self.pad_id, self.unk_id,
                                   self.bos_id, self.eos_id)
        return failures

    # -- Hugging Face adapter -------------------------------------------------
    def _hf(self):
        if isinstance(self._tokenizer, (str, os.PathLike)):
            tokenizers = need("tokenizers", "Tokenize(tokenizer=<a tokenizer.json path>)", "fastload[hf]")
            self._tokenizer = tokenizers.Tokenizer.from_file(os.fspath(self._tokenizer))
        return self._tokenizer

    def _fill_hf(self, texts: list[str], ids: np.ndarray, length: np.ndarray, mask: np.ndarray) -> None:
        n = len(texts)
        if ids.shape[0] < n or length.shape[0] < n or mask.shape[0] < n:
            raise ValueError(f"output rows too few for {n} texts")
        ids[:n] = self.pad_id
        mask[:n] = 0
        for r, enc in enumerate(self._hf().encode_batch([_well_formed(t) for t in texts])):
            row = _hf_row(enc, self.max_length)
            k = len(row)
            ids[r, :k] = row
            mask[r, :k] = 1
            length[r] = k


def _hf_row(enc, max_length: int) -> list[int]:
    """The ids of a Hugging Face ``Encoding`` as a row of at most ``max_length``: the tokenizer's own
    padding (attention mask 0, on either side) left out, as this field pads with its own pad_id; cut
    to length, the special tokens that close the sequence ([SEP], </s>) are kept, as the tokenizer's
    own truncation keeps them."""
    ids = list(enc.ids)
    attention = getattr(enc, "attention_mask", None)
    special = getattr(enc, "special_tokens_mask", None)
    if attention is not None and len(attention) == len(ids) and not all(attention):
        ids = [t for t, a in zip(ids, attention) if a]
        special = special and [s for s, a in zip(special, attention) if a]
    if len(ids) <= max_length:
        return ids
    closing = 0
    if special is not None and len(special) == len(ids):
        while closing < len(ids) and special[len(ids) - 1 - closing]:
            closing += 1
    closing = min(closing, max_length - 1)   # a row of nothing but closing tokens says nothing
    return ids[:max_length - closing] + ids[len(ids) - closing:]
