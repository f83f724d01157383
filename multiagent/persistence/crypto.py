"""Encryption at rest: one AES-256-GCM key (and, during a rotation, the one before it).

The key comes from ``MULTIAGENT_ENCRYPTION_KEY`` (32 bytes written as 64 hexadecimal digits or
as base64, standard or URL-safe) or from the file named by ``MULTIAGENT_ENCRYPTION_KEY_FILE``
(the same text, or exactly 32 raw bytes). With neither set nothing is encrypted, as before.

Every encrypted blob names the key that sealed it by a *key id*: the first 8 bytes of
SHA-256 over a fixed label and the key, which identifies the key without revealing it. That is
what makes a wrong key a clear error instead of garbage, and a rotation resumable: a blob
already sealed with the new key says so, and is skipped by a rerun.

Two shapes, one cipher (``cryptography``'s :class:`AESGCM`, a fresh 96-bit nonce per blob):

- files (snapshots, backup files): ``MAGIC | key id (8) | nonce (12) | ciphertext+tag``, the
  magic and key id authenticated as associated data;
- checkpoints: LangGraph's :class:`EncryptedSerializer` with :class:`KeyringCipher`, whose
  cipher name is ``aesgcm-<key id hex>`` and whose ciphertext is ``nonce | ciphertext+tag``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from langgraph.checkpoint.serde.base import CipherProtocol, SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from multiagent.errors import UsageError

KEY_ENV = "MULTIAGENT_ENCRYPTION_KEY"
KEY_FILE_ENV = "MULTIAGENT_ENCRYPTION_KEY_FILE"
MAGIC = b"MAENC\x01"
CIPHER_PREFIX = "aesgcm-"
KEY_BYTES = 32
_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER = len(MAGIC) + _ID_BYTES
_ID_LABEL = b"multiagent.encryption-key-id\x00"
KEY_HELP = (
    f"{KEY_ENV} takes 32 bytes as 64 hex digits or base64; {KEY_FILE_ENV} names a file "
    "holding that text or 32 raw bytes"
)


@dataclass(frozen=True)
class DataKey:
    """An AES-256 key and its public id."""

    secret: bytes = field(repr=False)
    key_id: str

    @classmethod
    def from_bytes(cls, secret: bytes) -> DataKey:
        """Wrap 32 raw bytes."""
        return cls(secret, hashlib.sha256(_ID_LABEL + secret).hexdigest()[: 2 * _ID_BYTES])

    @classmethod
    def generate(cls) -> DataKey:
        """A new random key."""
        return cls.from_bytes(secrets.token_bytes(KEY_BYTES))

    def as_text(self) -> str:
        """The key as 64 hex digits, the form a key file holds."""
        return self.secret.hex()


def parse_key(text: str | bytes, *, source: str) -> DataKey:
    """Read a key written as hex or base64 (or, from a file, 32 raw bytes).

    Raises:
        UsageError: The text is not 32 bytes in either form; the message names the source and
            the length found, never the value.
    """
    if isinstance(text, bytes):
        if len(text) == KEY_BYTES:
            return DataKey.from_bytes(text)
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise UsageError(f"{source} holds {len(text)} bytes, not a key; {KEY_HELP}") from None
    stripped = text.strip()
    candidates = []
    if len(stripped) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(stripped))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(stripped + "=" * (-len(stripped) % 4)))
    for candidate in candidates:
        if len(candidate) == KEY_BYTES:
            return DataKey.from_bytes(candidate)
    raise UsageError(
        f"{source} is not a 32-byte key ({len(stripped)} characters given); {KEY_HELP}"
    )


def read_key_file(path: Path, *, source: str) -> DataKey:
    """Read a key from a file (hex, base64 or 32 raw bytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path} ({source}): {exc.strerror}") from None
    return parse_key(data, source=f"{source} ({path})")


def configured_key(environ: Mapping[str, str] | None = None) -> DataKey | None:
    """The key the environment configures, or ``None`` when encryption is off."""
    env = os.environ if environ is None else environ
    text, path = env.get(KEY_ENV), env.get(KEY_FILE_ENV)
    if text and path:
        raise UsageError(f"set {KEY_ENV} or {KEY_FILE_ENV}, not both")
    if text:
        return parse_key(text, source=KEY_ENV)
    if path:
        return read_key_file(Path(path), source=KEY_FILE_ENV)
    return None


class Keyring:
    """The key new data is sealed with, and every key whose data may still be opened.

    Args:
        primary: Seals new data; ``None`` writes plaintext.
        also: Further keys accepted when opening (the old key during a rotation).
    """

    def __init__(self, primary: DataKey | None, *, also: tuple[DataKey, ...] = ()) -> None:
        self.primary = primary
        accepted = [*also, *([primary] if primary is not None else [])]
        self.keys: dict[str, DataKey] = {k.key_id: k for k in accepted}

    @property
    def enabled(self) -> bool:
        """Whether new data is encrypted."""
        return self.primary is not None

    def _key(self, key_id: str, what: str) -> DataKey:
        key = self.keys.get(key_id)
        if key is not None:
            return key
        if not self.keys:
            raise UsageError(
                f"{what} is encrypted (key id {key_id}) and no key is configured; "
                f"set {KEY_ENV} or {KEY_FILE_ENV}"
            )
        have = ", ".join(sorted(self.keys))
        raise UsageError(
            f"{what} is encrypted with key id {key_id}, not with the configured key "
            f"(key id {have}); set {KEY_ENV} to that key, or finish an interrupted "
            "`multiagent persistence rotate-key`"
        )

    def seal(self, plaintext: bytes, *, key: DataKey | None = None) -> bytes:
        """Encrypt a file's bytes with ``key`` (default: the primary key)."""
        use = key or self.primary
        if use is None:
            raise UsageError(f"no encryption key is configured; {KEY_HELP}")
        header = MAGIC + bytes.fromhex(use.key_id)
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + AESGCM(use.secret).encrypt(nonce, plaintext, header)

    def open(self, data: bytes, *, what: str) -> bytes:
        """Decrypt a file's bytes; plaintext (no magic) comes back as it is."""
        if not is_sealed(data):
            return data
        header = data[:_HEADER]
        key = self._key(header[len(MAGIC) :].hex(), what)
        nonce, body = data[_HEADER : _HEADER + _NONCE_BYTES], data[_HEADER + _NONCE_BYTES :]
        try:
            return AESGCM(key.secret).decrypt(nonce, body, header)
        except InvalidTag:
            raise UsageError(
                f"{what} fails authentication under key id {key.key_id}: it was altered or "
                "damaged; restore it from a backup"
            ) from None

    def maybe_seal(self, plaintext: bytes) -> bytes:
        """Seal with the primary key when encryption is on, else return the plaintext."""
        return self.seal(plaintext) if self.primary is not None else plaintext

    def cipher(self) -> KeyringCipher:
        """A LangGraph cipher over this keyring (for :class:`EncryptedSerializer`)."""
        return KeyringCipher(self)


def is_sealed(data: bytes) -> bool:
    """Whether the bytes are an encrypted blob of ours."""
    return data[: len(MAGIC)] == MAGIC and len(data) > _HEADER + _NONCE_BYTES


def sealed_key_id(data: bytes) -> str | None:
    """The key id an encrypted file blob names, ``None`` for plaintext."""
    return data[len(MAGIC) : _HEADER].hex() if is_sealed(data) else None


class KeyringCipher(CipherProtocol):
    """LangGraph's cipher protocol over a :class:`Keyring`: the key id rides in the name."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        """Seal with the primary key; the cipher name carries its key id."""
        key = self.keyring.primary
        if key is None:
            raise UsageError(f"no encryption key is configured; {KEY_HELP}")
        nonce = os.urandom(_NONCE_BYTES)
        name = CIPHER_PREFIX + key.key_id
        return name, nonce + AESGCM(key.secret).encrypt(nonce, plaintext, name.encode())

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        """Open with the key the cipher name names."""
        if not ciphername.startswith(CIPHER_PREFIX):
            raise UsageError(
                f"a checkpoint is sealed with cipher {ciphername!r}; this version reads "
                f"{CIPHER_PREFIX}<key id> only"
            )
        key = self.keyring._key(ciphername[len(CIPHER_PREFIX) :], "a checkpoint")
        nonce, body = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
        try:
            return AESGCM(key.secret).decrypt(nonce, body, ciphername.encode())
        except InvalidTag:
            raise UsageError(
                f"a checkpoint fails authentication under key id {key.key_id}: the checkpoint "
                "database was altered or damaged; restore it from a backup"
            ) from None


def checkpoint_key_id(type_name: str | None) -> str | None:
    """The key id in a stored checkpoint type (``msgpack+aesgcm-<id>``), ``None`` if plain."""
    if not type_name or "+" not in type_name:
        return None
    cipher = type_name.split("+", 1)[1]
    return cipher[len(CIPHER_PREFIX) :] if cipher.startswith(CIPHER_PREFIX) else cipher


#: Checkpoint metadata keys that hold user text (the run's subject, i.e. its task or topic).
#: Metadata is stored as plain JSON for filtering, so with a key these keys are left out;
#: listings read the subject from the (encrypted) values instead.
PRIVATE_METADATA = ("subject",)


def without_private_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata minus :data:`PRIVATE_METADATA`."""
    return {k: v for k, v in metadata.items() if k not in PRIVATE_METADATA}


def private_put_args(config: Any, metadata: Any) -> tuple[Any, Any]:
    """A saver's ``put`` config and metadata with the private keys left out of both (the saver
    merges the run config's metadata into what it stores)."""
    config = {**config, "metadata": without_private_metadata(config.get("metadata") or {})}
    return config, without_private_metadata(metadata)


def checkpoint_serializer(
    keyring: Keyring, *, inner: SerializerProtocol | None = None
) -> EncryptedSerializer:
    """LangGraph's encrypted serializer sealing with the keyring's primary key what ``inner``
    (default: LangGraph's own) serializes."""
    return EncryptedSerializer(keyring.cipher(), inner or JsonPlusSerializer())


def configured_keyring(environ: Mapping[str, str] | None = None) -> Keyring:
    """The keyring of the configured key (empty, so plaintext, when none is set)."""
    return Keyring(configured_key(environ))


__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "DataKey",
    "Keyring",
    "KeyringCipher",
    "checkpoint_key_id",
    "checkpoint_serializer",
    "configured_key",
    "configured_keyring",
    "is_sealed",
    "parse_key",
    "private_put_args",
    "read_key_file",
    "sealed_key_id",
    "without_private_metadata",
]
