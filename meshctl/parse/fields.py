"""A small reader for untyped manifest data that records every problem with its field path.

Validation collects all errors of an object instead of stopping at the first, so a user fixes a
manifest in one round; each error names the field the way ``kubectl explain`` would
(``spec.httpRoute.action.weightedTargets[1].weight``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from meshctl.model import FieldError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DURATION_MS",
    "UINT32_MAX",
    "Fields",
    "field_warnings",
    "parse_duration_ms",
]

_UNIT_MS = {"ms": 1, "s": 1000}
# Envoy's limits, so that a value that parses can always be built and accepted (issue 9: a maxConnections of
# 5,000,000,000 used to parse, then raised inside the snapshot builder, which has to fit it in a UInt32Value).
UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# One year. Envoy takes durations up to ~10,000 years but converts some to nanoseconds in 64 bits (292 years);
# no timeout, interval or ejection time needs more than a year, and the bound is checked by Envoy in the tests.
MAX_DURATION_MS = 365 * 24 * 3600 * 1000


def parse_duration_ms(value: Any) -> tuple[int | None, str | None]:
    """App Mesh ``{unit: ms|s, value: N}`` -> (milliseconds, error)."""
    if not isinstance(value, dict):
        return None, f"must be a duration like {{unit: ms, value: 500}}, got {value!r}"
    unit, amount = value.get("unit"), value.get("value")
    if unit not in _UNIT_MS:
        return None, f"unit must be 'ms' or 's', got {unit!r}"
    if not isinstance(amount, int) or isinstance(amount, bool):
        return None, f"value must be an integer, got {amount!r}"
    if amount < 0:
        return None, f"must not be negative, got {value!r}"
    ms = amount * _UNIT_MS[unit]
    if ms > MAX_DURATION_MS:
        return None, f"must be at most 365 days ({MAX_DURATION_MS} ms), got {value!r}"
    return ms, None


class Fields:
    """A view of one mapping in a manifest, at a known path, appending problems to a shared list."""

    __slots__ = ("_data", "_read", "_views", "errors", "path")

    def __init__(self, data: Any, path: str, errors: list[FieldError], _views: list[Fields] | None = None) -> None:
        self.path = path
        self.errors = errors
        self._read: set[str] = set()  # the keys the parser asked for: the rest are fields it does not know
        self._views = _views if _views is not None else []  # every view of the same document, for unread()
        self._views.append(self)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error("", f"must be an object, got {type(data).__name__}")
            data = {}
        self._data: dict[str, Any] = data

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.errors.append(FieldError(path=self.at(key) if key else self.path, message=message))

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def has(self, key: str) -> bool:
        return self._get(key) is not None

    def raw(self, key: str) -> Any:
        return self._get(key)

    def field_names(self) -> list[str]:
        self._read.update(self._data)
        return list(self._data)

    def unread(self) -> list[str]:
        """The paths of fields present in the document that no view of it read: fields the parser does not know."""
        return [view.at(key) for view in self._views for key in view._data if key not in view._read]

    def obj(self, key: str, *, required: bool = False) -> Fields | None:
        if not self.has(key):
            if required:
                self.error(key, "is required")
            return None
        return Fields(self._data[key], self.at(key), self.errors, self._views)

    def objects(self, key: str, *, required: bool = False) -> Iterator[Fields]:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return
        if not isinstance(value, list):
            self.error(key, "must be a list")
            return
        if required and not value:
            self.error(key, "must not be empty")
        for i, item in enumerate(value):
            yield Fields(item, f"{self.at(key)}[{i}]", self.errors, self._views)

    def string(self, key: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return None
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {value!r}")
            return None
        if required and not value:
            self.error(key, "must not be empty")
            return None
        if choices and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
            return None
        return value

    def string_list(self, key: str, *, required: bool = False) -> list[str]:
        """A list of non-empty strings (empty when absent or wrong, with an error saying which)."""
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(key, "must be a list of non-empty strings")
            return []
        if required and not value:
            self.error(key, "must not be empty")
        return list(value)

    def integer(self, key: str, *, minimum: int, maximum: int, required: bool = False) -> int | None:
        """Both bounds are required: every number must be one Envoy can hold (UINT32_MAX for its UInt32 fields)."""
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(key, f"must be an integer, got {value!r}")
            return None
        if value < minimum:
            self.error(key, f"must be at least {minimum}, got {value}")
            return None
        if value > maximum:
            self.error(key, f"must be at most {maximum}, got {value}")
            return None
        return value

    def integer_list(self, key: str, *, minimum: int, maximum: int) -> list[int]:
        """A list of integers within the bounds (empty when absent or wrong, with an error saying which)."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            self.error(key, "must be a list of integers")
            return []
        if any(not minimum <= v <= maximum for v in value):
            self.error(key, f"every item must be between {minimum} and {maximum}")
            return []
        return list(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, got {value!r}")
            return default
        return value

    def duration_ms(self, key: str, *, required: bool = False, positive: bool = False) -> int | None:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return None
        ms, problem = parse_duration_ms(value)
        if problem:
            self.error(key, problem)
            return None
        if positive and ms == 0:
            self.error(key, "must be greater than zero")
            return None
        return ms

    def string_map(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.error(key, "must be a map of strings to strings")
            return {}
        return dict(value)


# App Mesh fields meshctl knows but does not implement yet: a user who sets one must hear that it does nothing.
_NOT_IMPLEMENTED = (
    (
        r"spec\.(listeners\[\d+\]|backendDefaults\.clientPolicy|backends\[\d+\]\.virtualService\.clientPolicy)"
        r"\.tls\.(certificate|validation\.trust)\.acm",
        "ACM certificates are not read by meshctl: the mesh CA's certificate and roots are used (serve --acm-pca-arn "
        "makes AWS Private CA the mesh CA)",
    ),
    (r"spec\.(awsName|meshRef|meshName)", "App Mesh only: ignored"),
)


def field_warnings(fields: Fields) -> list[FieldError]:
    """A warning for every field of the document the parser did not read: unknown (a typo, a field of another
    version) or known but not implemented yet. Served without them; ``--strict`` makes them errors."""
    warnings = []
    for path in fields.unread():
        message = next((m for pattern, m in _NOT_IMPLEMENTED if re.fullmatch(pattern, path)), "unknown field: ignored")
        warnings.append(FieldError(path=path, message=message))
    return warnings
