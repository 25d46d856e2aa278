"""Reading load-balancer annotations the AWS Load Balancer Controller's way: every value is a string; booleans are
``'true'``, integers ``'42'``, lists ``a,b``, maps ``k1=v1,k2=v2`` and JSON is a JSON string.

A bad value raises ``AnnotationError`` naming the annotation, which the builders turn into an Event on the object.
Lookups try each source in order (a Service's annotations win over its Ingress's, as in LBC)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ALB", "NLB", "AnnotationError", "Annotations", "map_value"]

ALB = "alb.ingress.kubernetes.io/"
NLB = "service.beta.kubernetes.io/aws-load-balancer-"


def map_value(values: Mapping[str, str]) -> str:
    """A map as an annotation writes it (``k1=v1,k2=v2``, sorted): what ``Annotations.string_map`` reads back."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


class AnnotationError(ValueError):
    def __init__(self, annotation: str, message: str) -> None:
        super().__init__(f"annotation {annotation}: {message}")
        self.annotation = annotation


class Annotations:
    """Typed access to ``prefix + name`` in the first of ``sources`` that has it."""

    def __init__(self, prefix: str, *sources: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.sources = sources

    def raw(self, name: str) -> str | None:
        for source in self.sources:
            value = source.get(self.prefix + name)
            if value is not None:
                return value.strip()
        return None

    def _fail(self, name: str, message: str) -> AnnotationError:
        return AnnotationError(self.prefix + name, message)

    def string(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if choices and value not in choices:
            raise self._fail(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self._fail(name, f"{value!r} is not an integer") from None
        if not minimum <= number <= maximum:
            raise self._fail(name, f"{number} is out of range [{minimum}, {maximum}]")
        return number

    def boolean(self, name: str, default: bool | None = None) -> bool | None:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise self._fail(name, f"{value!r} is not 'true' or 'false'")
        return value.lower() == "true"

    def string_list(self, name: str) -> list[str]:
        value = self.raw(name)
        return [] if value is None else [part.strip() for part in value.split(",") if part.strip()]

    def string_map(self, name: str) -> dict[str, str]:
        result = {}
        for part in self.string_list(name):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise self._fail(name, f"{part!r} is not key=value")
            result[key.strip()] = val.strip()
        return result

    def json(self, name: str) -> Any:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise self._fail(name, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
