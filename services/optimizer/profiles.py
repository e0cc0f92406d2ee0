"""Device profiles from YAML: `deploy/profiles/<profile>.yaml`, recipes shared in `recipes.yaml`.

A profile names its recipes; each recipe is written once in `recipes.yaml`, so the INT8 recipe
three profiles try is one piece of text, and a change to it reaches all of them. A profile may
also spell a recipe inline (a mapping with `name` and `passes`) for a one-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.optimizer.errors import ProfileError
from shared.messages.optimizer import DeviceProfile, Recipe

RECIPES_FILE = "recipes.yaml"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "profiles"


def load_recipes(directory: Path) -> dict[str, Recipe]:
    path = directory / RECIPES_FILE
    if not path.exists():
        return {}
    doc = _read(path)
    recipes = {}
    for name, body in (doc or {}).items():
        try:
            recipes[name] = Recipe.model_validate({"name": name, **(body or {})})
        except (ValidationError, TypeError) as exc:
            raise ProfileError(f"{path}: recipe {name!r} is invalid: {exc}") from None
    return recipes


def load_profiles(directory: Path = DEFAULT_DIR) -> dict[str, DeviceProfile]:
    """Every profile in `directory`, validated, by name.

    Raises:
        ProfileError: a file does not parse, names an unknown recipe, or fails validation.
    """
    if not directory.is_dir():
        raise ProfileError(f"profile directory {directory} does not exist")
    recipes = load_recipes(directory)
    profiles = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == RECIPES_FILE:
            continue
        doc = _read(path)
        if not isinstance(doc, dict):
            raise ProfileError(
                f"{path}: a profile is a mapping with name, device_class, speed_factor, budgets, recipes"
            )
        doc = {"name": path.stem, **doc}
        doc["recipes"] = [_recipe(item, recipes, path) for item in doc.get("recipes") or []]
        try:
            profile = DeviceProfile.model_validate(doc)
        except ValidationError as exc:
            raise ProfileError(f"{path}: {exc}") from None
        profiles[profile.name] = profile
    return profiles


def resolve(
    ref: str | DeviceProfile, *, recipes: list[Recipe] | None, profiles: dict[str, DeviceProfile]
) -> DeviceProfile:
    """The profile a command asks for (by name or inline), with its recipes replaced if asked."""
    if isinstance(ref, DeviceProfile):
        profile = ref
    elif ref in profiles:
        profile = profiles[ref]
    else:
        raise ProfileError(f"unknown profile {ref!r}; known profiles: {', '.join(sorted(profiles)) or 'none'}")
    return profile.model_copy(update={"recipes": recipes}) if recipes else profile


def _recipe(item: Any, recipes: dict[str, Recipe], path: Path) -> Recipe:
    if isinstance(item, str):
        if item not in recipes:
            raise ProfileError(f"{path}: unknown recipe {item!r}; {RECIPES_FILE} has: {', '.join(sorted(recipes))}")
        return recipes[item]
    try:
        return Recipe.model_validate(item)
    except ValidationError as exc:
        raise ProfileError(f"{path}: inline recipe is invalid: {exc}") from None


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read YAML: {exc}") from None
