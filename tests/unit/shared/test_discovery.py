"""Services are found by entry point, so shared/ names none of them."""

from __future__ import annotations

import inspect

import pytest
import typer

from shared.discovery import cli_entry_points, load_service, service_names
from shared.errors import InvalidRequest
from shared.kit import ServiceKit


def test_the_installed_services_are_found() -> None:
    assert {"registry", "optimizer"} <= set(service_names())
    kit = load_service("registry")()
    assert isinstance(kit, ServiceKit) and kit.name == "registry"


def test_an_unknown_service_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown service 'nope'; services: .*optimizer.*registry"):
        load_service("nope")


def test_every_cli_entry_point_loads() -> None:
    names = {entry.name for entry in cli_entry_points()}
    assert {"model", "optimize", "agent", "device", "fleet"} <= names
    for entry in cli_entry_points():
        command = entry.load()
        assert isinstance(command, typer.Typer) or inspect.isfunction(command), entry.name
