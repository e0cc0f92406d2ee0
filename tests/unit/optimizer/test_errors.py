from __future__ import annotations

import pytest

from services.optimizer.errors import (
    EvaluationError,
    InvalidPassConfig,
    InvalidRecipe,
    OptimizerError,
    PassError,
    ProfileError,
    RegistryUnavailable,
    SourceNotFound,
    UnknownPass,
)
from shared.errors import CallerError, InvalidRequest, NotFound, SlmopsError, TransientError


def test_every_error_is_an_optimizer_error() -> None:
    every = (InvalidRecipe, UnknownPass, InvalidPassConfig, ProfileError, SourceNotFound, RegistryUnavailable)
    for cls in (*every, PassError, EvaluationError):
        assert issubclass(cls, OptimizerError)
    assert issubclass(UnknownPass, InvalidRecipe) and issubclass(InvalidPassConfig, InvalidRecipe)


def test_pass_error_names_recipe_pass_and_reason() -> None:
    error = PassError("output fails onnx.checker", pass_name="Float16Conversion", recipe="fp16")
    assert str(error) == "recipe 'fp16': pass Float16Conversion: output fails onnx.checker"
    assert (error.reason, error.pass_name, error.recipe) == ("output fails onnx.checker", "Float16Conversion", "fp16")


def test_unknown_pass_lists_the_known_ones_sorted() -> None:
    error = UnknownPass("Quantise", known=["B", "A"])
    assert str(error) == "unknown pass type 'Quantise'; known pass types: A, B"
    assert error.known == ["A", "B"]


def test_invalid_config_lists_every_problem() -> None:
    error = InvalidPassConfig("P", problems=["a: bad", "b: worse"], recipe="r")
    assert str(error) == "recipe 'r': invalid config for pass P: a: bad; b: worse"


@pytest.mark.parametrize(
    ("cls", "branch"),
    [
        (InvalidRecipe, InvalidRequest),
        (UnknownPass, InvalidRequest),
        (InvalidPassConfig, InvalidRequest),
        (ProfileError, CallerError),
        (SourceNotFound, NotFound),
        (RegistryUnavailable, TransientError),
        (PassError, CallerError),
        (EvaluationError, CallerError),
    ],
)
def test_each_error_sits_under_the_branch_the_handlers_act_on(cls: type[OptimizerError], branch: type) -> None:
    """Caller errors are rejected, transient ones retried: the branch decides, not a string."""
    assert issubclass(cls, branch) and issubclass(cls, SlmopsError)
