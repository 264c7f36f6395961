"""Content types as producers write them: parameters and case do not matter, and the types a
hostile producer makes up are judged without growing anything without bound."""

from __future__ import annotations

import pytest

from consumer_host.consuming import decoding
from consumer_host.consuming.decoding import BadMessage, content_types, decode
from consumer_host.message import Delivery

ACCEPTED = content_types(["json"])


def delivery(content_type: str, body: bytes = b'{"a": 1}') -> Delivery:
    return Delivery(
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        headers={},
        properties={},
        delivery_info={},
    )


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=utf-8", " application/json ;x"]
)
def test_json_with_parameters_or_in_capitals_is_json(content_type):
    for _ in range(2):  # the second time from what was remembered
        assert decode(delivery(content_type), ACCEPTED, 1000) == {"a": 1}


def test_made_up_content_types_are_refused_and_remembered_only_up_to_a_bound():
    for index in range(1000):
        with pytest.raises(BadMessage, match="content_type_not_accepted"):
            decode(delivery(f"application/x-{index}"), ACCEPTED, 1000)
    assert len(decoding._MEDIA_TYPES) <= decoding._MEDIA_TYPES_KEPT
    assert decode(delivery("application/json; charset=utf-8"), ACCEPTED, 1000) == {"a": 1}
