"""The optimizer's errors, each under its branch of the platform's root (`shared.errors`).

    SlmopsError
    └── OptimizerError
        ├── InvalidRecipe          InvalidRequest: the caller's recipe is wrong; reject it, never retry
        │   ├── UnknownPass        no pass is registered under that type (the message lists the known ones)
        │   └── InvalidPassConfig  the config does not validate (the message lists each field's problem)
        ├── ProfileError           CallerError: a device profile is unknown or its file is invalid
        ├── SourceNotFound         NotFound: the version to optimize (or its evaluation set) is not registered
        ├── ArtifactMismatch       CallerError: a file read from S3 is not the one the registry recorded
        │                          (digest or size); nothing is built on it, the request fails
        ├── RegistryUnavailable    TransientError: the registry did not answer in time; retry later
        ├── PassError              CallerError: a pass cannot handle this model: unsupported op, over 2 GiB,
        │                          invalid input or output, a quantizer that gave up; fails one candidate
        └── EvaluationError        CallerError: a candidate or the base cannot be run on the evaluation set

Errors carry their context as keyword arguments (the pass, the recipe) so a handler can report
them without parsing messages. Third-party exceptions (onnx, onnxruntime's quantizers) are mapped
to `PassError` at one boundary, `OptimizationPass.run`; everything else is a programming error and
propagates. Only the handler layer maps these to ack outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared import errors


class OptimizerError(errors.SlmopsError):
    """Base of every error the optimizer raises on purpose."""


class InvalidRecipe(OptimizerError, errors.InvalidRequest):
    """A recipe names a pass or a config that cannot be built; the caller must fix the recipe."""

    def __init__(self, message: str, *, pass_type: str, recipe: str | None = None) -> None:
        where = f"recipe {recipe!r}: " if recipe else ""
        super().__init__(f"{where}{message}")
        self.pass_type = pass_type
        self.recipe = recipe


class UnknownPass(InvalidRecipe):
    """No pass is registered under the requested type."""

    def __init__(self, pass_type: str, *, known: Sequence[str], recipe: str | None = None) -> None:
        super().__init__(
            f"unknown pass type {pass_type!r}; known pass types: {', '.join(sorted(known))}",
            pass_type=pass_type,
            recipe=recipe,
        )
        self.known = sorted(known)


class InvalidPassConfig(InvalidRecipe):
    """The pass exists but its config does not validate; `problems` has one line per field."""

    def __init__(self, pass_type: str, *, problems: Sequence[str], recipe: str | None = None) -> None:
        super().__init__(
            f"invalid config for pass {pass_type}: {'; '.join(problems)}", pass_type=pass_type, recipe=recipe
        )
        self.problems = list(problems)


class ProfileError(OptimizerError, errors.CallerError):
    """A device profile is unknown, or its YAML does not describe a valid profile."""


class SourceNotFound(OptimizerError, errors.NotFound):
    """The model version to optimize, or its evaluation set, is not in the registry; the caller's fault."""


class ArtifactMismatch(OptimizerError, errors.CallerError):
    """The bytes read for a registered artifact are not the ones the registry recorded and signed.

    Someone with write access to the bucket replaced (or damaged) the object after registration.
    Building on it would produce, and get signed, a variant of a model nobody registered, recorded
    with the original as its parent; so the request fails instead. Retrying would read the same
    bytes, hence a `CallerError`, not a transient one.

    Attributes:
        artifact: what it is, in words ("base model", "evaluation set").
        key: the S3 key it was read from.
        expected: the sha256 the registry recorded.
        actual: the sha256 of the bytes read, or None when reading stopped because the object is
            larger than the recorded size (its digest was never computed, by design: see `fetch.py`).

    Also raised, with its own `consequence`, when the registry's verdict on the variant names other
    bytes than the ones the optimizer built and staged (the staged upload was replaced in between).
    """

    def __init__(
        self,
        *,
        artifact: str,
        key: str,
        expected: str,
        actual: str | None,
        expected_size: int,
        actual_size: int | None,
        consequence: str = "the object changed in S3 after registration, so nothing is built on it",
    ) -> None:
        if actual is None:
            got = f"an object larger than the {expected_size} bytes recorded (not read further, so no digest)"
        elif actual_size is not None and actual_size != expected_size:
            got = f"sha256 {actual} ({actual_size} bytes, not {expected_size})"
        else:
            got = f"sha256 {actual}"
        super().__init__(
            f"the {artifact} at {key} and its registry record differ: expected sha256 {expected}, got {got}; "
            f"{consequence}"
        )
        self.artifact = artifact
        self.key = key
        self.expected = expected
        self.actual = actual


class RegistryUnavailable(OptimizerError, errors.TransientError):
    """The registry did not answer (timeout, no responder); transient, so the command is retried later."""


class PassError(OptimizerError, errors.CallerError):
    """A pass could not turn this model into a valid, loadable output.

    The message names the recipe (when known), the pass and the reason, e.g. ``recipe 'int8': pass
    OnnxStaticQuantization: needs an evaluation set for calibration, and none was given``.
    """

    def __init__(self, reason: str, *, pass_name: str, recipe: str | None = None) -> None:
        where = f"recipe {recipe!r}: " if recipe else ""
        super().__init__(f"{where}pass {pass_name}: {reason}")
        self.reason = reason
        self.pass_name = pass_name
        self.recipe = recipe


class EvaluationError(OptimizerError, errors.CallerError):
    """A model cannot be evaluated: it does not load, does not fit the evaluation set, or outputs NaN."""
