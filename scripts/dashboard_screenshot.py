"""Make docs/dashboard.png: the dashboard with a few live calls, over the real pipeline on the simulator.

Run: ``.venv/bin/python scripts/dashboard_screenshot.py [OUT]``. Starts a private redis-server, the simulator, the
bridge, the listener and a worker (as the tests do), places calls in several states (answered, a callee still
ringing, a busy callee, a barged call in whisper mode), opens the page in Debian's headless Chromium and
screenshots it with one call's timeline open.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from playwright.sync_api import sync_playwright

from redswitch.simulator import Scenario
from redswitch.simulator.scenario import DEFAULT_RULES, Outcome, Rule
from tests.browser import launch
from tests.dashboard import Served
from tests.pipeline import Pipeline, has
from tests.servers import RedisServer

#: Callees ending 7002 ring for a minute: a call whose callee is still ringing when the picture is taken.
SCENARIO = Scenario(rules=(Rule(Outcome(ring=60.0), suffix="7002"), *DEFAULT_RULES))
CALLS = [
    ("acme_7f3a91", "acme", "alice", "14155550101"),
    ("acme_7f3a92", "acme", "bob", "14155550102"),
    ("globex_a101", "globex", "carol", "14155557002"),
    ("globex_a102", "globex", "dave", "14155550486"),
    ("initech_55e0", "initech", "erin", "14155550103"),
    ("initech_55e1", "initech", "frank", "14155550104"),
]


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"
    redis_server = RedisServer()
    redis_server.start()
    pipeline = Pipeline(redis_server.url, scenario=SCENARIO, originate_timeout=90).start()
    served = Served(pipeline.settings, no_auth=True).start()
    try:
        for dial_id, org, user, callee in CALLS:
            pipeline.push(dial_id=dial_id, org_id=org, user_id=user, callee_number=callee)
            time.sleep(0.3)
        pubsub = pipeline.subscribe("acme_7f3a91")
        pipeline.publish("acme_7f3a91", {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"})
        pipeline.events_until(pubsub, has("answer-event", "2"))
        pipeline.publish("acme_7f3a91", {"type": "whisper"})
        time.sleep(2.5)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{served.origin}/")
            page.locator('#calls tr[data-dial-id="acme_7f3a91"]').click()
            time.sleep(3.0)  # a few seconds of durations and rates
            page.screenshot(path=out, full_page=True)
            browser.close()
        print(f"wrote {out}")
    finally:
        served.stop()
        pipeline.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
