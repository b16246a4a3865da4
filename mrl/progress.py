"""Progress bars that stay readable in CI logs: redraw often on a terminal, every 15 s otherwise."""

import sys

from tqdm.auto import tqdm


def progress(iterable, desc: str, unit: str = "it", **kwargs):
    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, unit=unit, leave=False, mininterval=0.2 if interactive else 15.0, **kwargs)
