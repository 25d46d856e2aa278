"""Optimistic concurrency with the Kubernetes API, in one place.

Every read-modify-write carries the resourceVersion it read; a 409 Conflict means someone wrote in between. There
are two right answers, as in client-go (``k8s.io/client-go/util/retry``):

- ``retry_on_conflict``: read again and redo the change (status conditions, the ingress's patches);
- ``unless_conflict``: the other writer won and that is the answer (a lease another replica holds, a Secret another
  replica created or renewed first, a Route the user must read again before shifting it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kubernetes.client.exceptions import ApiException

__all__ = ["ATTEMPTS", "CONFLICT", "retry_on_conflict", "unless_conflict"]

CONFLICT = 409
ATTEMPTS = 5  # client-go's DefaultRetry tries 5 times too
_T = TypeVar("_T")


def _nothing() -> None:
    pass


def retry_on_conflict(
    attempt: Callable[[], _T], *, what: str, attempts: int = ATTEMPTS, on_conflict: Callable[[], None] = _nothing
) -> _T:
    """Runs ``attempt`` (one read, change and write with the resourceVersion read) until it does not meet a 409.
    ``on_conflict`` is called after each conflict (a counter). After ``attempts`` conflicts: ApiException 409."""
    for _ in range(attempts):
        try:
            return attempt()
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
            on_conflict()
    raise ApiException(status=CONFLICT, reason=f"{what}: still conflicting after {attempts} attempts")


def unless_conflict(write: Callable[[], object]) -> bool:
    """True when ``write`` went through, False when it met a 409 (someone else wrote first); other errors raise."""
    try:
        write()
    except ApiException as exc:
        if exc.status != CONFLICT:
            raise
        return False
    return True
