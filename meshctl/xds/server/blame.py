"""Which objects does a NACK blame? The ones new in the rejected update, minus those some proxy accepted.

Each resource records the (object, IR value) pairs it was built from (``CachedResource.origins``). The pairs in
what was sent that Envoy did not already hold are the change it rejected; a pair another proxy holds (ACKed) is
known to be fine and is not blamed. Pure: the ADS server calls it, the controller acts on the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from meshctl.model import ObjectKey
from meshctl.xds.cache import CachedResource

__all__ = ["blame"]


def blame(
    sent: Mapping[str, CachedResource],
    held: Mapping[str, CachedResource],
    held_elsewhere: Iterable[Mapping[str, CachedResource]] = (),
) -> set[ObjectKey]:
    suspects: set[tuple[ObjectKey, Hashable]] = set()
    changed = []
    for name, res in sent.items():
        old = held.get(name)
        if old is not None and old.version == res.version:
            continue
        changed.append(name)
        suspects |= res.origins - (old.origins if old is not None else frozenset())
    for other in held_elsewhere:
        if not suspects:
            break
        for name in changed:
            if (held_there := other.get(name)) is not None:
                suspects -= held_there.origins
    return {owner for owner, _ in suspects}
