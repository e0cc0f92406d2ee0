"""The registry's errors, each under its branch of the platform's root (`shared.errors`).

    SlmopsError
    └── RegistryError
        ├── Rejected                  CallerError: the command or request is wrong; never retried (DLQ)
        │   ├── InvalidModel          not ONNX, truncated, corrupt, fails onnx.checker or onnxruntime
        │   ├── InvalidEvalSet        not an .npz, does not fit the model's inputs, or decompresses too large
        │   ├── InvalidCommand        InvalidRequest: what the command would record or announce is over a cap
        │   ├── BucketNotAllowed      InvalidRequest: the command names a bucket the registry may not read
        │   ├── VersionConflict       Conflict: name+version already registered with other bytes
        │   ├── ArtifactMissing       NotFound: the S3 object the command points at does not exist
        │   └── NotFound              NotFound: no such model, version, variant, alias or artifact
        ├── Unavailable               TransientError: S3 or NATS KV failed, or a concurrent update raced
        └── BrokenRecord              (internal) a stored record no longer reads as its model: answered, never hidden

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


class InvalidCommand(Rejected, errors.InvalidRequest):
    """What the command would record or announce does not validate or is over a cap: nothing is written."""


class BucketNotAllowed(Rejected, errors.InvalidRequest):
    """The command points at a bucket outside the platform's and the operator's allow-list."""


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


class BrokenRecord(RegistryError):
    """A record in the store does not read back as its model (written by something else, or by an
    older registry): a request touching it is answered with this error, naming the key, rather
    than failing silently; `internal`, because the caller can do nothing about it."""

    def __init__(self, *, key: str, problem: str) -> None:
        super().__init__(f"the registry record {key!r} is unreadable ({problem}); an operator must repair it")
        self.key = key
