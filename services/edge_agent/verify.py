"""Is this file what the registry signed? Digest first (cheap, and names the problem), then signature."""

from __future__ import annotations

from pathlib import Path

from services.edge_agent.errors import VerificationFailed
from shared import signing
from shared.digests import sha256_file


def verify_artifact(path: Path, *, digest: str, signature: str, public_key_pem: str) -> None:
    """Raise VerificationFailed unless `path` has sha256 `digest` and `signature` is the registry's.

    Both checks matter: the digest catches corruption and tampering with the file, the signature
    catches a tampered desired state that names other bytes (a digest alone proves nothing about
    who chose it).
    """
    actual, _ = sha256_file(path)
    if actual != digest:
        raise VerificationFailed(f"sha256 mismatch: expected {digest}, the downloaded bytes have {actual}")
    if not signing.verify_digest(public_key_pem, digest, signature):
        raise VerificationFailed(f"the signature of sha256:{digest} does not verify with the registry's public key")
