"""One JSON document per line for ``--json`` streams, whatever a message holds.

Messages decoded from the wire carry more than JSON types: Sparkplug B metrics
hold ``bytes`` (BYTES/FILE metrics, and arrays whose datatype the reader has not
seen declared in a birth), floats may be NaN or infinite, and API objects may
hold datetimes, paths, enums or numpy values. :func:`json_line` maps each to a
JSON value so that every line parses with a strict JSON reader:

* ``bytes``: standard base64 text (RFC 4648, with padding);
* NaN, +inf, -inf: ``null`` (what JavaScript's ``JSON.stringify`` writes);
* ``datetime`` / ``date``: ISO 8601 text;
* numpy scalars and arrays: their Python values; sets and tuples: arrays;
* anything else (paths, enums...): its ``str``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from enum import Enum
from typing import Any

__all__ = ["json_line", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with every part turned into a JSON type (see the module notes)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def json_line(message: Any) -> str:
    """``message`` as compact, strict JSON on one line (no NaN/Infinity literals)."""
    return json.dumps(jsonable(message), separators=(",", ":"), allow_nan=False)
