"""A name -> object registry: what ``jetlib.models``, ``jetlib.tasks`` (and pretraining methods) register into.

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def red(): return "#f00"
    >>> colours.get("red")(), list(colours.names)
    ('#f00', ['red'])
"""

from __future__ import annotations

from collections.abc import Callable

from jetlib.errors import ConfigError


class Registry:
    """Registered objects of one kind (a network factory, a task), in registration order.

    Args:
        kind: what an entry is, for messages ("network", "task").
        make: turns the decorated object into the stored entry (default: stored as it is).
    """

    def __init__(self, kind: str, make: Callable | None = None):
        self.kind = kind
        self._make = make
        self._entries: dict[str, object] = {}
        self.names = self._entries.keys()  # a live view: argparse choices and messages see every entry

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
        """The entry ``name``.

        Raises:
            ConfigError: nothing is registered under ``name``.
        """
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {str(name)[:40]!r}: choose one of {', '.join(self.names)}")
        return self._entries[name]

    def values(self) -> list:
        return list(self._entries.values())
