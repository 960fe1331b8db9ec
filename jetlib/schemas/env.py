"""The environment variables jetlib reads, declared once and checked before a step does any work.

``jetlib <step>`` (:func:`jetlib.cli.main`) and every KFP component (:func:`jetlib.steps.step_errors`)
call :func:`check_environment` first, so a malformed value is one line and exit 2 before a claim,
a folder or a file exists. The table of accepted values is ``docs/validation.md``'s.

=====================  ====================================================================
``JETLIB_STORE``       the default ``--store``: a non-empty URI (empty would be the working directory)
``JETLIB_TMPDIR``      where sources and spills are unpacked: an existing, writable directory
``JETLIB_CACHE``       the shard cache's root: non-empty, and a directory where it exists
``JETLIB_PROGRESS``    ``0`` turns progress bars off, ``1`` (default) keeps them
``JETLIB_DIST_TIMEOUT_S``  seconds a collective waits: a positive number
``JETLIB_TUNE_BACKEND``  where a pipeline's tune step runs its trials: ``auto`` (default: Katib in a pod,
                       Optuna elsewhere), ``katib`` or ``optuna``
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``  torchrun's: whole numbers with
                       ``0 <= RANK < WORLD_SIZE`` and ``0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE``
=====================  ====================================================================

The S3 variables (``JETLIB_S3_*``, ``AWS_*``) are checked where the store is opened
(:mod:`jetlib.data.s3`), since only an ``s3://`` store needs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from jetlib.errors import ConfigError
from jetlib.schemas import message, real, whole

_WHERE = "environment variable"  # what every line starts with
Rank = whole(0, 1_000_000)
Size = whole(1, 1_000_000)


class DistEnv(BaseModel):
    """torchrun's variables: what :mod:`jetlib.dist` reads. Absent: one process (rank 0 of 1)."""

    model_config = ConfigDict(strict=False, extra="ignore", frozen=True)

    RANK: Rank = 0
    WORLD_SIZE: Size = 1
    LOCAL_RANK: Rank = 0
    LOCAL_WORLD_SIZE: Size | None = None  # absent: as many as WORLD_SIZE allows

    @model_validator(mode="after")
    def _consistent(self):
        if self.RANK >= self.WORLD_SIZE:
            raise ValueError(f"RANK {self.RANK} must be below WORLD_SIZE {self.WORLD_SIZE}")
        local_world = self.LOCAL_WORLD_SIZE or self.WORLD_SIZE
        if self.LOCAL_WORLD_SIZE is not None and self.LOCAL_WORLD_SIZE > self.WORLD_SIZE:
            raise ValueError(f"LOCAL_WORLD_SIZE {self.LOCAL_WORLD_SIZE} must be at most WORLD_SIZE {self.WORLD_SIZE}")
        if self.LOCAL_RANK >= local_world:  # noqa: SIM300 (a field, not a constant)
            raise ValueError(f"LOCAL_RANK {self.LOCAL_RANK} must be below LOCAL_WORLD_SIZE {local_world}")
        return self


def _nonempty(name: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise ConfigError(f"{_WHERE} {name} is set but empty: unset it or give a value")


class JetlibEnv(BaseModel):
    """jetlib's own variables (the paths are checked against the file system by :func:`check_environment`)."""

    model_config = ConfigDict(strict=False, extra="ignore", frozen=True, str_max_length=4096)

    JETLIB_STORE: str | None = None
    JETLIB_TMPDIR: str | None = None
    JETLIB_CACHE: str | None = None
    JETLIB_PROGRESS: Literal["0", "1"] = "1"
    JETLIB_DIST_TIMEOUT_S: real(gt=0, le=7 * 86400) = 1800.0
    JETLIB_TUNE_BACKEND: Literal["auto", "katib", "optuna"] = "auto"


def _variables(env: Mapping[str, str], model: type[BaseModel]) -> dict:
    return {k: env[k] for k in model.model_fields if k in env}


def dist_env(env: Mapping[str, str] = os.environ) -> DistEnv:
    """torchrun's variables, checked (:class:`DistEnv`).

    Raises:
        ConfigError: a value that is not a whole number, or ranks and sizes that do not fit together.
    """
    try:
        return DistEnv.model_validate(_variables(env, DistEnv))
    except ValidationError as e:
        raise ConfigError(message(e, _WHERE)) from None


def check_environment(env: Mapping[str, str] = os.environ) -> JetlibEnv:
    """Every variable jetlib reads, checked; the paths against the file system (nothing is created).

    Raises:
        ConfigError: one line naming the variable, its value and what would be accepted.
    """
    dist_env(env)
    values = _variables(env, JetlibEnv)
    for name in ("JETLIB_STORE", "JETLIB_TMPDIR", "JETLIB_CACHE"):
        _nonempty(name, values.get(name))
    try:
        checked = JetlibEnv.model_validate(values)
    except ValidationError as e:
        raise ConfigError(message(e, _WHERE)) from None
    tmp = checked.JETLIB_TMPDIR
    if tmp is not None and not os.path.isdir(tmp):
        raise ConfigError(f"{_WHERE} JETLIB_TMPDIR={tmp[:200]!r} is not an existing directory: create it or unset it")
    if tmp is not None and not os.access(tmp, os.W_OK | os.X_OK):
        raise ConfigError(f"{_WHERE} JETLIB_TMPDIR={tmp[:200]!r} is not writable: choose a writable directory")
    cache = checked.JETLIB_CACHE
    if cache is not None and os.path.exists(cache) and not os.path.isdir(cache):
        raise ConfigError(f"{_WHERE} JETLIB_CACHE={cache[:200]!r} is a file, not a directory: choose a folder")
    return checked
