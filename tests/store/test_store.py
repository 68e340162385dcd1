"""The store's contract, run against both implementations: a single Redis (atomic) and a Redis Cluster (ordered).

Every store method and every event it publishes is checked here on real servers, the same test for both backends
(Dramatiq's ``params=[...]`` fixture idiom), so the two paths cannot drift apart again. Where the backends differ
on purpose (a retried listener batch, atomicity), the test says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from typing import Any

import pytest
import redis

from redswitch.config import Settings
from redswitch.errors import LeaseLost
from redswitch.store import Batch, CallStore, ChannelChange, Fence, Limit, events, open_store
from redswitch.store.connection import redis_from_settings
from redswitch.store.lua import names, source
from tests.payloads import next_event

NODE = "fs1"


def record_of(dial_id: str, **fields: str) -> dict[str, str]:
    base = {"org_id": "org", "user_id": dial_id, "job_uuid": f"job-{dial_id}", "state": "dialling", "node": NODE}
    return {**base, **fields}


def claimed(store: CallStore, dial_id: str, **fields: str) -> dict[str, str]:
    record = record_of(dial_id, **fields)
    store.claim(dial_id, "org", dial_id, record)
    return record


def change(kind: str, dial_id: str, side: str, event: dict[str, Any] | None = None) -> ChannelChange:
    return ChannelChange(kind, dial_id, "org", dial_id, side, NODE, events.encode(event) if event else "")


def answered(dial_id: str, side: str) -> ChannelChange:
    return change("answered", dial_id, side, events.answer(side))


def hung_up(dial_id: str, side: str, cause: str = "NORMAL_CLEARING", **extra: Any) -> ChannelChange:
    return change("hung_up", dial_id, side, events.hangup(side, cause, **extra))


def subscribed(client: redis.Redis, *channels: str) -> Any:
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(*channels)
    return pubsub


def heard(pubsub: Any, lifecycle: str = "redswitch:calls", starts: bool = False) -> list[Any]:
    """Every message so far: events decoded from JSON, lifecycle announcements as their text.

    ``start:`` announcements only with ``starts``: on a cluster a PUBLISH reaches the other nodes over the cluster
    bus, so a subscriber that joined just after a claim may still hear its ``start:``.
    """
    out: list[Any] = []
    while (message := pubsub.get_message(timeout=0.3)) is not None:
        if message["type"] == "message":
            if message["channel"] == lifecycle:
                if starts or not str(message["data"]).startswith("start:"):
                    out.append(message["data"])
            else:
                out.append(json.loads(message["data"]))
    return out


def history(client: redis.Redis, store: CallStore, user_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(store.keys.history("org", user_id), 0, -1)]


def active(client: redis.Redis, store: CallStore, dial_id: str) -> list[str]:
    return [str(item) for item in client.lrange(store.keys.active(dial_id, "org", dial_id), 0, -1)]


# -- the backend -----------------------------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_the_client(store: CallStore, settings: Settings) -> None:
    assert store.atomic is ("cluster" not in type(store).__name__.lower())
    assert store.keys.cluster is not store.atomic


# -- a call's life ---------------------------------------------------------------------------------------------


def test_claim_records_the_call_resets_the_history_and_announces_call_start_once(
    store: CallStore, client: redis.Redis
) -> None:
    client.rpush(store.keys.history("org", "c1"), '{"type": "stale"}')
    pubsub = subscribed(client, "c1", store.keys.lifecycle())
    record = record_of("c1")
    assert store.claim("c1", "org", "c1", record) == (True, record)
    assert store.claim("c1", "org", "c1", {**record, "state": "other"}) == (False, record)  # changes nothing
    assert heard(pubsub, starts=True) == [{"type": "call-start", "dial_id": "c1"}, "start:c1"]
    assert history(client, store, "c1") == [{"type": "call-start", "dial_id": "c1"}]
    assert 0 < client.ttl(store.keys.history("org", "c1")) <= 4 * 3600
    assert store.is_active("c1") and store.active_calls() == ["c1"]
    assert client.get(store.keys.job("job-c1")) == "c1"
    assert store.call_record("c1") == record and store.active_call_record("c1") == record


def test_applied_changes_keep_the_active_list_and_history_and_publish_each_event_in_order(
    store: CallStore, client: redis.Redis
) -> None:
    claimed(store, "c2")
    store.sent("c2", NODE).run(client)
    pubsub = subscribed(client, "c2", store.keys.lifecycle())
    store.apply([change("seen", "c2", "0"), answered("c2", "0"), answered("c2", "1")], Batch("l", 1))
    assert sorted(active(client, store, "c2")) == ["ACTIVE.0", "ACTIVE.1"]
    assert 0 < client.ttl(store.keys.active("c2", "org", "c2")) <= 24 * 3600
    assert store.call_record("c2")["seen"] == "1"
    busy = hung_up("c2", "1", "USER_BUSY", sip_code="486", retryable=False)
    store.apply([busy, hung_up("c2", "0")], Batch("l", 2))
    expected = [
        {"type": "answer-event", "side": "0"},
        {"type": "answer-event", "side": "1"},
        # the same bytes on both backends, extensions included (a cluster used to drop sip_code and retryable)
        {"type": "hangup-event", "side": "1", "cause": "USER_BUSY", "sip_code": "486", "retryable": False},
        {"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"},
    ]
    assert heard(pubsub) == [*expected, "end:c2"]
    # newest first, as the original LPUSHed (LIST_ORDER=newest_first, the default)
    assert history(client, store, "c2") == [*reversed(expected), {"type": "call-start", "dial_id": "c2"}]
    assert active(client, store, "c2") == [] and not store.is_active("c2")
    assert store.node_calls(NODE) == set()


def test_a_bargers_answer_and_hangup_set_and_clear_its_fields(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "c3")
    assert store.claim_barger("c3", "b-uuid") and not store.claim_barger("c3", "other")
    store.update_call("c3", barger_mode="listen")
    store.apply([answered("c3", "2")], Batch("l", 1))
    assert store.call_record("c3")["barger_answered"] == "1"
    store.apply([hung_up("c3", "2")], Batch("l", 2))
    record = store.call_record("c3")
    assert not {"barger_uuid", "barger_mode", "barger_answered"} & set(record) and record["seen"] == "1"
    assert store.is_active("c3")  # a barger leaving does not end the call


def test_record_events_are_published_logged_and_a_stop_clears_the_recording_it_names(
    store: CallStore, client: redis.Redis
) -> None:
    claimed(store, "c9")
    store.update_call("c9", recording="c9_2.wav")
    pubsub = subscribed(client, "c9")
    start = change("record_start", "c9", "0", events.record("start", "c9_2.wav", "0"))
    old_stop = change("record_stop", "c9", "0", events.record("stop", "c9_1.wav", "0"))  # an earlier recording's
    store.apply([start, old_stop], Batch("l", 1))
    assert store.call_record("c9")["recording"] == "c9_2.wav"
    store.apply([change("record_stop", "c9", "0", events.record("stop", "c9_2.wav", "0"))], Batch("l", 2))
    assert "recording" not in store.call_record("c9")
    got = [e for e in heard(pubsub) if e["type"] == "record-event"]
    assert [(e["state"], e["file"]) for e in got] == [("start", "c9_2.wav"), ("stop", "c9_1.wav"), ("stop", "c9_2.wav")]
    entries: list[tuple[str, dict[str, str]]] = client.xrange(store.keys.events("c9"))  # type: ignore[assignment]
    logged = [json.loads(fields["event"]) for _, fields in entries]
    assert [e["type"] for e in logged].count("record-event") == 3
    assert not [e for e in history(client, store, "c9") if e["type"] == "record-event"]  # HISTORY_EVENTS=call
    assert store.is_active("c9") and active(client, store, "c9") == []
    pubsub.close()


@pytest.mark.parametrize("history_events", ["call", "all"])
def test_early_media_is_announced_and_logged_and_changes_no_state(
    store: CallStore, client: redis.Redis, settings: Settings, history_events: str
) -> None:
    store = open_store(client, dataclasses.replace(settings, history_events=history_events))
    claimed(store, "e1")
    before = store.call_record("e1")
    pubsub = subscribed(client, "e1")
    store.apply([change("early_media", "e1", "0", events.early_media("0")), answered("e1", "0")], Batch("l", 1))
    assert [e for e in heard(pubsub) if e["type"] != "call-start"] == [
        {"type": "early-media-event", "side": "0"},
        {"type": "answer-event", "side": "0"},
    ]
    entries: list[tuple[str, dict[str, str]]] = client.xrange(store.keys.events("e1"))  # type: ignore[assignment]
    assert [json.loads(fields["event"])["type"] for _, fields in entries][-2:] == ["early-media-event", "answer-event"]
    in_history = [e["type"] for e in history(client, store, "e1")]
    assert ("early-media-event" in in_history) == (history_events == "all"), in_history
    assert active(client, store, "e1") == ["ACTIVE.0"]  # only the answer lists the side
    after = store.call_record("e1")
    assert {k: v for k, v in after.items() if k != "seen"} == {k: v for k, v in before.items() if k != "seen"}
    pubsub.close()


def test_a_transfer_is_reserved_once_and_its_new_leg_becomes_the_side(store: CallStore, client: redis.Redis) -> None:
    record = claimed(store, "c10", uuid1="old-1", held1="1")
    store.apply([answered("c10", "0"), answered("c10", "1")], Batch("l", 1))
    assert store.listed("c10", "org", "c10") == {"0", "1"}
    assert store.claim_transfer("c10", "new-1", 1_000, 60_000)
    assert not store.claim_transfer("c10", "new-2", 2_000, 60_000)  # one at a time
    assert store.claim_transfer("c10", "new-3", 70_000, 60_000)  # a killed worker's stale reservation
    pubsub = subscribed(client, "c10")
    store.transferred("c10", record, "1", "new-1", events.answer("1", transfer=True))
    got = store.call_record("c10")
    assert got["uuid1"] == "new-1" and "held1" not in got
    assert sorted(active(client, store, "c10")) == ["ACTIVE.0", "ACTIVE.1"]
    assert heard(pubsub) == [{"type": "answer-event", "side": "1", "transfer": True}]
    assert history(client, store, "c10")[0] == {"type": "answer-event", "side": "1", "transfer": True}
    pubsub.close()


def test_changes_of_a_call_without_a_record_are_announced_and_create_no_record(
    store: CallStore, client: redis.Redis
) -> None:
    pubsub = subscribed(client, "c4")
    store.apply([change("seen", "c4", "0"), answered("c4", "0")], Batch("l", 1))
    assert heard(pubsub) == [{"type": "answer-event", "side": "0"}]
    assert store.call_record("c4") == {}


def test_a_retried_batch_is_skipped_where_the_store_is_atomic(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "c5")
    pubsub = subscribed(client, "c5")
    batch = Batch("retrying-listener", 7)
    store.apply([answered("c5", "0")], batch)
    store.apply([answered("c5", "0")], batch)  # the reply was lost: the listener sends the batch again
    # one script on a single Redis knows the batch was applied; a cluster's steps span slots (documented)
    assert len(heard(pubsub)) == (1 if store.atomic else 2)


def test_state_is_written_before_the_event_announcing_it(store: CallStore, settings: Settings) -> None:
    # A consumer reads the history and the active list the moment each event arrives, on its own connection.
    reader = redis_from_settings(settings)
    seen: list[tuple[dict[str, Any], list[Any], list[Any]]] = []
    pubsub = subscribed(reader, "c6")
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            event = next_event(pubsub, timeout=0.1)
            if event is not None:
                seen.append((event, history(reader, store, "c6"), active(reader, store, "c6")))

    consumer = threading.Thread(target=consume)
    consumer.start()
    claimed(store, "c6")
    for side in ("0", "1"):
        store.apply([answered("c6", side)], Batch("l", int(side) + 1))
    store.apply([hung_up("c6", "1")], Batch("l", 3))
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    consumer.join()
    assert [event["type"] for event, _, _ in seen] == ["call-start", "answer-event", "answer-event", "hangup-event"]
    for event, events_kept, listed in seen:
        assert event in events_kept  # already in the history when it was heard (later changes may be there too)
        if event["type"] == "hangup-event":
            assert "ACTIVE.1" not in listed
    reader.close()


def test_sent_counts_the_call_on_its_node_only_from_dialling_and_while_active(
    store: CallStore, client: redis.Redis
) -> None:
    claimed(store, "c7")
    store.sent("c7", NODE).run(client)
    assert store.call_record("c7")["state"] == "sent" and store.node_calls(NODE) == {"c7"}
    store.sent("c7", "fs2").run(client)  # a late second reply changes nothing
    assert store.call_record("c7")["node"] == NODE and store.node_calls("fs2") == set()
    claimed(store, "c8")
    store.end_call("c8", NODE)  # ended before the originate's reply came
    store.sent("c8", NODE).run(client)
    assert store.call_record("c8")["state"] == "sent" and "c8" not in store.node_calls(NODE)


def test_fail_announces_failure_and_ends_the_call(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "c9")
    store.sent("c9", NODE).run(client)
    pubsub = subscribed(client, "c9", store.keys.lifecycle())
    store.fail("c9", "org", "c9", events.failure("USER_BUSY", reason="busy", retryable=False), node=NODE)
    failure = {"type": "failure", "cause": "USER_BUSY", "reason": "busy", "retryable": False}
    assert heard(pubsub) == [failure, "end:c9"]
    assert history(client, store, "c9")[0] == failure
    assert not store.is_active("c9") and store.node_calls(NODE) == set()
    # without ids (a job refused before it became a call) only the channel hears it, and nothing ends
    claimed(store, "c10")
    pubsub = subscribed(client, "c10")
    store.fail("c10", None, None, events.failure("DUPLICATE_DIAL_ID"), end_call=False)
    assert heard(pubsub) == [{"type": "failure", "cause": "DUPLICATE_DIAL_ID"}] and store.is_active("c10")
    assert history(client, store, "c10") == [{"type": "call-start", "dial_id": "c10"}]


def test_reply_writes_its_fields_before_announcing_it(store: CallStore, client: redis.Redis) -> None:
    record = claimed(store, "c11")
    pubsub = subscribed(client, "c11")
    store.reply("c11", events.ack("mute"), record, barger_mode="listen")
    assert heard(pubsub) == [{"type": "ack", "event": "mute"}]
    assert store.call_record("c11")["barger_mode"] == "listen"
    assert history(client, store, "c11") == [{"type": "call-start", "dial_id": "c11"}]  # acks stay on the channel
    pubsub = subscribed(client, "nobody")
    store.reply("nobody", events.error("hangup", "no active call"))
    assert heard(pubsub) == [{"type": "error", "event": "hangup", "reason": "no active call"}]


def test_relay_ownership_is_kept_by_a_live_bridge_and_taken_from_a_dead_one(
    store: CallStore, client: redis.Redis
) -> None:
    assert store.relay_owner("c12", "b1") == "" and not store.claim_relay("c12", "b1")  # no active call: no owner
    assert client.get(store.keys.relay_owner("c12")) is None
    claimed(store, "c12")
    client.set(store.keys.bridge_alive("b1"), "1")
    assert store.claim_relay("c12", "b1") and store.claim_relay("c12", "b1")
    assert not store.claim_relay("c12", "b2")  # b1 is alive
    client.delete(store.keys.bridge_alive("b1"))
    client.set(store.keys.bridge_alive("b2"), "1")
    assert store.claim_relay("c12", "b2") and not store.claim_relay("c12", "b1")
    assert client.get(store.keys.relay_owner("c12")) == "b2"
    assert store.relay_owner("c12", "b1") == "other" and store.relay_owner("c12", "b2") == "mine"


def test_every_relay_names_a_control_message_alike_and_one_execution_takes_it(
    store: CallStore, client: redis.Redis
) -> None:
    claimed(store, "k1")
    since = int(client.time()[0]) * 1000 - 1000
    # two relays hear two identical whispers, then a mute; each relay passes the last entry it matched per digest
    assert store.control_note("k1", "whisper", since, 30_000, 0) == (1, "")
    assert store.control_note("k1", "whisper", since, 30_000, 0) == (1, "")  # the second relay: the same message
    assert store.control_note("k1", "whisper", since, 30_000, 1) == (2, "")
    assert store.control_note("k1", "whisper", since, 30_000, 1) == (2, "")
    assert store.control_note("k1", "mute", since, 30_000, 0) == (1, "")
    # a relay subscribed after an entry was made never takes it for a message it heard
    assert store.control_note("k1", "whisper", since + 3_600_000, 30_000, 0)[0] == 3
    a1, a2 = "whisper:1", "whisper:2"
    # one execution takes each message; the same execution again (a retry) still has it
    record, mine = store.control_record("k1", a1, "exec-1", 30_000)
    assert mine and record is not None and record["org_id"] == "org"
    assert store.control_record("k1", a1, "exec-2", 30_000)[1] is False
    assert store.control_record("k1", a1, "exec-1", 30_000)[1] is True
    assert store.control_taken("k1", a1) and not store.control_taken("k1", a2)
    assert store.control_note("k1", "whisper", since, 30_000, 0)[1] == "exec-1"  # a late relay learns it was taken
    assert 0 < client.pttl(store.keys.control_log("k1")) <= 60_000
    store.end_call("k1", NODE)
    assert store.control_record("k1", a2, "exec-3", 30_000) == (None, True)  # taken, and the call is over


def test_a_hangup_cancels_a_call_that_was_never_dialled(store: CallStore, client: redis.Redis) -> None:
    record = claimed(store, "q1")
    pubsub = subscribed(client, "q1", store.keys.lifecycle())
    ack, hangup = events.ack("hangup"), events.hangup("0", "ORIGINATOR_CANCEL", reason="cancelled")
    assert not store.cancel("q1", record, ack, hangup)  # dialling: FreeSWITCH may have it
    assert store.defer("q1")  # admission holds it back
    assert store.cancel("q1", record, ack, hangup)
    assert heard(pubsub) == [ack, hangup, "end:q1"]
    assert store.call_record("q1")["state"] == "cancelled" and not store.is_active("q1")
    assert client.exists(store.keys.active("q1", "org", "q1")) == 0
    assert history(client, store, "q1") == [hangup, {"type": "call-start", "dial_id": "q1"}]
    assert not store.cancel("q1", record, ack, hangup)  # once
    assert not store.defer("q1") and store.call_record("q1")["state"] == "cancelled"  # never back to claimed
    assert not store.begin_dial("q1", "claimed", "", "1.0")


def test_repair_answers_announces_each_missed_answer_once_in_order(store: CallStore, client: redis.Redis) -> None:
    record = claimed(store, "m1", state="sent")
    store.update_call("m1", barger_uuid="b")
    store.apply([answered("m1", "0")], Batch("l", 1))
    pubsub = subscribed(client, "m1")

    def answer(side: str) -> dict[str, Any]:
        return events.answer(side, reason="reconciled")

    assert store.repair_answers("m1", record, {"0", "1", "2"}, answer) == ["1", "2"]
    assert store.repair_answers("m1", record, {"0", "1", "2"}, answer) is None  # once
    assert heard(pubsub) == [answer("1"), answer("2")]
    assert sorted(active(client, store, "m1")) == ["ACTIVE.0", "ACTIVE.1", "ACTIVE.2"]
    assert store.call_record("m1")["barger_answered"] == "1"
    store.end_call("m1", NODE)
    assert store.repair_answers("m1", record, {"3"}, answer) is None  # over: nothing is published


def test_repair_announces_the_hangups_owed_side_0_last_and_ends_the_call(store: CallStore, client: redis.Redis) -> None:
    record = claimed(store, "c13", state="sent")
    store.apply([answered("c13", "0"), answered("c13", "1")], Batch("l", 1))
    pubsub = subscribed(client, "c13", store.keys.lifecycle())

    def hangup(side: str) -> dict[str, Any]:
        return events.hangup(side, "NORMAL_UNSPECIFIED", reason="reconciled")

    assert store.repair("c13", record, {"1"}, False, hangup) == ["1"]
    assert store.repair("c13", record, {"0"}, True, hangup) == ["0"]
    assert heard(pubsub) == [hangup("1"), hangup("0"), "end:c13"]
    assert not store.is_active("c13") and active(client, store, "c13") == []
    assert store.repair("c13", record, {"0"}, True, hangup) is None  # over: nothing more is owed


def test_job_results_are_noted_on_their_call(store: CallStore) -> None:
    assert store.job_result("unknown-job", "+OK") is None
    claimed(store, "c14")
    found = store.job_result("job-c14", "-ERR USER_BUSY")
    assert found is not None
    assert (found.dial_id, found.seen, found.org_id, found.user_id) == ("c14", False, "org", "c14")
    assert store.call_record("c14")["job_result"] == "-ERR USER_BUSY"


def test_an_attempt_is_started_once_deferred_and_retried_once_per_throttle(store: CallStore) -> None:
    record = claimed(store, "c15", job=json.dumps({"type": "asp-call", "dial_id": "c15"}))
    record["dialling_since"] = ""
    store.defer("c15")
    assert store.call_record("c15")["state"] == "claimed"
    assert store.begin_dial("c15", "claimed", "", "1.0") and not store.begin_dial("c15", "claimed", "", "2.0")
    assert store.note_throttled("c15", "job-c15", 2) == (1, {"type": "asp-call", "dial_id": "c15"})
    assert store.note_throttled("c15", "another-attempt", 2) is None
    retried = store.take_retry("c15", 1)
    assert retried is not None and retried["state"] == "claimed" and store.take_retry("c15", 1) is None
    store.update_call("c15", state="sent")
    assert store.note_throttled("c15", "job-c15", 2) == (2, {"type": "asp-call", "dial_id": "c15"})
    assert store.note_throttled("c15", "job-c15", 2) is None  # retried out


# -- admission -------------------------------------------------------------------------------------------------


def test_admission_queues_over_the_org_limit_announcing_once_and_frees_the_slot_at_the_end(
    store: CallStore, client: redis.Redis
) -> None:
    for dial_id in ("a1", "a2"):
        claimed(store, dial_id)
    pubsub = subscribed(client, "a2")
    assert store.admit("a1", "org", "a1", 1, []).verdict == "go"
    queued = store.admit("a2", "org", "a2", 1, [])  # the org's one slot is taken by a1, which is still active
    assert (queued.verdict, queued.position, queued.announced) == ("queued", 1, True)
    assert store.admit("a2", "org", "a2", 1, []).announced is False  # announced once
    assert heard(pubsub) == [{"type": "queued", "reason": "org_max_calls", "position": 1}]
    assert history(client, store, "a2") == [{"type": "call-start", "dial_id": "a2"}]  # published only
    store.end_call("a1", NODE)
    assert store.admit("a2", "org", "a2", 1, []).verdict == "go"


def test_admission_paces_sessions_per_second_and_announces_a_long_wait(store: CallStore, client: redis.Redis) -> None:
    switch = [Limit("switch", NODE, 2)]
    for dial_id in ("r1", "r2", "r3"):
        claimed(store, dial_id)
    pubsub = subscribed(client, "r2", "r3")
    assert store.admit("r1", "org", "r1", 0, switch).verdict == "go"  # a call is two sessions: the next one waits
    paced = store.admit("r2", "org", "r2", 0, switch)
    assert paced.verdict == "wait" and paced.reason == "switch_cps" and 1 <= paced.delay <= 1.3 and paced.announced
    assert store.call_record("r2")["admit_at"]
    again = store.admit("r2", "org", "r2", 0, switch)  # asking again keeps its slot and announces nothing new
    assert again.verdict == "wait" and not again.announced and again.delay <= paced.delay
    later = store.admit("r3", "org", "r3", 0, switch)  # behind r2's slot
    assert later.verdict == "wait" and later.delay > paced.delay + 1
    queued = heard(pubsub)
    assert [(e["type"], e["reason"]) for e in queued] == [("queued", "switch_cps")] * 2
    assert queued[0]["position"] < queued[1]["position"]


def test_no_limit_means_no_round_trip(store: CallStore, client: redis.Redis) -> None:
    assert store.admit("free", "org", "free", 0, []).verdict == "go"
    assert client.keys("redswitch:admission*") == []


# -- nodes and housekeeping ------------------------------------------------------------------------------------


def test_node_load_counts_calls_marks_down_and_takes_turns(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "n1")
    store.sent("n1", "fs1").run(client)
    store.mark_node_down("fs2", 5_000)
    calls, down, turn = store.node_load(["fs1", "fs2"])
    assert calls == [1, 0] and down == [False, True]
    assert store.node_load(["fs1", "fs2"])[2] == turn + 1


def test_a_lease_has_one_holder_and_the_dead_list_keeps_its_newest(store: CallStore, client: redis.Redis) -> None:
    lease = store.keys.scheduler_lease()
    assert store.hold_lease(lease, "a", 30_000) and not store.hold_lease(lease, "b", 30_000)
    store.release_lease(lease, "b")  # not b's: nothing changes
    assert store.hold_lease(lease, "a", 30_000)
    store.release_lease(lease, "a")
    assert store.hold_lease(lease, "b", 30_000)
    client.rpush(store.keys.dead, *[str(n) for n in range(5)])
    assert store.trim_dead(3) == 2 and client.lrange(store.keys.dead, 0, -1) == ["2", "3", "4"]


def test_a_node_lease_has_one_holder_and_a_fresh_token_at_each_take(store: CallStore) -> None:
    first = store.hold_node(NODE, "la", 30_000)
    assert first.startswith("la/") and store.hold_node(NODE, "lb", 30_000) == ""
    assert store.hold_node(NODE, "la", 30_000, first) == first  # renewed with its token
    store.release_node(NODE, "lb/1/0")  # not lb's: nothing changes
    assert store.node_leases([NODE])[0].listener == "la"
    store.release_node(NODE, first)
    assert store.hold_node(NODE, "la", 30_000, first) == ""  # a lost lease is never renewed, only taken afresh
    again = store.hold_node(NODE, "la", 30_000)
    assert again and again != first
    lease = store.node_leases([NODE, "fs-none"])
    assert lease[0].token == again and 0 < lease[0].expires_ms <= 30_000 and lease[1].token == ""
    assert store.listeners_alive("la", 30_000) == ["la"]
    assert store.listeners_alive("lb", 30_000) == ["la", "lb"]
    assert store.listeners_alive("la", 30_000, leaving=True) == ["lb"]


def test_a_batch_fenced_by_a_lease_another_listener_took_is_refused_whole(
    store: CallStore, client: redis.Redis
) -> None:
    claimed(store, "f1")
    pubsub = subscribed(client, "f1")
    old = Fence(NODE, store.hold_node(NODE, "old", 30_000))
    store.apply([answered("f1", "0")], Batch("old-listener", 1), old)
    # When the lease passes to another listener (the old one's expired, or it was handed over)
    store.release_node(NODE, old.token)
    new = Fence(NODE, store.hold_node(NODE, "new", 30_000))
    # Then the old listener's next batch changes nothing and announces nothing
    with pytest.raises(LeaseLost):
        store.apply([answered("f1", "1"), hung_up("f1", "0")], Batch("old-listener", 2), old)
    assert active(client, store, "f1") == ["ACTIVE.0"] and store.is_active("f1")
    # while the new holder's goes through
    store.apply([answered("f1", "1")], Batch("new-listener", 1), new)
    assert [(e["type"], e["side"]) for e in heard(pubsub)] == [("answer-event", "0"), ("answer-event", "1")]


def test_recovery_announces_only_what_redis_does_not_hold_yet(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "r1")
    claimed(store, "r2")
    fence = Fence(NODE, store.hold_node(NODE, "new", 30_000))
    store.apply([answered("r1", "0")], Batch("previous", 1))  # the previous owner published side 0's answer
    pubsub = subscribed(client, "r1", "r2", "redswitch:calls")
    recovered = events.hangup("0", "NORMAL_UNSPECIFIED", reason="recovered")
    changes = [
        change("answered", "r1", "0", events.answer("0", reason="recovered")),  # already listed: not again
        change("answered", "r1", "1", events.answer("1", reason="recovered")),
        change("hung_up", "r1", "1", events.hangup("1", "NORMAL_UNSPECIFIED", reason="recovered")),
        change("hung_up", "r1", "0", recovered),
        change("hung_up", "r1", "0", recovered),  # the call is over: nothing more for it
        change("hung_up", "r2", "1", events.hangup("1", "NORMAL_UNSPECIFIED")),  # never listed: not owed
    ]
    assert store.recover(changes, fence) == 3
    assert [(e["type"], e["side"]) if isinstance(e, dict) else e for e in heard(pubsub)] == [
        ("answer-event", "1"),
        ("hangup-event", "1"),
        ("hangup-event", "0"),
        "end:r1",
    ]
    assert not store.is_active("r1") and store.is_active("r2") and active(client, store, "r1") == []
    # and a listener that does not hold the lease recovers nothing
    with pytest.raises(LeaseLost):
        store.recover([change("answered", "r2", "0", events.answer("0"))], Fence(NODE, "stale/1/0"))
    assert active(client, store, "r2") == []


# -- the scripts -----------------------------------------------------------------------------------------------

_LITERAL = re.compile(r"'([^']*)'|\"([^\"]*)\"")
#: Commands whose first argument is a key.
_KEYED = re.compile(r"redis\.call\('([A-Z]+)',\s*([^,)]+)")


def test_no_script_builds_a_key_name() -> None:
    """Every key reaches a script through KEYS[] (from redswitch/store/keys.py): a script that built one would
    write where its caller cannot see, and on a cluster, into a slot it was not routed to."""
    for name in names():
        text = re.sub(r"--[^\n]*", "", source(name))  # comments may name anything
        literals = [a or b for a, b in _LITERAL.findall(text)]
        assert not [lit for lit in literals if "redswitch" in lit or "history" in lit], name
        for command, key in _KEYED.findall(text):
            if command in ("TIME",):
                continue
            assert ".." not in key and not key.strip().startswith(("'", '"')), f"{name}: {command} {key}"


# -- what legacy consumers see: LIST_ORDER and HISTORY_EVENTS --------------------------------------------------


@pytest.mark.parametrize("order", ["original", "redswitch"])
def test_list_order_and_history_events_choose_what_a_reader_of_the_lists_sees(
    settings: Settings, client: redis.Redis, order: str
) -> None:
    """A whole call as the processes write it: call-start, a ``queued`` wait (the org's one slot is taken), both
    answers, an ack and an error, side 1's hangup reconciled by the scheduler, side 0's from the listener.
    ``original``: the defaults (newest first, the call's events); ``redswitch``: oldest first, everything."""
    if order == "redswitch":
        settings = dataclasses.replace(settings, list_order="oldest_first", history_events="all")
    store = open_store(client, settings)
    pubsub = subscribed(client, "play")
    record = claimed(store, "play")
    claimed(store, "holder")
    assert store.admit("holder", "org", "holder", 1, []).verdict == "go"
    assert store.admit("play", "org", "play", 1, []).verdict == "queued"
    store.end_call("holder", NODE)
    store.apply([answered("play", "0"), answered("play", "1")], Batch("l", 1))
    active_answered = active(client, store, "play")
    store.reply("play", events.ack("whisper"))
    store.reply("play", events.error("mute", "no barger on this call"))
    store.repair("play", record, {"1"}, False, lambda side: events.hangup(side, "NORMAL_UNSPECIFIED"))
    store.apply([hung_up("play", "0")], Batch("l", 2))
    published = heard(pubsub)
    kinds = ["call-start", "queued", "answer-event", "answer-event", "ack", "error", "hangup-event", "hangup-event"]
    assert [e["type"] for e in published] == kinds
    kept = history(client, store, "play")
    if order == "original":  # newest first (LINDEX 0 is the latest); the call's events only
        assert active_answered == ["ACTIVE.1", "ACTIVE.0"]
        assert kept == [e for e in published if e["type"] in events.CALL_EVENTS][::-1]
        assert kept[0] == {"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}
    else:  # oldest first; everything published
        assert active_answered == ["ACTIVE.0", "ACTIVE.1"] and kept == published


@pytest.mark.parametrize("order", ["original", "redswitch"])
def test_a_failure_is_a_call_event_kept_in_the_history_under_either_setting(
    settings: Settings, client: redis.Redis, order: str
) -> None:
    if order == "redswitch":
        settings = dataclasses.replace(settings, list_order="oldest_first", history_events="all")
    store = open_store(client, settings)
    claimed(store, "fail_dial")
    store.fail("fail_dial", "org", "fail_dial", events.failure("INVALID_GATEWAY"))
    kept = [e["type"] for e in history(client, store, "fail_dial")]
    assert kept == (["failure", "call-start"] if order == "original" else ["call-start", "failure"])


# -- the event log: every event published is in the call's stream and the firehose ---------------------------------


def logged(client: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    entries: list[tuple[str, dict[str, str]]] = client.xrange(stream)  # type: ignore[assignment]
    return [(str(entry_id), dict(fields)) for entry_id, fields in entries]


def call_stream(client: redis.Redis, store: CallStore, dial_id: str) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in logged(client, store.keys.events(dial_id))]


def test_every_published_event_is_in_the_calls_stream_and_the_firehose_in_order(
    store: CallStore, client: redis.Redis
) -> None:
    """A whole call through every path that publishes: claim, admission's queued, the listener's batch, an ack and
    an error (kept out of the history by HISTORY_EVENTS=call), the reconciler's repair, and a failure without a
    call (a refused job); the same bytes as the channel, in the channel's order."""
    pubsub = subscribed(client, "log")
    record = claimed(store, "log")
    claimed(store, "holder")
    assert store.admit("holder", "org", "holder", 1, []).verdict == "go"
    assert store.admit("log", "org", "log", 1, []).verdict == "queued"
    store.end_call("holder", NODE)
    store.apply([change("seen", "log", "0"), answered("log", "0"), answered("log", "1")], Batch("l", 1))
    store.reply("log", events.ack("whisper"))
    store.reply("log", events.error("mute", "no barger on this call"))
    store.repair("log", record, {"1"}, False, lambda side: events.hangup(side, "NORMAL_UNSPECIFIED", reason="r"))
    store.apply([hung_up("log", "0")], Batch("l", 2))
    store.fail("log", None, None, events.failure("DUPLICATE_DIAL_ID"), end_call=False)
    published = heard(pubsub)
    kinds = ["call-start", "queued", "answer-event", "answer-event", "ack", "error", "hangup-event", "hangup-event"]
    assert [e["type"] for e in published] == [*kinds, "failure"]
    assert call_stream(client, store, "log") == published
    ids = [entry_id for entry_id, _ in logged(client, store.keys.events("log"))]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    fire = [(f["dial_id"], json.loads(f["event"])) for _, f in logged(client, store.keys.firehose())]
    assert [event for dial_id, event in fire if dial_id == "log"] == published
    assert {dial_id for dial_id, _ in fire} == {"log", "holder"}  # holder's call-start
    ttl = client.ttl(store.keys.events("log"))
    assert 4 * 3600 - 60 < ttl <= 4 * 3600  # as long as its history would
    assert client.ttl(store.keys.firehose()) == -1  # capped by length, not by time


def test_the_stream_holds_the_event_when_the_channel_announces_it(store: CallStore, settings: Settings) -> None:
    """A consumer that hears an event on the channel finds it in the call's stream already (and so may switch from
    one to the other without a gap)."""
    reader = redis_from_settings(settings)
    pubsub = subscribed(reader, "seam")
    found: list[bool] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            event = next_event(pubsub, timeout=0.1)
            if event is not None:
                found.append(event in call_stream(reader, store, "seam"))

    consumer = threading.Thread(target=consume)
    consumer.start()
    claimed(store, "seam")
    for number, side in enumerate(("0", "1"), start=1):
        store.apply([answered("seam", side)], Batch("l", number))
    store.reply("seam", events.ack("whisper"))
    store.apply([hung_up("seam", "1"), hung_up("seam", "0")], Batch("l", 3))
    deadline = time.monotonic() + 5
    while len(found) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    consumer.join()
    pubsub.close()
    reader.close()
    assert found == [True] * 6


def test_a_retried_batch_is_logged_once_where_the_store_is_atomic(store: CallStore, client: redis.Redis) -> None:
    claimed(store, "retry_log")
    batch = Batch("retrying-listener", 3)
    store.apply([answered("retry_log", "0")], batch)
    store.apply([answered("retry_log", "0")], batch)
    assert [e["type"] for e in call_stream(client, store, "retry_log")] == (
        ["call-start", "answer-event"] if store.atomic else ["call-start", "answer-event", "answer-event"]
    )


def test_the_firehose_is_capped_near_its_length_and_a_calls_stream_near_its_own(
    settings: Settings, client: redis.Redis
) -> None:
    store = open_store(client, dataclasses.replace(settings, firehose_maxlen=50, event_stream_maxlen=20))
    claimed(store, "capped")
    for number in range(1, 151):
        store.apply([answered("capped", "0"), hung_up("capped", "1")], Batch("l", number))
    # 301 events written; approximate trimming (MAXLEN ~) drops whole nodes of 100 entries: at least the length,
    # at most a node more
    assert 50 <= client.xlen(store.keys.firehose()) <= 150
    assert 20 <= client.xlen(store.keys.events("capped")) <= 120


def test_without_the_event_log_events_are_published_and_nothing_is_logged(
    settings: Settings, client: redis.Redis
) -> None:
    store = open_store(client, dataclasses.replace(settings, event_streams=False))
    pubsub = subscribed(client, "unlogged")
    record = claimed(store, "unlogged")
    store.apply([answered("unlogged", "0")], Batch("l", 1))
    store.reply("unlogged", events.ack("whisper"))
    store.repair("unlogged", record, {"0"}, True, lambda side: events.hangup(side, "NORMAL_UNSPECIFIED"))
    assert [e["type"] for e in heard(pubsub)] == ["call-start", "answer-event", "ack", "hangup-event"]
    assert client.exists(store.keys.events("unlogged"), store.keys.firehose()) == 0
    assert history(client, store, "unlogged")[0]["type"] == "hangup-event"  # the rest is unchanged


@pytest.mark.parametrize("ending", ["listener", "failure", "reconciler"])
def test_an_ended_calls_stream_is_shrunk_to_what_it_holds_and_keeps_its_entries_and_ttl(
    store: CallStore, client: redis.Redis, ending: str
) -> None:
    """Redis preallocates about 4 KB for a new stream; a call's few events would keep all of it for hours."""
    dial = f"shrunk_{ending}"
    record = claimed(store, dial)
    store.apply([answered(dial, "0"), answered(dial, "1")], Batch("l", 1))
    stream = store.keys.events(dial)
    big = client.memory_usage(stream) or 0
    before = logged(client, stream)
    if ending == "listener":
        store.apply([hung_up(dial, "1"), hung_up(dial, "0")], Batch("l", 2))
    elif ending == "failure":
        store.fail(dial, "org", dial, events.failure("NORMAL_TEMPORARY_FAILURE"), node=NODE)
    else:
        store.repair(dial, record, {"0", "1"}, True, lambda side: events.hangup(side, "NORMAL_UNSPECIFIED"))
    after = logged(client, stream)
    assert after[: len(before)] == before and len(after) > len(before)  # the same entries, ids included
    assert (client.memory_usage(stream) or 0) < min(1500, big / 3), big
    assert 4 * 3600 - 60 < client.ttl(stream) <= 4 * 3600
    store.reply(dial, events.error("hangup", "no active call"))  # an entry after the end still goes in, in order
    assert logged(client, stream)[: len(after)] == after and len(logged(client, stream)) == len(after) + 1
