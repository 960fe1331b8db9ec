"""The command line's building blocks: the help formatter, the parser that fails in one line, the
argument types (``jetlib.checks``' validators) and choices read from a registry on first use.

``jetlib.cli`` builds every subcommand from these; the tagger's and the tune step's parsers use them too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jetlib import checks
from jetlib.checks import argtype


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's own defaults in every flag's help (never typed into a help string).

    A flag whose default is "not given" (None, or False for a switch) shows none: its help says
    what happens then (the preset's value, all cores). Text is wrapped paragraph by paragraph; a
    paragraph with indented lines (the epilogs' tables) is printed as written.
    """

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for para in text.split("\n\n"):
            if any(line.startswith("  ") for line in para.splitlines()):
                paragraphs.append("\n".join(indent + line for line in para.splitlines()))
            else:
                paragraphs.append(super()._fill_text(para, width, indent))
        return "\n\n".join(paragraphs)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line, not a usage block; every parser uses :class:`_HelpFormatter`.

    ``epilog_fn`` builds an epilog when help is shown (the presets' table imports the step's module,
    and with it torch: never for ``jetlib --help`` or a run of another step).
    """

    def __init__(self, *args, epilog_fn=None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self):
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- argument types: jetlib.checks' validators as argparse types ----------------------------

positive_int = argtype(checks.whole, minimum=1)
positive_float = argtype(checks.number, low=0, low_open=True)  # also refuses nan and inf
fraction = argtype(checks.number, low=0, high=1, high_open=True)  # [0, 1): a split's share
unit_interval = argtype(checks.number, low=0, high=1)
fraction_list = argtype(checks.fractions)


def image_size(text: str) -> int | None:
    return None if text == "any" else positive_int(text)


class Choices(Sequence):
    """argparse ``choices`` read from a registry or constant the first time they are needed.

    So a flag lists exactly what the library accepts (a registered task or method included)
    without ``jetlib --help`` or ``jetlib simulate`` importing torch: the module is imported when a
    value is checked or the step's help is shown. Every flag using one names a ``metavar``: without
    it argparse's ``add_argument`` formats (iterates) the choices at once.
    """

    def __init__(self, module: str, name: str, *, before: tuple[str, ...] = ()):
        self.module, self.name, self.before = module, name, before

    def _values(self) -> tuple[str, ...]:
        import importlib

        return (*self.before, *getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, i):
        return self._values()[i]

    def __len__(self) -> int:
        return len(self._values())

    def __contains__(self, value) -> bool:
        return value in self._values()

    def __iter__(self):
        return iter(self._values())


AUGMENTS = Choices("jetlib.augment", "PRESETS")
VALIDATIONS = Choices("jetlib.data.manifest", "VALIDATION")
TASKS = Choices("jetlib.tasks", "TASKS")
FINETUNE_MODES = Choices("jetlib.finetune", "MODES")
METHODS = Choices("jetlib.methods", "METHODS")  # read on use: a method registered later is listed too
ENCODERS = Choices("jetlib.models", "ARCHS")  # the networks registered, a later one included
