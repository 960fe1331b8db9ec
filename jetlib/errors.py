"""Errors a user can act on.

Every step raises a :class:`JetlibError` subclass for bad input, a bad flag or an
unusable store. The CLI prints its message as one line (no traceback unless
``--debug``) and exits with :attr:`JetlibError.exit_code`; library callers can
catch it like any exception.
"""


class JetlibError(Exception):
    """Base class: the message names what is wrong and, where it helps, what to do."""

    exit_code = 2


class DataError(JetlibError):
    """Input data is missing, unreadable or not what the contract says (file, key, value)."""


class StoreError(JetlibError):
    """The object store is unreachable, refuses access, or lacks an object it should hold."""

    exit_code = 3


class ConfigError(JetlibError):
    """A flag, preset or configuration value is invalid."""


class TrainingError(JetlibError):
    """Training cannot go on (a non-finite loss); the newest checkpoint is still good."""

    exit_code = 4


class ResourceError(JetlibError):
    """The machine ran out of something the step needs (disk space, memory); the input is fine."""

    exit_code = 5
