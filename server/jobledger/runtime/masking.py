"""Masking secret values in a job's output: every injected value, and its base64 forms, is
replaced by `***` in each whole line before the line is stored or streamed.

A value is found in whole lines (the log pump splits output into lines first), so a value
printed in pieces is masked once its line is complete. Its base64 forms are found whether
the value was encoded alone or inside other bytes: for each of the three ways the value can
fall on base64's 3-byte groups, the characters that depend on the value alone are masked
(standard and URL-safe alphabets, with and without padding). Values shorter than
`MIN_MASKED_LENGTH` characters are not masked: replacing every "1" or "on" in the output
would make it unreadable and would tell where the value occurs all the same."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

#: Values shorter than this are not masked (see the module docstring).
MIN_MASKED_LENGTH = 4
MASK = "***"


def _base64_cores(value: bytes) -> set[str]:
    """The base64 text that encodes `value` wherever it falls in the encoded bytes: for
    each offset 0-2 in a 3-byte group, the run of characters that only the value's bytes
    decide; plus the padded and unpadded encodings of the value alone."""
    out: set[str] = set()
    full = base64.b64encode(value).decode()
    out |= {full, full.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value + b"\0\0").decode()
        n = len(value)
        # Character i holds bits 6i..6i+5 of the input: bytes 6i//8 .. (6i+5)//8.
        pure = [
            i
            for i in range(len(encoded))
            if (6 * i) // 8 >= offset and (6 * i + 5) // 8 < offset + n
        ]
        if pure:
            out.add(encoded[pure[0] : pure[-1] + 1])
    forms = set()
    for text in out:
        if len(text) >= MIN_MASKED_LENGTH:
            forms.add(text)
            forms.add(text.translate(str.maketrans("+/", "-_")))
    return forms


class Masker:
    """Replaces the given values (and their base64 forms) in text with `***`."""

    def __init__(self, values: Iterable[str]) -> None:
        needles: set[str] = set()
        for value in values:
            if len(value) < MIN_MASKED_LENGTH:
                continue
            needles.add(value)
            # A multi-line value is printed over several lines: mask each line of it too.
            needles |= {line for line in value.splitlines() if len(line) >= MIN_MASKED_LENGTH}
            needles |= _base64_cores(value.encode())
        # Longest first: a value containing another is masked whole.
        ordered = sorted(needles, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:
        return "Masker(***)"

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
