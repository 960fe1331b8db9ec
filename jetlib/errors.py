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


def one_line(e: BaseException) -> str:
    """An error's message on one line (a value read back from a file may carry a newline)."""
    return " ".join(str(e).split())


def out_of_memory(e: BaseException) -> bool:
    """Python's MemoryError, torch's OutOfMemoryError (CUDA), or the CPU allocator's RuntimeError."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text
                                            or "CUDA out of memory" in text)


def out_of_memory_line(e: BaseException) -> str:
    """The one line the CLI and the KFP components print for :func:`out_of_memory` (exit 5)."""
    return (f"out of memory ({one_line(e)[:160]}): use a smaller model or batch (--set, --batch-size) "
            f"or a machine with more memory")
