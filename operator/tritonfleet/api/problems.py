"""Validation problems, collected rather than raised one at a time.

Users fix configs in one pass when they see every problem at once, so the
renderer and the ensemble checks return lists of :class:`Problem`, each naming
the field (in the camelCase path a user sees in their YAML).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

# A problem line stays readable whatever the input held: a 10 MB value, or a
# field name that long, is shown clipped, never echoed whole.
LINE_LIMIT = 500


def clip(text: str, limit: int = LINE_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with the cut shown."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 30]} ... ({len(text) - limit + 30} more characters)"


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return clip(f"{self.path}: {self.message}" if self.path else self.message)


class InvalidSpec(ValueError):  # noqa: N818 - reads better at call sites than InvalidSpecError
    """Raised when an object cannot be rendered; carries every problem found."""

    def __init__(self, resource: str, problems: Sequence[Problem]) -> None:
        self.resource = resource
        self.problems = tuple(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{resource} is invalid ({len(self.problems)} problem(s)):\n{listing}")


def _loc_to_path(prefix: str, loc: Iterable[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-after", "function-before")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


ECHO_LIMIT = 80


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``value`` as the user wrote it in YAML/JSON, clipped so a huge one stays readable."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]} ...{text[-1]}"


def _message(item: Any) -> str:
    message: str = item["msg"].removeprefix("Value error, ")
    if item["type"] in ("missing", "value_error", "assertion_error") or "input" not in item:
        return message  # our own messages say the value themselves
    value = item["input"]
    if isinstance(value, dict | list):
        return message
    if item["type"] == "string_type" and isinstance(value, bool | int | float):
        # YAML reads `128` and `true` as a number and a boolean; Triton's parameters and
        # names are strings, so the fix is to quote them.
        return f'{message}, got {echo(value)}: quote it to make it a string ("{echo(value)}")'
    return f"{message}, got {echo(value)}"


def problems_from_validation_error(error: ValidationError, prefix: str = "") -> list[Problem]:
    """pydantic's errors as problems with wire (camelCase) paths and the offending value."""
    return [
        Problem(_loc_to_path(prefix, item["loc"]), _message(item))
        for item in error.errors(include_url=False)
    ]
