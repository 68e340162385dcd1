"""The dashboard's live model (redswitch/dashboard/view.py): events folded into calls, failures, rates and deltas."""

from __future__ import annotations

from typing import Any

from redswitch.dashboard.view import LINGER_MS, TEXT_MAX, WINDOW, View, stream_ms

T0 = 1_800_000_000_000  # ms


def at(ms: int) -> str:
    return f"{T0 + ms}-0"


def fold(view: View, dial_id: str, events: list[tuple[int, dict[str, Any]]], live: bool = True) -> None:
    for ms, event in events:
        view.apply(at(ms), dial_id, event, live)


A_CALL = [
    (0, {"type": "call-start", "dial_id": "d1"}),
    (1000, {"type": "answer-event", "side": "0"}),
    (3000, {"type": "answer-event", "side": "1"}),
    (9000, {"type": "hangup-event", "side": "1", "cause": "NORMAL_CLEARING"}),
    (9010, {"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}),
]


def test_a_call_goes_ringing_answered_hung_up_with_its_causes() -> None:
    view = View()
    fold(view, "d1", A_CALL[:1])
    call = view.calls["d1"].to_json()
    assert call["status"] == "dialling" and call["sides"] == {
        "0": {"state": "ringing", "since": T0, "cause": "", "sip_code": ""}
    }
    fold(view, "d1", A_CALL[1:3])
    call = view.calls["d1"].to_json()
    assert call["status"] == "live" and call["answered"] == T0 + 1000
    assert [call["sides"][s]["state"] for s in ("0", "1")] == ["answered", "answered"]
    fold(view, "d1", A_CALL[3:])
    call = view.calls["d1"].to_json()
    assert call["status"] == "ended" and call["ended"] == T0 + 9010
    assert call["sides"]["0"]["state"] == "hungup" and call["sides"]["0"]["cause"] == "NORMAL_CLEARING"


def test_side_1_rings_once_side_0_answered_and_a_refused_side_is_a_failure_by_cause() -> None:
    view = View()
    fold(view, "d2", A_CALL[:2])
    assert view.calls["d2"].sides["1"].state == "ringing"
    fold(view, "d2", [(4000, {"type": "hangup-event", "side": "1", "cause": "USER_BUSY", "sip_code": "486"})])
    assert view.calls["d2"].to_json()["sides"]["1"] == {
        "state": "hungup",
        "since": T0 + 4000,
        "cause": "USER_BUSY",
        "sip_code": "486",
    }
    assert [(f["dial_id"], f["what"], f["cause"]) for f in view.failures] == [("d2", "side 1", "USER_BUSY")]
    assert view.rates.summary((T0 + 4000) // 1000)["causes"] == {"USER_BUSY": 1}


def test_failure_ends_the_call_and_keeps_its_reason() -> None:
    view = View()
    fold(view, "d3", [(0, {"type": "call-start"}), (5, {"type": "failure", "cause": "INVALID_GATEWAY", "reason": "r"})])
    call = view.calls["d3"].to_json()
    assert call["status"] == "failed" and call["failure"] == {"cause": "INVALID_GATEWAY", "reason": "r"}
    assert call["sides"]["0"]["state"] == "hungup"
    assert list(view.failures)[0]["what"] == "failure"


def test_a_queued_call_says_why_it_waits_until_it_is_dialled() -> None:
    view = View()
    fold(view, "d4", [(0, {"type": "call-start"}), (1, {"type": "queued", "reason": "org_max_calls", "position": 2})])
    assert view.calls["d4"].to_json()["queue"] == {"reason": "org_max_calls", "position": 2}
    assert view.queued() == ["d4"]
    view.describe("d4", {"org_id": "o", "user_id": "u", "state": "dialling"})
    assert view.calls["d4"].status == "dialling" and view.queued() == []


def test_barger_mode_follows_the_acks_and_unthreeway_goes_back() -> None:
    view = View()
    fold(view, "d5", A_CALL[:3])
    for verb, mode in [
        ("barge", "listen"),
        ("whisper", "whisper"),
        ("threeway", "threeway"),
        ("unthreeway", "whisper"),
        ("mute", "listen"),
    ]:
        fold(view, "d5", [(5000, {"type": "ack", "event": verb})])
        assert view.calls["d5"].barger_mode == mode, verb
    fold(view, "d5", [(5100, {"type": "error", "event": "threeway", "reason": "no barger on this call"})])
    assert view.calls["d5"].barger_mode == "listen"
    assert view.calls["d5"].reply["type"] == "error" and view.calls["d5"].reply["reason"] == "no barger on this call"
    fold(view, "d5", [(6000, {"type": "hangup-event", "side": "2", "cause": "NORMAL_CLEARING"})])
    assert view.calls["d5"].barger_mode == ""


def test_rates_count_per_second_org_and_gateway_once_the_record_is_known() -> None:
    view = View()
    for n in range(3):
        fold(view, f"r{n}", [(n * 10, {"type": "call-start"})])
        view.describe(f"r{n}", {"org_id": "acme", "user_id": "u", "call_provider": "gw1"})
    fold(view, "r0", [(500, {"type": "answer-event", "side": "0"}), (900, {"type": "answer-event", "side": "1"})])
    summary = view.rates.summary(T0 // 1000)
    assert summary["series"]["starts"][-1] == 3 and summary["series"]["answers"][-1] == 1
    assert len(summary["series"]["starts"]) == WINDOW
    assert summary["org"] == {"acme": {"starts": 3, "answers": 1, "failures": 0}}
    assert summary["gateway"] == {"gw1": {"starts": 3, "answers": 1, "failures": 0}}


def test_the_snapshot_is_history_not_rates_and_a_replayed_suffix_changes_nothing() -> None:
    view = View()
    fold(view, "d6", A_CALL, live=False)
    fold(view, "d6", A_CALL[2:], live=True)  # the firehose after the snapshot's position replays the tail
    call = view.calls["d6"].to_json()
    assert call["status"] == "ended" and call["sides"]["1"]["state"] == "hungup"
    assert not view.failures  # answered sides are no failures
    assert view.rates.summary(T0 // 1000)["series"]["starts"][-1] == 0  # the snapshot's start is not counted


def test_drain_gives_only_what_changed_once() -> None:
    view = View()
    fold(view, "a", A_CALL[:1])
    fold(view, "b", A_CALL[:1])
    view.drain(T0, rates=False)
    fold(view, "b", A_CALL[1:2])
    delta = view.drain(T0 + 1000, rates=False)
    assert delta is not None and [c["dial_id"] for c in delta["calls"]] == ["b"]
    assert view.drain(T0 + 1200, rates=False) is None


def test_ended_calls_linger_then_are_removed() -> None:
    view = View()
    fold(view, "e", A_CALL)
    view.drain(T0, rates=False)
    view.prune(T0 + 9010 + LINGER_MS - 1)
    assert "e" in view.calls
    view.prune(T0 + 9010 + LINGER_MS)
    assert "e" not in view.calls
    delta = view.drain(T0 + 9010 + LINGER_MS, rates=False)
    assert delta is not None and delta["removed"] == ["e"]


def test_replies_for_unknown_calls_make_no_call_and_any_text_is_kept_as_data() -> None:
    view = View()
    fold(view, "zz", [(0, {"type": "ack", "event": "hangup"})])
    assert view.calls == {} and list(view.replies)[0]["dial_id"] == "zz"
    hostile = "<img src=x onerror=alert(1)>"
    view.apply(at(1), hostile, {"type": "call-start"})
    view.apply(at(2), hostile, {"type": "failure", "cause": "<b>x</b>", "reason": "</td><script>"})
    assert view.calls[hostile].to_json()["failure"] == {"cause": "<b>x</b>", "reason": "</td><script>"}


def test_text_from_an_event_is_bounded() -> None:
    view = View()
    view.apply(at(0), "x" * 100_000, {"type": "failure", "cause": "c" * 100_000, "reason": "r" * 100_000})
    (call,) = view.calls.values()
    assert len(call.dial_id) == TEXT_MAX and len(call.failure) == TEXT_MAX and len(call.reason) == TEXT_MAX


def test_stream_ms() -> None:
    assert stream_ms("1795931653129-3") == 1795931653129
    assert stream_ms("nonsense") == 0


def test_deltas_and_snapshots_list_new_calls_oldest_first_so_the_page_can_put_each_on_top() -> None:
    view = View()
    names = [f"order{n:03d}" for n in range(200)]
    for n, name in enumerate(names):
        fold(view, name, [(n, {"type": "call-start", "dial_id": name})])
    delta = view.drain(T0 + 1000, rates=False)
    assert delta is not None and [call["dial_id"] for call in delta["calls"]] == names
    # a snapshot after calls were loaded out of order (the active set has none) still goes by when each started
    loaded = View()
    for n, name in reversed(list(enumerate(names))):
        fold(loaded, name, [(n, {"type": "call-start", "dial_id": name})], live=False)
    assert [call["dial_id"] for call in loaded.snapshot(T0 + 1000)["calls"]] == names


def test_early_media_shows_on_a_ringing_side_until_it_answers() -> None:
    view = View()
    fold(view, "em", [(0, {"type": "call-start", "dial_id": "em"}), (100, {"type": "early-media-event", "side": "0"})])
    assert view.calls["em"].to_json()["sides"]["0"]["state"] == "early media"
    fold(view, "em", [(900, {"type": "answer-event", "side": "0"}), (950, {"type": "early-media-event", "side": "0"})])
    assert view.calls["em"].to_json()["sides"]["0"]["state"] == "answered"  # a late copy changes nothing
    fold(view, "em", [(1000, {"type": "early-media-event", "side": "1"})])
    assert view.calls["em"].to_json()["sides"]["1"] == {
        "state": "early media",
        "since": T0 + 1000,
        "cause": "",
        "sip_code": "",
    }
