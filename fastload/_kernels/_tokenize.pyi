"""Type stubs for the compiled tokenizer loops (see _tokenize.pyx)."""
from typing import Sequence

import numpy as np

class WordTable:
    def __init__(self, tokens: Sequence[bytes], ids: Sequence[int] | np.ndarray) -> None: ...
    def __len__(self) -> int: ...
    def lookup(self, token: bytes, missing: int = -1) -> int: ...

def encode_words(data: bytes, lengths: np.ndarray, table: WordTable,
                 ids: np.ndarray, length: np.ndarray, mask: np.ndarray,
                 pad_id: int, unk_id: int, bos_id: int = -1, eos_id: int = -1) -> None: ...

def encode_bytes(data: bytes, lengths: np.ndarray,
                 ids: np.ndarray, length: np.ndarray, mask: np.ndarray,
                 offset: int, pad_id: int, bos_id: int = -1, eos_id: int = -1) -> None: ...
