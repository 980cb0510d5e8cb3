"""Masking of secret values in output lines (pure): the value, and its base64 forms
however it falls on base64's groups."""

from __future__ import annotations

import base64

import pytest

from jobledger.runtime.masking import MIN_MASKED_LENGTH, Masker

SECRET = "s3cr3t-Value+/?"


def test_a_value_is_masked_anywhere_in_a_line() -> None:
    mask = Masker([SECRET])
    assert mask(f"password={SECRET};") == "password=***;"
    assert mask(f"{SECRET}{SECRET}") == "******"
    assert mask("nothing here") == "nothing here"


@pytest.mark.parametrize("before", [b"", b"a", b"ab", b"abc"])
@pytest.mark.parametrize("after", [b"", b"\n", b"zz"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_its_base64_forms_are_masked_whatever_surrounds_it(
    before: bytes, after: bytes, encode: object
) -> None:
    encoded = encode(before + SECRET.encode() + after).decode()  # type: ignore[operator]
    masked = Masker([SECRET])(encoded)
    assert "***" in masked
    # What is left could not give back more than a few bits of the value.
    assert len(masked.replace("***", "")) <= len(encode(before + after).decode()) + 4  # type: ignore[operator]
    assert masked.replace("***", "") != encoded


def test_short_values_are_not_masked_and_multi_line_values_are_masked_per_line() -> None:
    short = "x" * (MIN_MASKED_LENGTH - 1)
    assert Masker([short])(f"a {short} b") == f"a {short} b"
    assert not Masker([short])
    multi = Masker(["line-one\nline-two"])
    assert multi("line-one") == "***" and multi("then line-two") == "then ***"
    assert "s3cr3t" not in repr(Masker([SECRET]))
