"""Build a small CLIP tokenizer offline.

Real CLIP tokenizers come from a hub; tests and the pocket model build their own from a word list.
Every listed word becomes one token (a left-to-right chain of BPE merges ending in ``</w>``); any
other text still tokenizes, letter by letter, because every single character is in the vocabulary.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_CHARS = string.ascii_lowercase + string.digits + ",.'!?-:;()&/+"


def clip_tokenizer_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges in which each of ``words`` is a single token."""
    tokens: list[str] = [BOS, EOS]
    for c in _CHARS:
        tokens += [c, c + "</w>"]
    merges: list[tuple[str, str]] = []
    seen_merge: set[tuple[str, str]] = set()
    for word in sorted({w.lower() for w in words}):
        if len(word) < 2 or not all(c in _CHARS for c in word):
            continue
        left = word[0]
        for i in range(1, len(word)):
            right = word[i] + ("</w>" if i == len(word) - 1 else "")
            pair = (left, right)
            if pair not in seen_merge:
                seen_merge.add(pair)
                merges.append(pair)
            left = left + right
            tokens.append(left)
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def make_clip_tokenizer(words: Iterable[str], model_max_length: int = 77):
    """A ``CLIPTokenizer`` whose vocabulary holds ``words`` as whole tokens."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_tokenizer_vocab(words)
    # transformers 5.x takes the vocabulary and merges themselves; a vocab *file* argument is
    # silently ignored there, which gives a tokenizer that maps everything to one id.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length,
                         bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def save_clip_tokenizer(directory: str | Path, words: Iterable[str], model_max_length: int = 77):
    """Write a tokenizer directory loadable with ``CLIPTokenizer.from_pretrained(directory)``."""
    tok = make_clip_tokenizer(words, model_max_length)
    tok.save_pretrained(str(directory))
    return tok
