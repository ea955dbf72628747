"""The character tokenizer shared by every task (one vocabulary, so a model trained on one task reads another).

Special tokens are written in text as "<PAD>", "<BOS>", "<EOS>", "<HALT>". The words "Input:", "Result:", "swap"
and "keep" are single tokens: spelled out letter by letter, the bubble-sort trace of six letters would take up to
158 tokens, over the 128-token budget of the sorting task; as words it takes at most 113. Every other token is one
character, and the vocabulary holds only the characters the tasks write (digits, A-F, space, + - ^ = < >), so
no character sequence spells a special or a word: encode(decode(ids)) == ids for every id sequence.

ORIGINAL_TOKENIZER holds the original work's 25-token vocabulary in its id order (specials, "Input:", "Result:",
digits and + - * = ^ ( ) , space): it writes parity, two-operand arithmetic and arithmetic chains (not sorting,
which the original ran with its own vocabulary), and a model built with its vocab_size has the original's exact
parameter count (the embedding and the LM head scale with the vocabulary).
"""
from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<PAD>", "<BOS>", "<EOS>", "<HALT>")
WORD_TOKENS = ("Input:", "Result:", "swap", "keep")
CHARACTERS = "0123456789ABCDEF +-^=<>"
SHARED_VOCAB: tuple[str, ...] = SPECIAL_TOKENS + WORD_TOKENS + tuple(CHARACTERS)
ORIGINAL_VOCAB: tuple[str, ...] = SPECIAL_TOKENS + ("Input:", "Result:") + tuple("0123456789+-*=^(), ")


class CharTokenizer:
    """Maps text to token ids and back; PAD is id 0.

    vocab: the tokens in id order (default SHARED_VOCAB); it must start with the four specials and hold
    "Input:" and "Result:". Tokens longer than one character (specials and words) are matched first."""

    def __init__(self, vocab: tuple[str, ...] = SHARED_VOCAB) -> None:
        if tuple(vocab[:4]) != SPECIAL_TOKENS or "Input:" not in vocab or "Result:" not in vocab:
            raise ValueError(f"vocab: expected {SPECIAL_TOKENS} first and 'Input:', 'Result:' inside, got {vocab!r}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab: tokens must be distinct")
        self.vocab: tuple[str, ...] = tuple(vocab)
        self._ids = {tok: i for i, tok in enumerate(self.vocab)}
        self._words = tuple(tok for tok in self.vocab if len(tok) > 1)
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

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (the inverse of encode); an id outside 0..vocab_size-1 raises ValueError."""
        pieces = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids: token id {i} is outside the vocabulary (size {self.vocab_size})")
            pieces.append(self.vocab[i])
        return "".join(pieces)


TOKENIZER = CharTokenizer()
ORIGINAL_TOKENIZER = CharTokenizer(ORIGINAL_VOCAB)
