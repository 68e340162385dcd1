from __future__ import annotations

import pytest

from redswitch.config import Settings, setting_names
from redswitch.errors import ConfigError


def test_defaults_match_the_original_readme() -> None:
    settings = Settings.from_env({})
    assert (settings.esl_password, settings.esl_port, settings.esl_url) == ("ClueCon", 8021, "127.0.0.1")
    assert settings.pubsub_redis_timeout == 10
    assert settings.pubsub_redis_url == "redis://127.0.0.1:6379"
    assert settings.jobs_key == "talkiq-asp.calls" and settings.effective_dead_key == "talkiq-asp.calls.dead"
    assert settings.effective_broker_url == settings.pubsub_redis_url
    # Where the original's code, not its README, is the contract: its list order, history and SIP headers
    assert (settings.list_order, settings.history_events, settings.sip_headers) == ("newest_first", "call", "original")


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", "original"), ("on", "original"), ("false", "none"), ("X", "x"), ("both", "both")]
)
def test_sip_headers_takes_a_header_set_or_the_old_boolean(raw: str, expected: str) -> None:
    assert Settings.from_env({"SIP_HEADERS": raw}).sip_headers == expected


def test_values_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ESL_PORT": "18021",
            "PUBSUB_REDIS_URL": "redis://user:pw@10.0.0.1:7000/2",
            "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672",
            "SIP_HEADERS": "off",
        }
    )
    assert settings.esl_port == 18021 and settings.sip_headers == "none"
    assert settings.effective_broker_url.startswith("amqp://")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ESL_PORT", "eighty"),
        ("ESL_PORT", "70000"),
        ("PUBSUB_REDIS_TIMEOUT", "-1"),
        ("PUBSUB_REDIS_URL", "http://x"),
        ("ENDPOINT_TEMPLATE", "sofia/gateway/{gw}/{number}"),
        ("ENDPOINT_TEMPLATE", "sofia/gateway/x y/{number}"),
        ("ACTIVE_KEY_ORDER", "random"),
        ("SIP_HEADERS", "maybe"),
        ("LIST_ORDER", "random"),
        ("HISTORY_EVENTS", "some"),
        ("ESL_URL", "host;rm"),
        ("JOBS_KEY", "a b"),
        ("EVENT_STREAMS", "maybe"),
        ("EVENT_STREAM_TTL", "0"),
        ("EVENT_STREAM_MAXLEN", "5"),
        ("FIREHOSE_MAXLEN", "-1"),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)


def test_env_round_trips_through_from_env() -> None:
    settings = Settings(
        esl_port=9000,
        sip_headers="x",
        list_order="oldest_first",
        history_events="all",
        endpoint_template="loopback/{number}/default",
        event_streams=False,
        firehose_maxlen=0,
    )
    assert Settings.from_env(settings.env()) == settings
    assert set(settings.env()) == setting_names()
