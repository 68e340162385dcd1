"""The simulator's dial-string splitting: the fast paths agree with the character-by-character rules.

The rules are the module's own fallbacks; on text that takes a fast path, each side is computed separately."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redswitch.simulator import dialstring
from redswitch.simulator.dialstring import (
    parse_dial_string,
    split_args,
    split_args_by_rule,
    split_top_by_rule,
    take_block_by_rule,
)

# Text made mostly of the characters the splitters care about, so that every branch is reached.
TEXT = st.text(alphabet="ab =,|'{}[]()<>\\", max_size=40)


@given(TEXT)
def test_split_args_agrees_with_the_rule(text: str) -> None:
    assert split_args(text) == split_args_by_rule(text)


@given(TEXT, st.sampled_from([",", ",|"]))
def test_split_top_agrees_with_the_rule(text: str, seps: str) -> None:
    assert dialstring._split_top(text, seps) == split_top_by_rule(text, seps)


@given(TEXT, st.sampled_from(["{}", "[]", "<>"]))
def test_take_block_agrees_with_the_rule(text: str, pair: str) -> None:
    assert dialstring._take_block(text, pair[0], pair[1]) == take_block_by_rule(text, pair[0], pair[1])
    braced = pair[0] + text
    assert dialstring._take_block(braced, pair[0], pair[1]) == take_block_by_rule(braced, pair[0], pair[1])


def test_a_redswitch_dial_string_splits_into_its_variables_and_leg() -> None:
    variables, legs = parse_dial_string(
        "{origination_uuid=u0,redswitch_dial_id=d1,origination_caller_id_number=1001}"
        "[leg_timeout=30]sofia/gateway/gw1/15105550123"
    )
    assert variables == {"origination_uuid": "u0", "redswitch_dial_id": "d1", "origination_caller_id_number": "1001"}
    assert len(legs) == 1 and legs[0].variables == {"leg_timeout": "30"}
    assert legs[0].endpoint.gateway == "gw1" and legs[0].endpoint.number == "15105550123"
