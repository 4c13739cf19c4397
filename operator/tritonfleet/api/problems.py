"""Validation problems, collected rather than raised one at a time.

Users fix configs in one pass when they see every problem at once, so the
renderer and the ensemble checks return lists of :class:`Problem`, each naming
the field (in the camelCase path a user sees in their YAML).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


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


def problems_from_validation_error(error: ValidationError, prefix: str = "") -> list[Problem]:
    """pydantic's errors as problems with wire (camelCase) paths."""
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        problems.append(Problem(_loc_to_path(prefix, item["loc"]), message))
    return problems
