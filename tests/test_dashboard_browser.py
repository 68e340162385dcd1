"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), against a real uvicorn serving it, fed by
the real pipeline (redis-server, simulator, bridge, worker, listener): a pushed call shows up and changes state live,
a barge and a hangup clicked on the page reach the switch and come back acked, a hostile dial_id is only text.

Playwright's own browser download is never used: the browser is ``/usr/bin/chromium`` (scripts/setup.sh installs
it).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from redswitch.simulator import Scenario
from redswitch.simulator.scenario import DEFAULT_RULES, Outcome, Rule
from redswitch.store.keys import Keys
from tests.browser import launch
from tests.dashboard import Served
from tests.pipeline import Pipeline
from tests.servers import RedisServer

TOKEN = "browser-test-token"
#: Side 0 numbers ending 7001 ring 2.5 s before answering; side 1 numbers ending 7002 ring 1.5 s, answer, and the
#: far end hangs up 1.5 s later; side 0 numbers ending 7003 send early media for 2 s, then answer (every other
#: number answers at once and stays up).
SCENARIO = Scenario(
    rules=(
        Rule(Outcome(ring=2.5), suffix="7001"),
        Rule(Outcome(ring=1.5, hangup_after=1.5), suffix="7002"),
        Rule(Outcome(early_media=2.0), suffix="7003"),
        *DEFAULT_RULES,
    )
)
HOSTILE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_CAUSE = "<script>window.__pwned=2</script>"

pytestmark = pytest.mark.sim_only  # a scenario of its own


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    running = Pipeline(redis_server.url, scenario=SCENARIO, originate_timeout=10).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def served(pipeline: Pipeline) -> Iterator[Served]:
    running = Served(dataclasses.replace(pipeline.settings, dashboard_token=TOKEN)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, served: Served) -> Iterator[Page]:
    """A page logged in through the form, live (its event stream connected); it must raise no script error."""
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("dialog", lambda dialog: dialog.accept())  # the hangup button asks first
    opened.goto(f"{served.origin}/")
    expect(opened).to_have_url(f"{served.origin}/login")
    opened.fill("input[name=name]", "supervisor-7")
    opened.fill("input[name=token]", TOKEN)
    opened.click("button[type=submit]")
    expect(opened).to_have_url(f"{served.origin}/")
    expect(opened.locator("#connection")).to_have_text("live")
    yield opened
    context.close()
    assert errors == []


def row(page: Page, dial_id: str) -> Any:
    return page.locator(f'#calls tr[data-dial-id="{dial_id}"]')


def unique(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns()}"


def test_a_pushed_call_appears_and_changes_state_live(page: Page, pipeline: Pipeline) -> None:
    dial_id = unique("web")
    pipeline.push(dial_id=dial_id, user_id="agent-1", caller_number="15105557001", callee_number="14155557002")
    call = row(page, dial_id)
    expect(call.locator("td.side0")).to_have_text("ringing", timeout=5000)  # side 0 rings for 2.5 s
    expect(call.locator("td.status")).to_have_text("dialling")
    expect(call.locator("td").nth(1)).to_have_text("talkiq_org_id")
    expect(call.locator("td").nth(2)).to_have_text("agent-1")
    expect(call.locator("td.side0")).to_have_text("answered", timeout=5000)
    expect(call.locator("td.status")).to_have_text("live")
    expect(call.locator("td.side1")).to_have_text("ringing")  # side 1 rings for 1.5 s
    expect(call.locator("td.side1")).to_have_text("answered", timeout=5000)
    # the far end hangs up after 1.5 s: both sides hung up, with their causes
    expect(call.locator("td.side1")).to_have_text("hung up NORMAL_CLEARING", timeout=8000)
    expect(call.locator("td.side0")).to_have_text("hung up NORMAL_CLEARING", timeout=8000)
    expect(call.locator("td.status")).to_have_text("ended")
    # the rates saw it: one start and one answer in the last minute, per org too
    expect(page.locator("#orgs tbody tr", has_text="talkiq_org_id")).to_be_visible(timeout=5000)
    # filtering by user hides the other calls and keeps this one
    page.fill("#filter-user", "agent-1")
    expect(call).to_be_visible()
    page.fill("#filter-user", "nobody-has-this-user")
    expect(call).to_be_hidden()


def test_a_side_with_early_media_shows_it_until_it_answers(page: Page, pipeline: Pipeline) -> None:
    dial_id = unique("early")
    pipeline.push(dial_id=dial_id, user_id="agent-3", caller_number="15105557003")  # 2 s of early media
    call = row(page, dial_id)
    expect(call.locator("td.side0")).to_have_text("early media", timeout=5000)
    expect(call.locator("td.side0")).to_have_text("answered", timeout=5000)
    pipeline.publish(dial_id, {"type": "hangup"})
    expect(call.locator("td.status")).to_have_text("ended", timeout=5000)


def test_the_duration_of_a_call_in_view_counts_up_each_second(page: Page, pipeline: Pipeline) -> None:
    dial_id = unique("tick")
    pipeline.push(dial_id=dial_id, user_id="agent-2")  # answers at once and stays up
    call = row(page, dial_id)
    expect(call.locator("td.status")).to_have_text("live", timeout=5000)
    first = int(call.locator("td.duration").inner_text().rstrip("s"))
    # only the rows in view tick (an IntersectionObserver): a new call is at the top, in view
    expect(call.locator("td.duration")).to_have_text(f"{first + 2}s", timeout=4000)
    pipeline.publish(dial_id, {"type": "hangup"})
    expect(call.locator("td.status")).to_have_text("ended", timeout=5000)


def test_a_barge_and_a_hangup_from_the_page_reach_the_switch_and_come_back_acked(
    page: Page, pipeline: Pipeline
) -> None:
    dial_id = unique("sup")
    pipeline.call(dial_id)  # both sides answered
    call = row(page, dial_id)
    expect(call.locator("td.side1")).to_have_text("answered", timeout=5000)
    call.click()
    expect(page.locator("#call-id")).to_have_text(dial_id)
    expect(page.locator("#timeline li").first).to_contain_text("call-start", timeout=5000)
    log = page.locator("#control-log li").first
    # refused by the dashboard (validated as the worker would): nothing published
    page.fill("#barge-phone", "1510 555")
    page.click("button[data-verb=barge]")
    expect(log).to_contain_text("barge: refused: field 'phone_number' must be a phone number")
    # answered error by the worker: no barger to whisper to yet
    page.click("button[data-verb=whisper]")
    expect(log).to_have_text(re.compile(r"whisper: error: no barger on this call$"), timeout=10000)
    expect(log).to_have_class("error")
    page.fill("#barge-phone", "15105550177")
    page.fill("#barge-caller-id", "777-777-7777")
    page.click("button[data-verb=barge]")
    expect(log).to_contain_text("barge: ack", timeout=10000)
    barges = [c for c in pipeline.switch.commands() if "originate" in c and "eavesdrop" in c and dial_id in c]
    assert len(barges) == 1 and "15105550177" in barges[0]
    expect(call.locator("td.barger")).to_contain_text("listen", timeout=5000)
    expect(call.locator("td.reply")).to_have_text("ack barge")

    for verb, mode in [("whisper", "whisper"), ("threeway", "threeway"), ("unthreeway", "whisper"), ("mute", "listen")]:
        page.click(f"button[data-verb={verb}]")
        expect(log).to_contain_text(f"{verb}: ack", timeout=10000)
        expect(call.locator("td.barger")).to_contain_text(mode, timeout=5000)
    assert pipeline.simulator.eavesdrop_mode(pipeline.channel_of_side(dial_id, "2")) == "listen"

    page.click("button[data-verb=hangup]")
    expect(log).to_contain_text("hangup: ack", timeout=10000)
    expect(call.locator("td.side0")).to_have_text("hung up NORMAL_CLEARING", timeout=10000)
    expect(call.locator("td.status")).to_have_text("ended")
    assert pipeline.wait_for(
        lambda: not [u for u, c in pipeline.switch.channels().items() if dial_id in str(c.variables)]
    )
    # the worker logged who sent each (the control's `by`: the name given at login)
    worker = pipeline.full_log("worker")
    assert f"dial_id={dial_id} by=dashboard.supervisor-7 barge done" in worker
    assert f"dial_id={dial_id} by=dashboard.supervisor-7 hangup done" in worker
    # its timeline holds its events in order, the acks among them (a hangup's ack may come before or after the
    # hangup-events it caused)
    expect(page.locator("#timeline li", has_text="side=0 cause=NORMAL_CLEARING")).to_have_count(1, timeout=5000)
    kinds = page.locator("#timeline li .kind").all_text_contents()
    assert kinds[:3] == ["call-start", "answer-event", "answer-event"] and kinds.count("ack") == 6, kinds
    assert kinds.index("error") < kinds.index("ack") < kinds.index("hangup-event")  # whisper's error, barge's ack


def test_a_hostile_dial_id_and_cause_show_as_text_and_run_nothing(page: Page, pipeline: Pipeline) -> None:
    client = pipeline.client
    client.sadd(Keys.active_calls(), HOSTILE)
    client.hset(Keys.call(HOSTILE), mapping={"org_id": "<b>org</b>", "user_id": "<i>u</i>", "node": "<u>n</u>"})
    for event in [{"type": "call-start", "dial_id": HOSTILE}, {"type": "failure", "cause": HOSTILE_CAUSE}]:
        client.xadd(Keys.firehose(), {"dial_id": HOSTILE, "event": json.dumps(event)})
    client.rpush(pipeline.settings.effective_dead_key, json.dumps({"reason": HOSTILE_CAUSE, "dial_id": HOSTILE}))
    try:
        cell = page.locator("#calls td.dial-id", has_text="onerror")
        expect(cell).to_have_text(HOSTILE, timeout=5000)
        expect(page.locator("#failures td", has_text="window.__pwned=2")).to_have_text(HOSTILE_CAUSE)
        expect(page.locator("#dead td", has_text="window.__pwned=2")).to_have_text(HOSTILE_CAUSE, timeout=5000)
        assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
        cell.click()  # its timeline is refused (not an id), and nothing runs
        expect(page.locator("#timeline li").first).to_have_text("cannot load: 400")
        page.click("button[data-verb=mute]")  # no control can be sent to it either
        expect(page.locator("#control-log li").first).to_contain_text("mute: refused: a dial_id is 1 to 64 letters")
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None
    finally:
        client.srem(Keys.active_calls(), HOSTILE)
        client.delete(Keys.call(HOSTILE), pipeline.settings.effective_dead_key)


def test_a_thousand_calls_draw_only_the_rows_in_view_and_scrolling_draws_the_others(
    page: Page, pipeline: Pipeline
) -> None:
    client = pipeline.client
    prefix = unique("many")
    names = [f"{prefix}_{n:04d}" for n in range(1000)]
    writes = client.pipeline(transaction=False)
    for name in names:  # oldest first: the page lists the newest first
        writes.sadd(Keys.active_calls(), name)
        writes.hset(Keys.call(name), mapping={"org_id": "bulk", "user_id": name, "node": "fs1"})
        writes.xadd(Keys.firehose(), {"dial_id": name, "event": json.dumps({"type": "call-start", "dial_id": name})})
    writes.execute()
    first, last = row(page, names[0]), row(page, names[-1])
    expect(last).to_be_visible(timeout=10_000)
    expect(page.locator("#calls-count")).to_contain_text("shown", timeout=10_000)
    drawn = page.locator("#calls tbody tr[data-dial-id]").count()
    assert 10 <= drawn <= 120, drawn  # the view and its margins, not a thousand rows
    assert first.count() == 0  # the oldest is far below the view: not drawn
    page.locator("#calls-panel").evaluate("panel => { panel.scrollTop = panel.scrollHeight; }")
    expect(first).to_be_visible(timeout=5000)  # scrolled to the bottom: the oldest is drawn, in view
    assert last.count() == 0
    assert page.locator("#calls tbody tr[data-dial-id]").count() <= 120
    page.locator("#calls-panel").evaluate("panel => { panel.scrollTop = 0; }")
    expect(last).to_be_visible(timeout=5000)
    client.srem(Keys.active_calls(), *names)
    client.delete(*(Keys.call(name) for name in names))


def test_the_nodes_panel_shows_the_switch_and_its_listener(page: Page, pipeline: Pipeline) -> None:
    node = page.locator("#nodes tbody tr").first
    expect(node.locator("td").first).to_have_text(pipeline.settings.nodes()[0].name, timeout=5000)
    expect(node.locator("td").nth(2)).to_have_text("up", timeout=5000)
