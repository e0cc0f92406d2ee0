"""The registry's errors, each under its branch of the platform's root (`shared.errors`).

    SlmopsError
    └── RegistryError
        ├── Rejected                  CallerError: the command or request is wrong; never retried (DLQ)
        │   ├── InvalidModel          not ONNX, truncated, corrupt, fails onnx.checker or onnxruntime
        │   ├── InvalidEvalSet        not an .npz, or does not fit the model's inputs
        │   ├── VersionConflict       Conflict: name+version already registered with other bytes
        │   ├── ArtifactMissing       NotFound: the S3 object the command points at does not exist
        │   └── NotFound              NotFound: no such model, version, variant, alias or artifact
        └── Unavailable               TransientError: S3 or NATS KV failed, or a concurrent update raced

Only the handler layer (the service kit) maps these to ack outcomes and reply codes.
"""

from __future__ import annotations

from shared import errors


class RegistryError(errors.SlmopsError):
    """Base of the registry's errors."""


class Rejected(RegistryError, errors.CallerError):
    """The command or request cannot be applied as given."""


class InvalidModel(Rejected):
    """The file is not a valid, loadable, self-contained ONNX model."""


class InvalidEvalSet(Rejected):
    """The evaluation set is not an .npz that fits the model's inputs."""


class VersionConflict(Rejected, errors.Conflict):
    """Versions are immutable: this name and version already hold other bytes."""

    def __init__(self, *, what: str, existing_digest: str, new_digest: str) -> None:
        super().__init__(
            f"{what} is already registered with sha256 {existing_digest}; versions are "
            f"immutable, and these bytes have sha256 {new_digest}: register them as a new version"
        )
        self.what = what


class ArtifactMissing(Rejected, errors.NotFound):
    """The S3 object a command points at does not exist."""


class NotFound(Rejected, errors.NotFound):
    """No such model, version, variant, alias or artifact."""


class Unavailable(RegistryError, errors.TransientError):
    """S3 or the KV store failed, or a concurrent update won a race; retry later."""
