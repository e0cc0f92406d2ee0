"""The registry's errors.

    RegistryError
    ├── Rejected              the command or request is wrong; never retried (DLQ for commands)
    │   ├── InvalidModel      not ONNX, truncated, corrupt, fails onnx.checker or onnxruntime
    │   ├── InvalidEvalSet    not an .npz, or does not fit the model's inputs
    │   ├── VersionConflict   name+version already registered with other bytes
    │   ├── ArtifactMissing   the S3 object the command points at does not exist
    │   └── NotFound          no such model, version, variant, alias or artifact
    └── Unavailable           S3 or NATS KV failed or a concurrent update raced; retry later

Only the handler layer (app.py) maps these to ack outcomes.
"""

from __future__ import annotations


class RegistryError(Exception):
    code = "registry_error"


class Rejected(RegistryError):
    code = "rejected"


class InvalidModel(Rejected):
    code = "invalid_model"


class InvalidEvalSet(Rejected):
    code = "invalid_eval_set"


class VersionConflict(Rejected):
    code = "version_conflict"

    def __init__(self, *, what: str, existing_digest: str, new_digest: str) -> None:
        super().__init__(
            f"{what} is already registered with sha256 {existing_digest}; versions are "
            f"immutable, and these bytes have sha256 {new_digest}: register them as a new version"
        )
        self.what = what


class ArtifactMissing(Rejected):
    code = "artifact_missing"


class NotFound(Rejected):
    code = "not_found"


class Unavailable(RegistryError):
    code = "unavailable"
