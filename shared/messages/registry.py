"""The registry's contract: its records, the commands it accepts, the events and replies it sends.

Records are what `show`/`get` return and what the `models` KV bucket holds; events carry the
record that was created so consumers need no second round trip.

**Bounded by construction.** Every field that can grow has a cap here (`MAX_*`), so no record,
event or `get` reply can outgrow NATS's default 1 MiB `max_payload`: a command that is over a cap
is refused when it is decoded, with a message naming the field, instead of writing a record the
registry then cannot announce. The caps multiply out to `MAX_RECORD_BYTES` (128 KiB) per record
and `MAX_EVENT_BYTES` per event; `tests/unit/registry/test_limits.py` builds a record with every
field at its cap, in the characters that encode longest, and checks it. Text that comes from users
or files may not hold control characters (they expand sixfold in JSON and rewrite terminals);
numbers must be finite (JSON has no NaN: a NaN metric would be stored as `null` and the record
would no longer read back).

**Versions and aliases cannot be confused**: a version starts with a digit (`1.0.0`, `2`,
`2024-06-01`), an alias with a lower-case letter (`stable`, `canary-eu`), and `latest` is neither:
it always means the newest version. So a reference (`registry.get`'s `ref`) is resolved by its
syntax alone, and no version can shadow an alias.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field, JsonValue, WithJsonSchema

from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen, ObjectRef
from shared.messages.device import OutputMoments
from shared.messages.envelope import ID_PATTERN, Message, register_message
from shared.messages.rpc import Rpc

Name = str

# Protobuf limits a single-file ONNX model to 2 GiB; every service that reads one holds to it.
MAX_MODEL_BYTES = 2 * 1024**3 - 1

# --- caps -------------------------------------------------------------------------------------
# Each is generous for the models this platform serves (embedders and classifiers of a few inputs)
# and small enough that the worst case of all of them together fits MAX_RECORD_BYTES.

MAX_RECORD_BYTES = 128 * 1024  # one record's JSON, in the KV bucket and inside its event
MAX_EVENT_BYTES = MAX_RECORD_BYTES + 4 * 1024  # a registration event on the wire: record + envelope
MAX_DETAIL_BYTES = 768 * 1024  # a `registry.get` reply (a version, its variants, its aliases)
MAX_LABELS = 32
MAX_LABEL_VALUE_BYTES = 128
MAX_DESCRIPTION_CHARS = 2000
MAX_DESCRIPTION_BYTES = 4096
MAX_RECIPE_BYTES = 8 * 1024
MAX_RECIPE_DEPTH = 8
MAX_METRICS = 64
MAX_OPSET_DOMAINS = 16
MAX_OP_TYPES = 128  # distinct operator types in one model (ai.onnx has ~200, a model uses a few dozen)
MAX_TENSORS = 64  # graph inputs, and graph outputs, each
MAX_RANK = 8
MAX_EVAL_SET_ARRAYS = MAX_TENSORS
MAX_ACCELERATORS = 16
MAX_VARIANTS_PER_VERSION = 16
MAX_EVAL_OUTPUT_ROWS = 256  # evaluation rows the registry runs a model on to describe its outputs
MAX_ALIASES_PER_MODEL = 32
MAX_ALIAS_HISTORY = 32  # changes kept in an alias record; every change is also an `alias.changed` event
MAX_INT = 2**63 - 1  # what an int64 holds; bigger integers are refused, not stored in 1000 digits

LATEST = "latest"
VERSION_RULE = r"^[0-9][A-Za-z0-9_.\-]{0,62}$"
ALIAS_RULE = r"^[a-z][a-z0-9_\-]{0,62}$"
# Printable ASCII without `"` and `\`, which JSON would escape: what ONNX names are in practice
# (its IR spec asks for C identifiers) and one byte each on the wire.
_SAFE_ASCII = r" !#-\[\]-~"
TENSOR_NAME_PATTERN = rf"^[{_SAFE_ASCII}]{{1,128}}$"
DIM_PARAM_PATTERN = rf"^[{_SAFE_ASCII}]{{1,32}}$"
PRODUCER_PATTERN = rf"^[{_SAFE_ASCII}]{{0,128}}$"
OP_TYPE_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
DOMAIN_PATTERN = r"^[A-Za-z0-9_.\-]{0,64}$"
DTYPE_PATTERN = r"^[a-z0-9_]{1,16}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"
METRIC_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
ACCELERATOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$"
SIGNATURE_PATTERN = rf"^[{_SAFE_ASCII}]{{1,128}}$"  # base64 of 64 bytes is 88
KEY_PATTERN = rf"^[{_SAFE_ASCII}]{{1,256}}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _version(value: str) -> str:
    if value == LATEST or not re.fullmatch(VERSION_RULE, value):
        raise ValueError(
            "a version starts with a digit (e.g. 1.0.0) and has at most 63 of A-Z a-z 0-9 _ . -; "
            "a name that starts with a letter is an alias, and 'latest' means the newest version"
        )
    return value


def _alias(value: str) -> str:
    if value == LATEST:
        raise ValueError("'latest' is reserved: it always means the newest version, it cannot be set")
    if not re.fullmatch(ALIAS_RULE, value):
        raise ValueError(
            "an alias starts with a lower-case letter (e.g. stable) and has at most 63 of a-z 0-9 _ -; "
            "a name that starts with a digit is a version"
        )
    return value


def _label_value(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("a label value may not contain control characters")
    if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
        raise ValueError(f"a label value is at most {MAX_LABEL_VALUE_BYTES} bytes of UTF-8")
    return value


def _description(value: str) -> str:
    if _CONTROL_BUT_NEWLINE_TAB.search(value):
        raise ValueError("the description may not contain control characters other than newline and tab")
    if len(value.encode()) > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"the description is at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8")
    return value


def _recipe(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    _check_json(value, depth=1, where="recipe")
    size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    if size > MAX_RECIPE_BYTES:
        raise ValueError(f"the recipe is {size} bytes as JSON; the limit is {MAX_RECIPE_BYTES}")
    return value


def _check_json(value: JsonValue, *, depth: int, where: str) -> None:
    """Finite numbers only, nested at most MAX_RECIPE_DEPTH deep (a recipe is a small config)."""
    if depth > MAX_RECIPE_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_RECIPE_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds {value}: numbers must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ValueError(f"{where} holds an integer outside int64")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, depth=depth + 1, where=f"{where}.{key}"[:200])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, depth=depth + 1, where=f"{where}[{i}]"[:200])


def _schema(pattern: str, description: str, **extra: object) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description, **extra})


Version = Annotated[
    str,
    AfterValidator(_version),
    _schema(VERSION_RULE, "starts with a digit; a name starting with a letter is an alias", maxLength=63),
]
Alias = Annotated[
    str,
    AfterValidator(_alias),
    _schema(ALIAS_RULE, "starts with a lower-case letter; 'latest' is reserved", maxLength=63),
]
StoredVersion = Annotated[str, Field(pattern=VERSION_PATTERN)]  # as read back (records predate the rule)
Int64 = Annotated[int, Field(ge=-MAX_INT - 1, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_BYTES), AfterValidator(_label_value)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS), AfterValidator(_description)]
MetricKey = Annotated[str, Field(pattern=METRIC_KEY_PATTERN)]
Metrics = Annotated[dict[MetricKey, FiniteFloat], Field(max_length=MAX_METRICS)]
Recipe = Annotated[dict[str, JsonValue], AfterValidator(_recipe)]
OpType = Annotated[str, Field(pattern=OP_TYPE_PATTERN)]
TensorName = Annotated[str, Field(pattern=TENSOR_NAME_PATTERN)]
CommandId = Annotated[str, Field(pattern=ID_PATTERN)]
Shape = Annotated[list[Annotated[int, Field(ge=0, le=MAX_INT)]], Field(max_length=MAX_RANK)]


class TensorSpec(Frozen):
    """One graph input or output; symbolic dimensions keep their name, unknown ones are null."""

    name: TensorName
    dtype: str = Field(pattern=DTYPE_PATTERN)
    shape: list[Int64 | Annotated[str, Field(pattern=DIM_PARAM_PATTERN)] | None] = Field(max_length=MAX_RANK)


class OnnxInfo(Frozen):
    """What the registry read from the ONNX file itself (never taken from the sender)."""

    ir_version: int = Field(ge=0, le=MAX_INT)
    opsets: dict[Annotated[str, Field(pattern=DOMAIN_PATTERN)], Count] = Field(
        max_length=MAX_OPSET_DOMAINS, description="domain ('' = ai.onnx) -> opset version"
    )
    producer: str = Field(default="", pattern=PRODUCER_PATTERN)
    inputs: list[TensorSpec] = Field(max_length=MAX_TENSORS)
    outputs: list[TensorSpec] = Field(max_length=MAX_TENSORS)
    parameters: Count = Field(description="number of weights in initializers")
    op_types: list[OpType] = Field(
        max_length=MAX_OP_TYPES, description="distinct operator types, sorted, domain-qualified if not ai.onnx"
    )


class Artifact(Frozen):
    """An immutable, content-addressed, signed blob in the artifact bucket."""

    digest: str = Field(pattern=SHA256_HEX)
    size_bytes: Count
    key: str = Field(pattern=KEY_PATTERN)
    signature: str = Field(
        pattern=SIGNATURE_PATTERN, description="base64 ed25519 signature of the ASCII string 'sha256:<digest>'"
    )


class EvalSet(Frozen):
    """The evaluation set stored with a version: an .npz of arrays keyed by model input names."""

    digest: str = Field(pattern=SHA256_HEX)
    size_bytes: Count
    key: str = Field(pattern=KEY_PATTERN)
    samples: int = Field(ge=1, le=MAX_INT)
    arrays: dict[TensorName, Shape] = Field(max_length=MAX_EVAL_SET_ARRAYS, description="array name -> shape")


class EvalOutputs(Frozen):
    """What an artifact's first output looks like on its version's evaluation set, measured by the
    registry: the moments devices report of the outputs they serve (`shared.output_statistics`),
    over the set's first `rows` rows, one row per run as on a device.

    The telemetry service holds a fleet's outputs against this (drift from the data the model was
    validated on), before the fleet's own first windows could serve as a reference.
    """

    rows: int = Field(ge=1, le=MAX_EVAL_OUTPUT_ROWS)
    output: TensorName = Field(description="the model output the moments describe (its first)")
    outputs: dict[Literal["norm", "value"], OutputMoments] = Field(
        max_length=2, description="as TelemetryWindow.outputs: the rows' L2 norms and their values"
    )


class Requirements(Frozen):
    """What a device must offer to run an artifact; the rollout service matches devices on this."""

    min_onnxruntime: str | None = Field(default=None, pattern=r"^\d{1,4}\.\d{1,4}(\.\d{1,4})?$")
    opset: int | None = Field(default=None, ge=1, le=10_000)
    contrib_ops: list[OpType] = Field(default_factory=list, max_length=MAX_OP_TYPES)
    min_ram_mb: int | None = Field(default=None, ge=1, le=2**40)
    accelerators: list[Annotated[str, Field(pattern=ACCELERATOR_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_ACCELERATORS
    )


class ModelVersionRecord(Frozen):
    name: Name = Field(pattern=NAME_PATTERN)
    version: StoredVersion
    artifact: Artifact
    onnx: OnnxInfo
    eval_set: EvalSet | None = None
    eval_outputs: EvalOutputs | None = Field(
        default=None, description="the model's outputs on `eval_set`; none without one (or for records before it)"
    )
    labels: Labels = Field(default_factory=dict)
    description: Description = ""
    registered_at: AwareDatetime
    command_id: CommandId


class VariantRecord(Frozen):
    name: Name = Field(pattern=NAME_PATTERN)
    version: StoredVersion
    variant: str = Field(pattern=NAME_PATTERN)
    parent_digest: str = Field(pattern=SHA256_HEX)
    artifact: Artifact
    onnx: OnnxInfo
    recipe: Recipe = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    requirements: Requirements
    eval_outputs: EvalOutputs | None = Field(
        default=None, description="the variant's outputs on its version's evaluation set; none without one"
    )
    registered_at: AwareDatetime
    command_id: CommandId

    @property
    def profile(self) -> str | None:
        """The optimization profile the optimizer built this variant with (its recipe names it);
        None for a variant registered from elsewhere."""
        value = self.recipe.get("profile")
        return value if isinstance(value, str) else None


class AliasChange(Frozen):
    version: StoredVersion
    previous: StoredVersion | None
    at: AwareDatetime
    command_id: CommandId


class AliasRecord(Frozen):
    name: Name = Field(pattern=NAME_PATTERN)
    alias: str = Field(pattern=NAME_PATTERN)
    version: StoredVersion
    history: list[AliasChange] = Field(
        max_length=MAX_ALIAS_HISTORY, description="the latest changes, oldest first; the events keep them all"
    )


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
    the command is decided, whichever way; any other object is copied, never touched. Objects are
    read only from the platform's bucket and the buckets the registry's operator allow-lists.
    """

    TYPE = "model.register"

    name: Name = Field(pattern=NAME_PATTERN)
    version: Version
    artifact: ObjectRef
    eval_set: ObjectRef | None = None
    labels: Labels = Field(default_factory=dict)
    description: Description = ""


@register_message
class RegisterVariant(Message):
    """Register a derived artifact (quantized, pruned...) of a registered version, with lineage."""

    TYPE = "model.variant.register"

    name: Name = Field(pattern=NAME_PATTERN)
    version: Version
    variant: str = Field(pattern=NAME_PATTERN)
    artifact: ObjectRef
    recipe: Recipe = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    requirements: Requirements = Field(default_factory=Requirements)


@register_message
class SetAlias(Message):
    """Point alias `alias` (`stable`, `canary`: a name that starts with a letter) of model `name` at `version`."""

    TYPE = "model.alias.set"

    name: Name = Field(pattern=NAME_PATTERN)
    alias: Alias
    version: Version


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

    name: Name = Field(pattern=NAME_PATTERN)
    alias: str = Field(pattern=NAME_PATTERN)
    version: StoredVersion
    previous: StoredVersion | None


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
GET_DOWNLOAD_URL = Rpc(GetDownloadUrl, DownloadUrl, per_device=True)
GET_PUBLIC_KEY = Rpc(GetPublicKey, PublicKey)
