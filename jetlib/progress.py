"""Progress bars for long work, written to stderr so stdout stays machine-readable.

On a terminal the bar redraws in place; in a log (KFP pod, CI) it prints a
line at most every 30 s. ``JETLIB_PROGRESS=0`` turns bars off.

A bar that is left unfinished (an error stops the work) ends its line without a
newline; :func:`end_line` starts a fresh one, so that the CLI's one-line error is a
line of its own and not glued onto ``ingest:  30%|███``.
"""

import os
import sys

from tqdm.auto import tqdm


class _Tracked:
    """stderr as the bars see it, remembering whether their last write left the cursor mid-line."""

    mid_line = False

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text:  # a cleared bar ends in "\r": column 0 on a terminal, but not a new line in a log
            _Tracked.mid_line = not (text.endswith("\n") or (text.endswith("\r") and self._stream.isatty()))
        return self._stream.write(text)

    def __getattr__(self, name):  # flush, isatty, encoding, ... of the real stream
        return getattr(self._stream, name)


def end_line(stream=None) -> None:
    """Start a new line on stderr if a progress bar left the cursor in the middle of one."""
    if _Tracked.mid_line:
        (stream or sys.stderr).write("\n")
        _Tracked.mid_line = False


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False,
             leave: bool = True, **kwargs):
    """Wrap ``iterable`` (or make a manual bar when it is None) in a tqdm bar on stderr."""
    disabled = disable or os.environ.get("JETLIB_PROGRESS", "1") == "0"
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=_Tracked(sys.stderr),
        disable=disabled,
        mininterval=0.2 if interactive else 30.0,
        dynamic_ncols=interactive,
        leave=leave,
        **kwargs,
    )
