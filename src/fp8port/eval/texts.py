"""Evaluation text: which files, and how they become a fixed, deterministic batch of tokens.

Default: the licence texts in /usr/share/common-licenses/ (on every Debian machine, so two
machines evaluate on the same words). Files are read in sorted name order, tokenized,
joined with the tokenizer's EOS, cut to `max_tokens` and split into rows of `seq_len`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

LICENSES = Path("/usr/share/common-licenses")

# Used only where the licence folder is missing (non-Debian machines); a warning says so.
FALLBACK = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
    "and associated documentation files, to deal in the software without restriction, including "
    "without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, "
    "and to sell copies of the software, and to permit persons to whom the software is furnished "
    "to do so, subject to the following conditions: the above copyright notice and this permission "
    "notice shall be included in all copies or substantial portions of the software. The software "
    "is provided as is, without warranty of any kind, express or implied, including but not limited "
    "to the warranties of merchantability, fitness for a particular purpose and noninfringement. In "
    "no event shall the authors or copyright holders be liable for any claim, damages or other "
    "liability, whether in an action of contract, tort or otherwise, arising from, out of or in "
    "connection with the software or the use or other dealings in the software."
)


@dataclass(frozen=True)
class TextBatch:
    ids: torch.Tensor  # [rows, seq_len] int64
    sources: tuple[str, ...]  # the files read (or "built-in")

    @property
    def tokens(self) -> int:
        return int(self.ids.numel())

    def describe(self) -> dict:
        return {
            "sources": list(self.sources),
            "rows": int(self.ids.shape[0]),
            "seq_len": int(self.ids.shape[1]),
            "tokens": self.tokens,
        }


def default_files() -> list[Path]:
    if not LICENSES.is_dir():
        return []
    # symlinks (GPL -> GPL-3) would repeat a text; read each file once
    return sorted(p for p in LICENSES.iterdir() if p.is_file() and not p.is_symlink())


def read_texts(files=None) -> list[tuple[str, str]]:
    """(source name, text) pairs: the given files, else the default licences, else the fallback."""
    paths = [Path(f) for f in files] if files else default_files()
    if not paths:
        print(
            f"fp8port eval: warning: {LICENSES} is absent; evaluating on a short built-in paragraph "
            "(numbers are not comparable with runs on the licence texts)",
            file=sys.stderr,
        )
        return [("built-in", FALLBACK)]
    return [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in paths]


def token_batch(tokenizer, texts: list[tuple[str, str]], max_tokens: int, seq_len: int) -> TextBatch:
    """The first `max_tokens` tokens of the texts as full rows of `seq_len` (at least one row)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    used: list[str] = []
    for name, text in texts:
        if len(ids) >= max_tokens:
            break
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        used.append(name)
    seq_len = max(2, min(seq_len, len(ids), max_tokens))
    rows = max(1, min(len(ids), max_tokens) // seq_len)
    return TextBatch(torch.tensor(ids[: rows * seq_len], dtype=torch.long).reshape(rows, seq_len), tuple(used))
