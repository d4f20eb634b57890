"""What every section module shares: the error, and how a list of tables ([[abr.ladder]]) is described."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError


class ConfigError(UsageError):
    """The configuration names an unknown key or holds a value the server cannot use."""


@dataclass(frozen=True, slots=True)
class TableRule:
    """A list of tables such as [[relay.push]]: its class, an example for a table missing a required key,
    the key no two tables may share, and a check of one table's values (raises ConfigError)."""

    cls: type
    example: str
    unique: str = ""
    check: Callable[[str, dict[str, Any]], None] | None = None
