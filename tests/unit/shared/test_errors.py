"""One error root: every error raised on purpose descends from it, and every RPC error code maps to an
exception and back (the client and the kit share the one mapping in `shared.errors`)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import samples
import services
import shared
from services.edge_agent.fleet.device import DeviceCrashed
from shared.errors import RPC_ERRORS, SlmopsError, error_for_code, wire_code
from shared.kit import KitSetupError

# Not the platform's errors, by design: a programming error propagates; an injected crash stands for
# a process that died, which no handler sees.
NOT_PLATFORM_ERRORS = {KitSetupError, DeviceCrashed}


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for package in (shared, services, samples):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            module = importlib.import_module(info.name)
            found += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__
            ]
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


ERRORS = _exception_classes()


def test_the_walk_finds_the_service_trees() -> None:
    names = {c.__qualname__ for c in ERRORS}
    assert {"RegistryError", "OptimizerError", "AgentError", "FleetError", "ArtifactError", "BusError"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_raised_on_purpose_descends_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, SlmopsError) or cls in NOT_PLATFORM_ERRORS


@pytest.mark.parametrize(
    "cls", [c for c in ERRORS if issubclass(c, SlmopsError)], ids=lambda c: f"{c.__module__}.{c.__qualname__}"
)
def test_every_error_is_answered_with_a_code_a_client_maps_back_to_its_branch(cls: type[SlmopsError]) -> None:
    code = wire_code(cls.__new__(cls))
    assert code in RPC_ERRORS
    assert issubclass(cls, RPC_ERRORS[code])


@pytest.mark.parametrize("code", sorted(RPC_ERRORS))
def test_every_code_round_trips(code: str) -> None:
    error = error_for_code(code, "what went wrong")
    assert type(error) is RPC_ERRORS[code]
    assert wire_code(error) == code
    assert (str(error), error.remote_code) == ("what went wrong", code)


def test_an_unknown_code_from_a_newer_service_is_still_a_platform_error() -> None:
    error = error_for_code("quota_exceeded", "slow down")
    assert type(error) is SlmopsError and error.remote_code == "quota_exceeded"


def test_a_bug_is_answered_as_internal() -> None:
    assert wire_code(KeyError("x")) == "internal"
