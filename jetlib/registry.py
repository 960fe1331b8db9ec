"""A name -> object registry: what ``jetlib.models``, ``jetlib.tasks`` and ``jetlib.methods`` register into.

Each of the three registers its built-ins the same way: a table of name -> module (``builtin``),
imported the first time the name is asked for. So a command's ``--help`` lists every name without
importing the modules (and torch), and a test or a plugin registers its own entries directly
with the decorator, after which they are listed too.

Example:
    >>> colours = Registry("colour", builtin={"blue": "jetlib.no_such_module"})
    >>> @colours.register("red")
    ... def red(): return "#f00"
    >>> colours.get("red")(), list(colours.names)
    ('#f00', ['blue', 'red'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from jetlib.errors import ConfigError


class Names(Sequence):
    """The live, ordered names of a registry: its built-ins (table order), then the entries registered since.

    argparse ``choices``, messages and schemas read it at each use, so a name registered later is listed.
    """

    def __init__(self, registry: Registry):
        self._registry = registry

    def _names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self._registry._builtin, *self._registry._entries]))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        return name in self._registry._builtin or name in self._registry._entries

    def __iter__(self):
        return iter(self._names())

    def __repr__(self) -> str:
        return f"Names{self._names()!r}"


class Registry:
    """Registered objects of one kind (a network factory, a task, a pretraining method).

    Args:
        kind: what an entry is, for messages ("network", "task").
        make: turns the decorated object into the stored entry (default: stored as it is).
        builtin: name -> the module that registers it on import; imported when the name is first asked for.
    """

    def __init__(self, kind: str, make: Callable | None = None, builtin: dict[str, str] | None = None):
        self.kind = kind
        self._make = make
        self._builtin = dict(builtin or {})
        self._entries: dict[str, object] = {}
        self.names = Names(self)  # live: built-ins and every entry registered since

    def register(self, name: str):
        """Decorator: register the decorated object as ``name``; a second ``name`` is refused (ValueError)."""
        def add(obj):
            if name in self._entries:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = self._make(name, obj) if self._make else obj
            return obj
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register toy entries and take them away again)."""
        self._entries.pop(name, None)

    def get(self, name: str):
        """The entry ``name``, its module imported first when it is a built-in not yet loaded.

        Raises:
            ConfigError: nothing is registered under ``name``.
        """
        if isinstance(name, str) and name not in self._entries and name in self._builtin:
            importlib.import_module(self._builtin[name])
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {str(name)[:40]!r}: choose one of {', '.join(self.names)}")
        return self._entries[name]

    def values(self) -> list:
        """Every entry, built-ins loaded, in the order of :attr:`names`."""
        return [self.get(n) for n in self.names if n in self._entries or n in self._builtin]
