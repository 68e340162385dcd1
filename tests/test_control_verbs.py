"""The control verbs beyond the seed's six, and signed control, over real processes on the simulator.

The pipeline runs with ``CONTROL_SECRET`` set and every verb but ``unhold`` needing a signature
(``CONTROL_SIGNED_VERBS``), two bridges (so every message is heard by two relays).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch import auth
from tests.pipeline import Pipeline, has
from tests.servers import RedisServer
from tests.test_control import command, reply_to, unique

SECRET = "verbs-secret"
WINDOW = 60
SIGNED = (
    "hangup,barge,whisper,mute,threeway,unthreeway,coach-callee,send-dtmf,hold,record,stop-record,play,stop-play,"
    "transfer"
)
RECORDINGS = "/var/lib/freeswitch/recordings"

pytestmark = pytest.mark.sim_only  # reads what the simulator's channels did (held, DTMF sent, eavesdrop mode)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The sounds directory (the worker sees the same one): two prompts, and a link leading out of it."""
    directory = tmp_path_factory.mktemp("sounds")
    (directory / "welcome.wav").write_bytes(b"RIFF")
    (directory / "hold-music.wav").write_bytes(b"RIFF")
    outside = tmp_path_factory.mktemp("outside") / "secret.wav"
    outside.write_bytes(b"RIFF")
    (directory / "escape.wav").symlink_to(outside)
    (directory / "subdir").mkdir()
    return directory


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer, sounds: pathlib.Path) -> Iterator[Pipeline]:
    running = Pipeline(
        redis_server.url,
        bridges=2,
        control_secret=SECRET,
        control_sig_window=WINDOW,
        control_signed_verbs=SIGNED,
        recordings_dir=RECORDINGS,
        sounds_dir=str(sounds),
    ).start()
    yield running
    running.stop()


def signed(message: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return auth.sign({"by": "supervisor-7", **message}, SECRET, **kw)


def commands_since(pipeline: Pipeline, before: int, verb: str) -> list[str]:
    return [c for c in pipeline.switch.commands()[before:] if verb in c]


def test_send_dtmf_reaches_the_side_asked_for(pipeline: Pipeline) -> None:
    dial_id = unique("dtmf")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    command(pipeline, pubsub, dial_id, signed({"type": "send-dtmf", "side": "1", "digits": "12#*A"}), "send-dtmf")
    assert f"api uuid_send_dtmf {callee} 12#*A" in pipeline.switch.commands()
    assert pipeline.simulator.channels()[callee].dtmf_sent == "12#*A"
    assert pipeline.simulator.channels()[pipeline.channel_of_side(dial_id, "0")].dtmf_sent == ""


def test_send_dtmf_refuses_anything_but_digits_and_sides_before_freeswitch(pipeline: Pipeline) -> None:
    dial_id = unique("dtmfbad")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    for bad in (
        {"side": "1", "digits": "1 2"},
        {"side": "1", "digits": "1\n\napi hupall"},
        {"side": "1", "digits": "12@500"},  # uuid_send_dtmf's duration suffix: not ours to set
        {"side": "1", "digits": "1w2"},
        {"side": "1", "digits": ""},
        {"side": "1", "digits": "1" * 33},
        {"side": "2", "digits": "1"},
        {"side": "0 x", "digits": "1"},
        {"side": 1, "digits": "1"},
        {"digits": "1"},
    ):
        error = command(pipeline, pubsub, dial_id, json.dumps({"type": "send-dtmf", **bad}), "send-dtmf", "error")
        assert error["reason"] and error["reason"] != auth.UNAUTHORIZED, bad
    time.sleep(0.2)
    assert pipeline.commands_since(before) == []


def test_hold_and_unhold_a_side(pipeline: Pipeline) -> None:
    dial_id = unique("hold")
    pubsub = pipeline.call(dial_id)
    caller = pipeline.channel_of_side(dial_id, "0")
    command(pipeline, pubsub, dial_id, signed({"type": "hold", "side": "0"}), "hold")
    assert f"api uuid_hold {caller}" in pipeline.switch.commands()
    assert pipeline.simulator.channels()[caller].held
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "held0") == "1"
    # on hold already: refused before FreeSWITCH (which would answer -ERR Operation failed)
    error = command(pipeline, pubsub, dial_id, signed({"type": "hold", "side": "0"}), "hold", "error")
    assert "already" in error["reason"]
    assert len(commands_since(pipeline, 0, f"uuid_hold {caller}")) == 1
    # unhold needs no signature in this pipeline (CONTROL_SIGNED_VERBS leaves it out)
    command(pipeline, pubsub, dial_id, {"type": "unhold", "side": "0"}, "unhold")
    assert f"api uuid_hold off {caller}" in pipeline.switch.commands()
    assert not pipeline.simulator.channels()[caller].held
    error = command(pipeline, pubsub, dial_id, {"type": "unhold", "side": "0"}, "unhold", "error")
    assert "not on hold" in error["reason"]
    assert not pipeline.simulator.channels()[pipeline.channel_of_side(dial_id, "1")].held


def test_coach_callee_lets_the_barger_talk_to_side_1_only(pipeline: Pipeline) -> None:
    dial_id = unique("coach")
    pubsub = pipeline.call(dial_id)
    error = command(pipeline, pubsub, dial_id, signed({"type": "coach-callee"}), "coach-callee", "error")
    assert "no barger" in error["reason"]
    pipeline.publish(dial_id, signed({"type": "barge", "phone_number": "15105550177", "caller_id": "1001"}))
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    barger = pipeline.channel_of_side(dial_id, "2")
    command(pipeline, pubsub, dial_id, signed({"type": "coach-callee"}), "coach-callee")
    assert f"api uuid_recv_dtmf {barger} 1" in pipeline.switch.commands()
    assert pipeline.simulator.eavesdrop_mode(barger) == "talk_other"  # eavesdrop's DTMF 1: talk to the partner
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "barger_mode") == "coach"
    command(pipeline, pubsub, dial_id, signed({"type": "threeway"}), "threeway")
    command(pipeline, pubsub, dial_id, signed({"type": "unthreeway"}), "unthreeway")
    assert pipeline.simulator.eavesdrop_mode(barger) == "talk_other"  # back to coaching
    command(pipeline, pubsub, dial_id, signed({"type": "mute"}), "mute")
    assert pipeline.simulator.eavesdrop_mode(barger) == "listen"  # mute stays listen-only


def test_unsigned_bad_stale_and_replayed_messages_are_refused_and_change_nothing(pipeline: Pipeline) -> None:
    dial_id = unique("auth")
    pubsub = pipeline.call(dial_id)
    caller = pipeline.channel_of_side(dial_id, "0")
    before = len(pipeline.switch.commands())
    good = signed({"type": "hold", "side": "0"})
    refused = [
        {"type": "hold", "side": "0"},  # unsigned
        {**good, "side": "1"},  # signed for side 0, sent for side 1
        {**good, "by": "someone-else"},  # the sender changed
        {**good, "sig": "f" * 64},  # not the signature
        auth.sign({"type": "hold", "side": "0"}, "not-the-secret"),
        signed({"type": "hold", "side": "0"}, now=time.time() - WINDOW - 30),  # stale
        signed({"type": "hold", "side": "0"}, now=time.time() + WINDOW + 30),  # from the future
        {"type": "hangup", "ts": int(time.time())},  # a timestamp is no signature
    ]
    for message in refused:
        kind = message["type"]
        error = command(pipeline, pubsub, dial_id, message, kind, "error")
        assert error["reason"] == auth.UNAUTHORIZED, message
    assert pipeline.commands_since(before) == []
    assert not pipeline.simulator.channels()[caller].held
    # the good one runs once; the very same message again is a replay
    command(pipeline, pubsub, dial_id, good, "hold")
    command(pipeline, pubsub, dial_id, {"type": "unhold", "side": "0"}, "unhold")
    error = command(pipeline, pubsub, dial_id, good, "hold", "error")
    assert error["reason"] == auth.UNAUTHORIZED
    assert len(commands_since(pipeline, before, f"api uuid_hold {caller}")) == 1
    assert not pipeline.simulator.channels()[caller].held
    time.sleep(0.3)
    worker_log = pipeline.full_log("worker")
    assert "replayed signature" in worker_log and "by=supervisor-7 hold done" in worker_log


def test_a_transfer_runs_only_signed_for_its_side_and_number(pipeline: Pipeline) -> None:
    dial_id = unique("xfersig")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    before = len(pipeline.switch.commands())
    good = signed({"type": "transfer", "side": "1", "phone_number": "15105550777"})
    for message in (
        {"type": "transfer", "side": "1", "phone_number": "15105550777"},  # unsigned
        {**good, "phone_number": "15105550999"},  # signed for another number
        {**good, "side": "0"},  # signed for the other side
    ):
        error = command(pipeline, pubsub, dial_id, message, "transfer", "error")
        assert error["reason"] == auth.UNAUTHORIZED, message
    assert pipeline.commands_since(before) == []  # nothing was dialled
    ack = command(pipeline, pubsub, dial_id, good, "transfer")
    assert ack["phone_number"] == "15105550777"
    assert callee not in pipeline.simulator.channels()  # replaced
    originates = [line for line in pipeline.commands_since(before) if line.startswith("api originate ")]
    assert len(originates) == 1 and originates[0].endswith("/15105550777 &park()"), originates


def test_redswitch_send_signs_with_the_secret(pipeline: Pipeline) -> None:
    dial_id = unique("cli")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    env = {**os.environ, **pipeline.settings.env()}
    argv = [
        sys.executable,
        "-m",
        "redswitch",
        "send",
        dial_id,
        "send-dtmf",
        "--side",
        "1",
        "--digits",
        "9",
        "--by",
        "ops",
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"type": "ack", "event": "send-dtmf"}
    assert pipeline.simulator.channels()[callee].dtmf_sent == "9"
    # without the secret, the same command is refused
    unsigned = {**env, "CONTROL_SECRET": ""}
    done = subprocess.run(argv, env=unsigned, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and json.loads(done.stdout)["reason"] == auth.UNAUTHORIZED
    assert pipeline.simulator.channels()[callee].dtmf_sent == "9"
    pubsub.close()


def test_record_and_stop_record_to_a_file_the_server_names(pipeline: Pipeline) -> None:
    dial_id = unique("rec")
    pubsub = pipeline.call(dial_id)
    caller = pipeline.channel_of_side(dial_id, "0")
    # fields a sender might add to steer the file are ignored: the server names it
    message = {"type": "record", "file": "../../etc/passwd", "path": "/tmp/x y", "digits": "1"}
    ack = command(pipeline, pubsub, dial_id, signed(message), "record")
    name = ack["file"]
    assert re.fullmatch(rf"{dial_id}_[0-9]{{13,}}\.wav", name), name
    assert f"api uuid_record {caller} start {RECORDINGS}/{name}" in pipeline.switch.commands()
    assert pipeline.simulator.channels()[caller].recordings == (f"{RECORDINGS}/{name}",)
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "recording") == name
    assert not [c for c in pipeline.switch.commands() if "passwd" in c or "/tmp/x" in c]
    error = command(pipeline, pubsub, dial_id, signed({"type": "record"}), "record", "error")
    assert "already" in error["reason"]
    ack = command(pipeline, pubsub, dial_id, signed({"type": "stop-record"}), "stop-record")
    assert ack["file"] == name
    assert f"api uuid_record {caller} stop {RECORDINGS}/{name}" in pipeline.switch.commands()
    assert pipeline.simulator.channels()[caller].recordings == ()
    error = command(pipeline, pubsub, dial_id, signed({"type": "stop-record"}), "stop-record", "error")
    assert "not being recorded" in error["reason"]
    assert len([c for c in pipeline.switch.commands() if c.startswith(f"api uuid_record {caller}")]) == 2
    # a second recording of the same call gets a file of its own
    again = command(pipeline, pubsub, dial_id, signed({"type": "record"}), "record")["file"]
    assert again != name and pipeline.simulator.channels()[caller].recordings == (f"{RECORDINGS}/{again}",)
    # unsigned: refused like any signed verb
    error = command(pipeline, pubsub, dial_id, {"type": "stop-record"}, "stop-record", "error")
    assert error["reason"] == auth.UNAUTHORIZED


def test_the_python_client_signs_with_the_secret(pipeline: Pipeline) -> None:
    dial_id = unique("client")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    env = {**os.environ, **pipeline.settings.env()}
    script = (
        "import sys\nfrom redswitch.client import send_control\n"
        "send_control(sys.argv[1], {'type': 'send-dtmf', 'side': '1', 'digits': '7', 'by': 'crm'})\n"
    )
    done = subprocess.run([sys.executable, "-c", script, dial_id], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    pipeline.events_until(pubsub, reply_to("send-dtmf"))
    assert pipeline.simulator.channels()[callee].dtmf_sent == "7"
    assert pipeline.wait_for(lambda: "by=crm send-dtmf done" in pipeline.full_log("worker"), timeout=5)
    done = subprocess.run(
        [sys.executable, "-c", script, dial_id],
        env={**env, "CONTROL_SECRET": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    error = next(e for e in pipeline.events_until(pubsub, reply_to("send-dtmf", "error")) if e["type"] == "error")
    assert error["reason"] == auth.UNAUTHORIZED
    assert pipeline.simulator.channels()[callee].dtmf_sent == "7"
    pubsub.close()


def test_play_and_stop_play_a_prompt_from_the_sounds_directory(pipeline: Pipeline, sounds: pathlib.Path) -> None:
    dial_id = unique("play")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    ack = command(pipeline, pubsub, dial_id, signed({"type": "play", "side": "1", "file": "welcome.wav"}), "play")
    assert ack["file"] == "welcome.wav"
    assert f"api uuid_broadcast {callee} {sounds}/welcome.wav aleg" in pipeline.switch.commands()
    channels = pipeline.simulator.channels()
    assert (channels[caller].playing, channels[callee].playing) == (None, f"{sounds}/welcome.wav")
    command(pipeline, pubsub, dial_id, signed({"type": "stop-play", "side": "1"}), "stop-play")
    assert f"api uuid_break {callee}" in pipeline.switch.commands()
    assert pipeline.simulator.channels()[callee].playing is None
    # both sides
    command(pipeline, pubsub, dial_id, signed({"type": "play", "side": "both", "file": "hold-music.wav"}), "play")
    assert f"api uuid_broadcast {caller} {sounds}/hold-music.wav both" in pipeline.switch.commands()
    assert {pipeline.simulator.channels()[u].playing for u in (caller, callee)} == {f"{sounds}/hold-music.wav"}
    command(pipeline, pubsub, dial_id, signed({"type": "stop-play", "side": "both"}), "stop-play")
    assert f"api uuid_break {caller} both" in pipeline.switch.commands()
    assert {pipeline.simulator.channels()[u].playing for u in (caller, callee)} == {None}


def test_play_refuses_a_file_outside_the_sounds_directory_before_freeswitch(pipeline: Pipeline) -> None:
    dial_id = unique("playbad")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    # malformed names: refused by validation, before the signature is even looked at
    for file in ("../../etc/passwd", "/etc/passwd", "sub/welcome.wav", ".hidden", "..", "welcome.wav both", "a'", ""):
        raw = json.dumps({**signed({"type": "play", "side": "0", "file": "welcome.wav"}), "file": file})
        error = command(pipeline, pubsub, dial_id, raw, "play", "error")
        assert error["reason"] != auth.UNAUTHORIZED and "file" in error["reason"], file
    raw = json.dumps({**signed({"type": "play", "side": "0", "file": "welcome.wav"}), "file": "welcome.wav\n\napi x"})
    assert "file" in command(pipeline, pubsub, dial_id, raw, "play", "error")["reason"]
    # well-formed and signed, but not a file right in the sounds directory
    for file in ("nosuch.wav", "escape.wav", "subdir"):
        error = command(pipeline, pubsub, dial_id, signed({"type": "play", "side": "0", "file": file}), "play", "error")
        assert error["reason"] == f"no sound {file!r} in the sounds directory"
    for side in ("2", "all", "0 both", ""):
        raw = json.dumps({**signed({"type": "stop-play", "side": "0"}), "side": side})
        assert command(pipeline, pubsub, dial_id, raw, "stop-play", "error")["reason"]
    time.sleep(0.2)
    assert pipeline.commands_since(before) == []
