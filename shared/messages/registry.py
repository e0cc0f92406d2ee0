"""The registry's contract: its records, the commands it accepts, the events and replies it sends.

Records are what `show`/`get` return and what the `models` KV bucket holds; events carry the
record that was created so consumers need no second round trip.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen, ObjectRef
from shared.messages.envelope import Message, register_message
from shared.messages.rpc import Rpc

Name = str
Labels = dict[str, str]

# Protobuf limits a single-file ONNX model to 2 GiB; every service that reads one holds to it.
MAX_MODEL_BYTES = 2 * 1024**3 - 1


class TensorSpec(Frozen):
    """One graph input or output; symbolic dimensions keep their name, unknown ones are null."""

    name: str
    dtype: str
    shape: list[int | str | None]


class OnnxInfo(Frozen):
    """What the registry read from the ONNX file itself (never taken from the sender)."""

    ir_version: int
    opsets: dict[str, int] = Field(description="domain ('' = ai.onnx) -> opset version")
    producer: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: int = Field(ge=0, description="number of weights in initializers")
    op_types: list[str] = Field(description="distinct operator types, sorted, domain-qualified if not ai.onnx")


class Artifact(Frozen):
    """An immutable, content-addressed, signed blob in the artifact bucket."""

    digest: str = Field(pattern=SHA256_HEX)
    size_bytes: int = Field(ge=0)
    key: str
    signature: str = Field(description="base64 ed25519 signature of the ASCII string 'sha256:<digest>'")


class EvalSet(Frozen):
    """The evaluation set stored with a version: an .npz of arrays keyed by model input names."""

    digest: str = Field(pattern=SHA256_HEX)
    size_bytes: int = Field(ge=0)
    key: str
    samples: int = Field(ge=1)
    arrays: dict[str, list[int]] = Field(description="array name -> shape")


class Requirements(Frozen):
    """What a device must offer to run an artifact; the rollout service matches devices on this."""

    min_onnxruntime: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    opset: int | None = Field(default=None, ge=1)
    contrib_ops: list[str] = Field(default_factory=list)
    min_ram_mb: int | None = Field(default=None, ge=1)
    accelerators: list[str] = Field(default_factory=list)


class ModelVersionRecord(Frozen):
    name: Name = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    artifact: Artifact
    onnx: OnnxInfo
    eval_set: EvalSet | None = None
    labels: Labels = Field(default_factory=dict)
    description: str = ""
    registered_at: AwareDatetime
    command_id: str


class VariantRecord(Frozen):
    name: Name = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    variant: str = Field(pattern=NAME_PATTERN)
    parent_digest: str = Field(pattern=SHA256_HEX)
    artifact: Artifact
    onnx: OnnxInfo
    recipe: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    requirements: Requirements
    registered_at: AwareDatetime
    command_id: str


class AliasChange(Frozen):
    version: str
    previous: str | None
    at: AwareDatetime
    command_id: str


class AliasRecord(Frozen):
    name: Name
    alias: str
    version: str
    history: list[AliasChange]


class ModelDetail(Frozen):
    """A version with everything hung on it: what `model show` prints."""

    version: ModelVersionRecord
    variants: list[VariantRecord]
    aliases: list[str]


class ModelSummary(Frozen):
    name: Name
    versions: list[str]
    aliases: dict[str, str]
    latest: str | None


# --- commands -----------------------------------------------------------------------------


@register_message
class RegisterModel(Message):
    """Register version `version` of model `name` from an ONNX file already in S3.

    An object under `incoming/` in the artifact bucket is a staging upload and is deleted once
    the command is decided, whichever way; any other object is copied, never touched.
    """

    TYPE = "model.register"

    name: Name = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    artifact: ObjectRef
    eval_set: ObjectRef | None = None
    labels: Labels = Field(default_factory=dict)
    description: str = Field(default="", max_length=2000)


@register_message
class RegisterVariant(Message):
    """Register a derived artifact (quantized, pruned...) of a registered version, with lineage."""

    TYPE = "model.variant.register"

    name: Name = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    variant: str = Field(pattern=NAME_PATTERN)
    artifact: ObjectRef
    recipe: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    requirements: Requirements = Field(default_factory=Requirements)


@register_message
class SetAlias(Message):
    """Point alias `alias` (`stable`, `canary`, any name) of model `name` at `version`."""

    TYPE = "model.alias.set"

    name: Name = Field(pattern=NAME_PATTERN)
    alias: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)


# --- events -------------------------------------------------------------------------------


@register_message
class ModelRegistered(Message):
    TYPE = "model.registered"

    record: ModelVersionRecord


@register_message
class VariantRegistered(Message):
    TYPE = "variant.registered"

    record: VariantRecord


@register_message
class AliasChanged(Message):
    TYPE = "alias.changed"

    name: Name
    alias: str
    version: str
    previous: str | None


# --- requests (request/reply on slmops.rpc.registry.*) --------------------------------------


@register_message
class ListModels(Message):
    TYPE = "registry.list"

    name: Name | None = Field(default=None, pattern=NAME_PATTERN)


@register_message
class GetModel(Message):
    """Resolve `ref` (a version or an alias) of model `name` to its full detail."""

    TYPE = "registry.get"

    name: Name = Field(pattern=NAME_PATTERN)
    ref: str = Field(default="latest", pattern=VERSION_PATTERN)


@register_message
class GetAliases(Message):
    TYPE = "registry.aliases"

    name: Name = Field(pattern=NAME_PATTERN)


@register_message
class GetDownloadUrl(Message):
    """Ask for a short-lived presigned GET URL for a registered artifact (devices hold no S3 keys)."""

    TYPE = "registry.download_url"

    digest: str = Field(pattern=SHA256_HEX)


class DownloadUrl(Frozen):
    url: str
    digest: str
    size_bytes: int
    signature: str
    expires_in_seconds: int


@register_message
class GetPublicKey(Message):
    TYPE = "registry.public_key"


class PublicKey(Frozen):
    algorithm: Literal["ed25519"] = "ed25519"
    public_key_pem: str
    key_id: str = Field(description="sha256 of the raw 32-byte public key")


# --- request/reply operations ----------------------------------------------------------------

LIST_MODELS = Rpc(ListModels, list[ModelSummary])
GET_MODEL = Rpc(GetModel, ModelDetail)
GET_ALIASES = Rpc(GetAliases, list[AliasRecord])
GET_DOWNLOAD_URL = Rpc(GetDownloadUrl, DownloadUrl)
GET_PUBLIC_KEY = Rpc(GetPublicKey, PublicKey)
