"""``redswitch dashboard``: a live operations page (calls, queues, failures, rates, nodes, supervisor controls).

* :mod:`~redswitch.dashboard.view`: the live model, pure: every event of the firehose folded into calls, failures
  and per-second rates, and the deltas the page needs;
* :mod:`~redswitch.dashboard.feed`: the one thread that reads Redis (a snapshot of the active calls, then the
  firehose with ``XREAD BLOCK``, and the slower state: nodes, the dead list, admission) and folds it into the view;
* :mod:`~redswitch.dashboard.security`: the token, the session cookie, the Origin check and the response headers;
* :mod:`~redswitch.dashboard.app`: the Starlette routes, and the Server-Sent Events that push the view's deltas
  to every open page, coalesced;
* ``static/``: the page (no inline script, no external library: the page works offline and under a strict
  Content-Security-Policy).

Only ``app`` imports Starlette (the optional ``dashboard`` extra); the agent's own processes never import this
package.
"""
