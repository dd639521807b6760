"""Names users type, parsed into enums once, at the boundary.

`NamedEnum.parse` accepts a member, its value, its name, or an alias, ignoring case and
'-' vs '_'; anything else is an UnknownNameError that lists the valid values.
"""

from __future__ import annotations

import enum
from functools import cache

from .errors import UnknownNameError


def _key(text) -> str:
    return str(text).strip().lower().replace("_", "-")


class NamedEnum(enum.Enum):
    # Subclasses set __label__ (how errors name the kind) and may set __aliases__
    # ({value: (alias, ...)}); dunder attributes are not enum members.

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        m = _lookup(cls).get(_key(value))
        if m is None:
            raise UnknownNameError(getattr(cls, "__label__", cls.__name__.lower()), value, [str(m.value) for m in cls])
        return m


@cache
def _lookup(cls) -> dict:
    """{key: member} for every value, name and alias of an enum (built once per class)."""
    table = {}
    aliases = getattr(cls, "__aliases__", {})
    for m in cls:
        for text in (m.value, m.name, *aliases.get(m.value, ())):
            table.setdefault(_key(text), m)
    return table
