"""Wall display profiles: how a ward board is laid out on one kind of screen.

Profiles are JSON files in `displays/profiles/` (in a wheel: `whiteboard/displays/profiles/`),
one per kind of screen, chosen by `?profile=NAME` on the wall's URL. Each names its screen size,
the base font size (everything on the wall scales from it), how many bed tiles make a row and
how long each page shows when a ward does not fit on one. `check_profile` is the schema; the
tests run every shipped file through it. A broken or missing folder falls back to the built-in
1080p profile, so a wall always comes up.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("whiteboard.profiles")

FALLBACK: dict[str, Any] = {
    "name": "landscape-1080p",
    "title": "Full HD landscape (1920 x 1080)",
    "width": 1920,
    "height": 1080,
    "orientation": "landscape",
    "base_font_px": 20,
    "columns": 6,
    "page_seconds": 20,
    "default": True,
}

FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "title": (str,),
    "width": (int,),
    "height": (int,),
    "orientation": (str,),
    "base_font_px": (int,),
    "columns": (int,),
    "page_seconds": (int,),
    "default": (bool,),
}


def profiles_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    packaged = package / "displays" / "profiles"
    return packaged if packaged.is_dir() else package.parent / "displays" / "profiles"


def check_profile(doc: Any, filename: str) -> dict[str, Any]:
    """The profile when it is valid; ValueError naming the first bad field otherwise."""
    if not isinstance(doc, dict):
        raise ValueError(f"{filename}: a profile is a JSON object")
    for key, types in FIELDS.items():
        value = doc.get(key)
        if not isinstance(value, types) or (types == (int,) and isinstance(value, bool)):
            raise ValueError(f"{filename}: {key} must be a {types[0].__name__}")
    extra = set(doc) - set(FIELDS)
    if extra:
        raise ValueError(f"{filename}: unknown field {sorted(extra)[0]}")
    if doc["name"] != Path(filename).stem:
        raise ValueError(f"{filename}: name must match the file name ({Path(filename).stem})")
    if doc["orientation"] not in ("landscape", "portrait"):
        raise ValueError(f"{filename}: orientation must be landscape or portrait")
    if (doc["orientation"] == "landscape") != (doc["width"] >= doc["height"]):
        raise ValueError(f"{filename}: orientation does not match width and height")
    checks = {
        "width": 640 <= doc["width"] <= 7680,
        "height": 480 <= doc["height"] <= 7680,
        "base_font_px": 12 <= doc["base_font_px"] <= 96,
        "columns": 1 <= doc["columns"] <= 16,
        "page_seconds": 5 <= doc["page_seconds"] <= 300,
    }
    for key, ok in checks.items():
        if not ok:
            raise ValueError(f"{filename}: {key} is out of range")
    return dict(doc)


@functools.cache
def load_profiles() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    folder = profiles_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found[path.stem] = check_profile(orjson.loads(path.read_bytes()), path.name)
        except (OSError, ValueError) as exc:
            log.error("display profile skipped: %s", exc)
    return found or {FALLBACK["name"]: FALLBACK}


def profile_names() -> list[str]:
    return list(load_profiles())


def default_profile() -> dict[str, Any]:
    profiles = load_profiles()
    for profile in profiles.values():
        if profile["default"]:
            return profile
    return next(iter(profiles.values()))


def choose(name: str | None) -> dict[str, Any]:
    """The named profile, or the default for an unknown or missing name."""
    return load_profiles().get(name or "", None) or default_profile()
