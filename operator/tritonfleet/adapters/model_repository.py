"""Reading Triton model repositories from disk for ``tritonfleet import``.

A path is a ``config.pbtxt`` (or any ``*.pbtxt`` file), a model directory (one holding a
``config.pbtxt``) or a repository (a directory of model directories). A model directory
without a ``config.pbtxt`` but with a version directory (``1/``) is a model Triton
configures entirely by auto-complete, so it is imported with an empty config. What the
files say is turned into TritonModels by the pure ``desired.triton.importing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tritonfleet.desired.triton.importing import ConfigFile

CONFIG_NAME = "config.pbtxt"


class RepositoryError(ValueError):
    """A path is missing, unreadable, or holds no model."""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise RepositoryError(f"cannot read {path}: {error}") from error


def _is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit()


def _model(directory: Path) -> ConfigFile | None:
    config = directory / CONFIG_NAME
    if config.is_file():
        return ConfigFile(directory.name, _read(config), str(config))
    if any(_is_version_dir(child) for child in directory.iterdir()):
        return ConfigFile(directory.name, "", str(directory))
    return None


def find_configs(paths: Sequence[str]) -> list[ConfigFile]:
    """Every model under ``paths``, in the order given (a repository's models sorted)."""
    found: list[ConfigFile] = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            # Triton takes a model's name from its directory, so the directory counts only
            # for a file named config.pbtxt; any other file is named by its `name:` field.
            directory = path.parent.name if path.name == CONFIG_NAME else ""
            found.append(ConfigFile(directory, _read(path), str(path)))
        elif path.is_dir():
            model = _model(path)
            if model is not None:
                found.append(model)
                continue
            models = [
                m
                for child in sorted(path.iterdir())
                if child.is_dir() and not child.name.startswith(".")
                for m in [_model(child)]
                if m is not None
            ]
            if not models:
                raise RepositoryError(
                    f"{path}: no model found (neither {CONFIG_NAME} nor model directories)"
                )
            found.extend(models)
        else:
            raise RepositoryError(f"{path}: no such file or directory")
    return found
