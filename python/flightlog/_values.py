"""Conversions between Python values and the wire forms of the native module (kept off the hot path)."""

from __future__ import annotations

import math
import numbers

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

LIST_HINT = "run.log() takes one number or string; to log a whole list of numbers at once use run.log_list(name, values)"


def as_number(value: Any, what: str) -> float:
    """A float from any real number (int, float, bool, numpy scalar, 0-d array/tensor); TypeError otherwise."""
    if isinstance(value, (float, int)):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:
        return as_number(item(), what)
    raise TypeError(f"{what} must be a number, not {type(value).__name__}")


def scalar_or_text(value: Any) -> Any:
    """What ``run.log`` stores for ``value``: a float, a str, or TypeError naming the fix."""
    if isinstance(value, str):
        # A subclass (numpy.str_, a str-valued Enum) as its text: str() of an Enum member would be its name.
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)) or (
        getattr(value, "ndim", 0) not in (0, None) and hasattr(value, "__len__")
    ):
        raise TypeError(f"{LIST_HINT} (got a {type(value).__name__})")
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("run.log() takes a number or a str; decode bytes first")
    if value is None:
        raise TypeError("run.log() takes a number or a str, not None")
    return as_number(value, "the value")


def as_list(value: Any, what: str = "log_list value") -> List[float]:
    """A list of floats from any iterable of numbers (numpy arrays included)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{what} must be a list of numbers, not {type(value).__name__}")
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        value = tolist()
        if not isinstance(value, list):
            value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{what} must be a list of numbers, not {type(value).__name__}") from None
    out = []
    for i, v in enumerate(items):
        if type(v) is float:
            out.append(v)
        else:
            out.append(as_number(v, f"{what}[{i}]"))
    return out


def as_cell(value: Any, what: str) -> Any:
    """A table cell: None, bool, float/int, or str."""
    if value is None or isinstance(value, (bool, str, float, int)):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:
        return as_cell(item(), what)
    raise TypeError(f"{what} must be a number, str, bool or None, not {type(value).__name__}")


def as_column(value: Any, what: str) -> List[Any]:
    """A table column (list, tuple, numpy array...) as a list of cells."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{what} must be a list of values, not {type(value).__name__}")
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        value = tolist()
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{what} must be a list of values, not {type(value).__name__}") from None
    return [v if v is None or type(v) in (float, int, str, bool) else as_cell(v, f"{what}[{i}]") for i, v in enumerate(items)]


def to_json_safe(value: Any) -> Any:
    """A JSON-serializable copy with NaN/±Inf as "NaN"/"Infinity"/"-Infinity" and numpy values as Python ones."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return to_json_safe(tolist())
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, numbers.Real):
        return to_json_safe(float(value))
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def number_from_wire(v: Any) -> Any:
    """A wire number (or its "NaN"/"Infinity"/"-Infinity" spelling) as a float."""
    if isinstance(v, str):
        return _NON_FINITE.get(v, v)
    return v


def cell_from_wire(v: Any) -> Any:
    """A wire cell: non-finite spellings become floats, everything else is kept."""
    if isinstance(v, str) and v in _NON_FINITE:
        return _NON_FINITE[v]
    return v


def numbers_from_wire(values: List[Any]) -> List[Any]:
    """A list of wire numbers as floats."""
    return [_NON_FINITE.get(v, v) if isinstance(v, str) else v for v in values]


def json_from_wire(v: Any) -> Any:
    """Non-finite spellings inside a JSON value back to floats."""
    if isinstance(v, str):
        return _NON_FINITE.get(v, v)
    if isinstance(v, list):
        return [json_from_wire(x) for x in v]
    if isinstance(v, dict):
        return {k: json_from_wire(x) for k, x in v.items()}
    return v


def media_type(data: bytes, path: str = "") -> str:
    """The image media type of ``data`` by its magic bytes; ValueError for anything that is not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"GIF87a") or data.startswith(b"GIF89a"):
        return "image/gif"
    head = data[:1024].lstrip()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096]):
        return "image/svg+xml"
    raise ValueError(f"{path or 'the data'} is not a PNG, JPEG, GIF or SVG image")


def columns_from_records(records: List[Dict[str, Any]], columns: List[str], kind: str) -> Dict[str, List[Any]]:
    """Rows (``kind == "row"``) or table chunks as one dict of equal-length columns."""
    out: Dict[str, List[Any]] = {c: [] for c in columns}
    total = 0
    for rec in records:
        value = rec["value"]
        if kind == "row":
            for c in value:
                if c not in out:
                    out[c] = [None] * total
            for c, col in out.items():
                col.append(cell_from_wire(value.get(c)))
            total += 1
        else:
            n = len(next(iter(value.values()))) if value else 0
            for c in value:
                if c not in out:
                    out[c] = [None] * total
            for c, col in out.items():
                cells = value.get(c)
                col.extend([cell_from_wire(x) for x in cells] if cells is not None else [None] * n)
            total += n
    return out
