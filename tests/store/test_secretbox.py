"""Secret values at rest: AES-GCM under the operator's key, bound to their row, failing
loudly (naming both key ids) under another key, never decrypting to garbage."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from jobledger.store.secretbox import (
    DecryptError,
    SecretBox,
    SecretsKeyError,
    box_from_env,
    create_key_file,
    decode_key,
    encode_key,
    read_key_file,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_a_value_goes_round_trip_and_is_not_in_its_ciphertext() -> None:
    box = SecretBox(KEY)
    sealed = box.encrypt("p", "db", 1, "hunter2-hunter2")
    assert b"hunter2" not in sealed
    assert box.decrypt("p", "db", 1, box.key_id, sealed) == "hunter2-hunter2"
    # A fresh nonce each time: equal values do not show as equal ciphertexts.
    assert box.encrypt("p", "db", 1, "hunter2-hunter2") != sealed


def test_another_key_fails_naming_both_key_ids() -> None:
    box, other = SecretBox(KEY), SecretBox(OTHER)
    sealed = box.encrypt("p", "db", 1, "v")
    assert box.key_id != other.key_id and len(box.key_id) == 16
    with pytest.raises(DecryptError) as caught:
        other.decrypt("p", "db", 1, box.key_id, sealed)
    assert box.key_id in str(caught.value) and other.key_id in str(caught.value)
    # Even if the stored key id lies, the tag does not decrypt: never a wrong value.
    with pytest.raises(DecryptError, match="does not decrypt"):
        other.decrypt("p", "db", 1, other.key_id, sealed)


@pytest.mark.parametrize(
    "where", [("q", "db", 1), ("p", "db2", 1), ("p", "db", 2)], ids=["project", "name", "version"]
)
def test_a_ciphertext_moved_to_another_row_does_not_decrypt(where: tuple[str, str, int]) -> None:
    box = SecretBox(KEY)
    sealed = box.encrypt("p", "db", 1, "v")
    with pytest.raises(DecryptError, match="altered or moved"):
        box.decrypt(*where, box.key_id, sealed)


def test_a_tampered_ciphertext_fails() -> None:
    box = SecretBox(KEY)
    sealed = bytearray(box.encrypt("p", "db", 1, "value"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        box.decrypt("p", "db", 1, box.key_id, bytes(sealed))


def test_fingerprints_are_keyed_and_stable() -> None:
    box = SecretBox(KEY)
    fp = box.fingerprint("value")
    assert fp == box.fingerprint("value") and len(fp) == 16
    assert fp != box.fingerprint("value2")
    assert fp != SecretBox(OTHER).fingerprint("value")  # nobody without the key can test a guess
    assert "value" not in repr(box) and box.key_id in repr(box)


def test_keys_come_from_the_variable_or_a_file_and_bad_ones_are_named(tmp_path: Path) -> None:
    text = encode_key(KEY)
    assert decode_key(text, "x") == KEY
    assert box_from_env({"JOBLEDGER_SECRETS_KEY": text}).key_id == SecretBox(KEY).key_id  # type: ignore[union-attr]
    assert box_from_env({}) is None
    (tmp_path / "k").write_text(text + "\n")
    env = {"JOBLEDGER_SECRETS_KEY_FILE": str(tmp_path / "k")}
    assert box_from_env(env).key_id == SecretBox(KEY).key_id  # type: ignore[union-attr]
    with pytest.raises(SecretsKeyError, match="JOBLEDGER_SECRETS_KEY holds 3 bytes"):
        box_from_env({"JOBLEDGER_SECRETS_KEY": "YWJj"})
    with pytest.raises(SecretsKeyError, match="cannot read the secrets key file"):
        read_key_file(tmp_path / "missing")


def test_a_created_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    box = create_key_file(tmp_path / "key")
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert read_key_file(tmp_path / "key").key_id == box.key_id
    with pytest.raises(FileExistsError):
        create_key_file(tmp_path / "key")  # never overwrites a key
