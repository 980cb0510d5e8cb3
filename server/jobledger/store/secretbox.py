"""Encryption of secret values at rest: AES-256-GCM under one key the operator provides.

- Each ciphertext is stored with the id of the key that made it (`key_id`: 8 bytes of an
  HMAC of the key, in hex), so decrypting with another key fails naming both ids, never
  with garbage.
- The nonce is 12 random bytes, stored in front of the ciphertext.
- The associated data is the secret's project, name and version: a ciphertext copied onto
  another row does not decrypt.
- A value's fingerprint (what events carry) is an HMAC-SHA256 under a key derived from the
  main key: equal values have equal fingerprints, and nobody without the key can test a
  guess against one.

The key is 32 bytes written as base64url text, from `JOBLEDGER_SECRETS_KEY` or from the file
`JOBLEDGER_SECRETS_KEY_FILE` names."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "JOBLEDGER_SECRETS_KEY"
KEY_FILE_ENV = "JOBLEDGER_SECRETS_KEY_FILE"
_NONCE_BYTES = 12


class SecretsKeyError(Exception):
    """A secrets key could not be read (bad text, unreadable file)."""


class DecryptError(Exception):
    """A stored value could not be decrypted: another key made it, or it was altered."""


class SecretBox:
    """Encrypts and decrypts secret values under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretsKeyError(f"a secrets key is 32 bytes, this one is {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"jobledger key id", hashlib.sha256).hexdigest()[:16]
        self._fingerprint_key = hmac.new(key, b"jobledger fingerprint", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    @staticmethod
    def generate() -> bytes:
        """A new random key."""
        return AESGCM.generate_key(bit_length=256)

    def fingerprint(self, value: str) -> str:
        """A keyed digest of a value (16 hex digits), safe to record in events."""
        return hmac.new(self._fingerprint_key, value.encode(), hashlib.sha256).hexdigest()[:16]

    def encrypt(self, project: str, name: str, version: int, value: str) -> bytes:
        """Nonce and ciphertext of a value, bound to its project, name and version."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), _aad(project, name, version))

    def decrypt(self, project: str, name: str, version: int, key_id: str, data: bytes) -> str:
        """The value a ciphertext holds; `DecryptError` if another key made it or it was
        altered (never a wrong value)."""
        where = f"secret {name!r} version {version} of project {project}"
        if key_id != self.key_id:
            raise DecryptError(
                f"{where} is encrypted with key {key_id}, but this process holds key "
                f"{self.key_id}: give it the key the values were stored with (or rotate)"
            )
        try:
            plain = self._aead.decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], _aad(project, name, version)
            )
        except InvalidTag:
            raise DecryptError(
                f"{where} does not decrypt under key {self.key_id}: the stored value was "
                "altered or moved from another row"
            ) from None
        return plain.decode()


def _aad(project: str, name: str, version: int) -> bytes:
    return f"jobledger secret\x00{project}\x00{name}\x00{version}".encode()


def encode_key(key: bytes) -> str:
    """A key as the text a variable or key file holds."""
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_key(text: str, where: str) -> bytes:
    """A key from its text; `SecretsKeyError` naming `where` if it is not 32 bytes of base64url."""
    text = text.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"{where} is not base64url text") from None
    if len(key) != 32:
        raise SecretsKeyError(f"{where} holds {len(key)} bytes, a secrets key is 32")
    return key


def read_key_file(path: Path) -> SecretBox:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretsKeyError(f"cannot read the secrets key file {path}: {exc.strerror}") from None
    return SecretBox(decode_key(text, f"the secrets key file {path}"))


def box_from_env(env: Mapping[str, str] | None = None) -> SecretBox | None:
    """The box of the key the environment gives (`JOBLEDGER_SECRETS_KEY`, else the file
    `JOBLEDGER_SECRETS_KEY_FILE`), or None if it gives none."""
    env = os.environ if env is None else env
    if text := env.get(KEY_ENV):
        return SecretBox(decode_key(text, KEY_ENV))
    if path := env.get(KEY_FILE_ENV):
        return read_key_file(Path(path))
    return None


def create_key_file(path: Path) -> SecretBox:
    """Write a new random key to `path` (readable by its owner only); fails if it exists."""
    key = SecretBox.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(key) + "\n")
    return SecretBox(key)
