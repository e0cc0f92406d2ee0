"""ed25519 signatures over artifact digests.

The registry signs the ASCII string `sha256:<hex digest>` of every artifact it registers; a
device verifies it with the published public key before it loads a model, so a compromised
bucket or a man in the middle cannot make a device run bytes the registry never accepted.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def signed_message(digest: str) -> bytes:
    return f"sha256:{digest}".encode("ascii")


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the PEM key at `path`, creating it (mode 0600, atomically) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(key).__name__}, not an ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return load_or_create_private_key(path)


def sign_digest(key: Ed25519PrivateKey, digest: str) -> str:
    """Base64 signature of `sha256:<digest>`."""
    return base64.b64encode(key.sign(signed_message(digest))).decode("ascii")


def public_key_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def key_id(public_pem: str) -> str:
    """sha256 of the raw 32-byte public key: a stable name for the key."""
    raw = _load_public(public_pem).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def verify_digest(public_pem: str, digest: str, signature: str) -> bool:
    """True if `signature` is the registry's signature of `digest`."""
    try:
        _load_public(public_pem).verify(base64.b64decode(signature, validate=True), signed_message(digest))
    except (InvalidSignature, ValueError):
        return False
    return True


def _load_public(public_pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an ed25519 public key")
    return key
