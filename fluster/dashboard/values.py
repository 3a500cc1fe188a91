"""A job's result as the dashboard shows it: a preview of plain values only.

The dashboard never runs code from the cluster: a result's pickle is read with an unpickler that can build
only builtin containers and scalars (and a few standard types); anything else is shown by its size, with the
command that fetches it.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

PREVIEW_CHARS = 2000
MAX_PICKLE = 1 << 20

_SAFE = {
    ("builtins", name)
    for name in (
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "bool",
        "range",
        "slice",
    )
} | {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timedelta"),
    ("decimal", "Decimal"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def preview(data: bytes) -> str | None:
    """``repr`` of the pickled value (cut to ``PREVIEW_CHARS``), or None when it is not a plain value."""
    if len(data) > MAX_PICKLE:
        return None
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception:  # not plain (or not a pickle at all): shown by size only
        return None
    text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + " …"
