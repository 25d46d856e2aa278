"""The config dump is written in pieces (issue 14): byte for byte what json.dumps gives, without one long C call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.admin import app as admin

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


@given(_json)
def test_pieces_join_to_what_json_dumps_gives(value: Any) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(admin, "_SPLIT", 2)  # small, so that generated values are split at every level they can be
        assert b"".join(admin.json_pieces(value)) == json.dumps(value).encode()


def test_a_long_list_and_the_dict_holding_it_are_split_element_by_element() -> None:
    hosts = [
        {"name": f"host-{i}", "domains": [f"h{i}", f"h{i}.svc"], "routes": [{"match": {"prefix": "/"}}]}
        for i in range(1000)
    ]
    pieces = admin.json_pieces({"name": "gateway", "virtual_hosts": hosts})
    assert b"".join(pieces) == json.dumps({"name": "gateway", "virtual_hosts": hosts}).encode()
    assert max(map(len, pieces)) == len(json.dumps(hosts[-1]))  # no piece holds more than one host
    assert len(admin.json_pieces(hosts[0])) == 1  # a small resource stays one piece
