"""Progress bars (tqdm), silenced with ``progress=False`` or ``RETINA_NO_PROGRESS=1``."""

from __future__ import annotations

import os


def progress_bar(iterable, *, total=None, desc=None, unit="it", enabled=True):
    if not enabled or os.environ.get("RETINA_NO_PROGRESS"):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
