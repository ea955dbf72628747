"""The character tokenizer shared by every task (one vocabulary, so a model trained on one task reads another).

Special tokens are written in text as "<PAD>", "<BOS>", "<EOS>", "<HALT>"; the words "Input:", "Result:",
"swap" and "keep" are single tokens too (the sorting trace would not fit its 128-token budget spelled out);
everything else is one token per character.
"""
from __future__ import annotations

SPECIAL_TOKENS = ("<PAD>", "<BOS>", "<EOS>", "<HALT>")
WORD_TOKENS = ("Input:", "Result:", "swap", "keep")
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz +-*^=<>"


class CharTokenizer:
    """Maps text to token ids and back; PAD is id 0."""

    def __init__(self) -> None:
        self.vocab: tuple[str, ...] = SPECIAL_TOKENS + WORD_TOKENS + tuple(CHARACTERS)
        self._ids = {tok: i for i, tok in enumerate(self.vocab)}
        # Multi-character tokens, longest first, so "Result:" is never read as "R", "e", ...
        self._words = sorted(SPECIAL_TOKENS + WORD_TOKENS, key=len, reverse=True)
        self.pad_id = self._ids["<PAD>"]
        self.bos_id = self._ids["<BOS>"]
        self.eos_id = self._ids["<EOS>"]
        self.halt_id = self._ids["<HALT>"]
        self.input_id = self._ids["Input:"]
        self.result_id = self._ids["Result:"]

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (specials written as "<BOS>" etc.). Unknown characters raise ValueError."""
        ids, i = [], 0
        while i < len(text):
            word = next((w for w in self._words if text.startswith(w, i)), None)
            if word is not None:
                ids.append(self._ids[word])
                i += len(word)
                continue
            if text[i] not in self._ids:
                raise ValueError(f"text: character {text[i]!r} at position {i} is not in the vocabulary")
            ids.append(self._ids[text[i]])
            i += 1
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (the inverse of encode)."""
        try:
            return "".join(self.vocab[i] for i in ids)
        except IndexError:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"ids: token id {bad} is outside the vocabulary (size {self.vocab_size})") from None


TOKENIZER = CharTokenizer()
