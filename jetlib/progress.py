"""Progress bars for long work, written to stderr so stdout stays machine-readable.

On a terminal the bar redraws in place; in a log (KFP pod, CI) it prints a
line at most every 30 s. ``JETLIB_PROGRESS=0`` turns bars off.
"""

import os
import sys

from tqdm.auto import tqdm


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
        file=sys.stderr,
        disable=disabled,
        mininterval=0.2 if interactive else 30.0,
        dynamic_ncols=interactive,
        leave=leave,
        **kwargs,
    )
