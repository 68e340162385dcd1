"""Every Redis key and pub/sub channel name Redswitch reads or writes, in one place.

The names marked *contract* are the original Redswitch's and existing clients read them; the others are
Redswitch's own bookkeeping under the ``redswitch:`` prefix (a colon, so they can never collide with the dotted
contract names). Lua scripts never build a name: every key reaches them through ``KEYS[]`` from here (a test
reads the scripts to make sure), so what a script touches can be read off its caller.

On a Redis Cluster, keys that one script decides over must share a slot; the admission keys then carry hash
tags (``{<org_id>}``, ``{rates}``). The contract names carry none and cannot change.
"""

from __future__ import annotations

from redswitch.config import Settings

#: Contract: active calls expire after 24 h.
ACTIVE_TTL = 24 * 3600
#: Contract: event histories expire after 4 h.
HISTORY_TTL = 4 * 3600
#: The call record, the Job-UUID map and the relay owner live as long as an active call may.
CALL_TTL = 24 * 3600


class Keys:
    """Builds every key and channel name from the settings (and, for the admission keys, the kind of Redis)."""

    def __init__(self, settings: Settings, *, cluster: bool = False) -> None:
        self.jobs = settings.jobs_key  # contract: the legacy list
        self.dead = settings.effective_dead_key
        self.cluster = cluster
        self._org_first = settings.active_key_order == "org_user_dial"

    # -- contract ------------------------------------------------------------------------------------------

    @staticmethod
    def channel(dial_id: str) -> str:
        """Contract: events, control messages and acks of a call travel on a channel named after its dial_id."""
        return dial_id

    def active(self, dial_id: str, org_id: str, user_id: str) -> str:
        """Contract: the list of ``ACTIVE.<side>`` items of a call."""
        if self._org_first:
            return f"redswitch.{org_id}.{user_id}.{dial_id}"
        return f"redswitch.{dial_id}.{org_id}.{user_id}"

    @staticmethod
    def history(org_id: str, user_id: str) -> str:
        """Contract: the events of a user's current call."""
        return f"redswitch_history.{org_id}.{user_id}"

    # -- the job queue ---------------------------------------------------------------------------------------

    def processing(self, bridge_id: str) -> str:
        """A bridge's in-flight jobs; the hash tag keeps it in the jobs list's cluster slot."""
        return f"{{{self.jobs}}}.processing.{bridge_id}"

    def processing_pattern(self) -> str:
        return f"{{{self.jobs}}}.processing.*"

    @staticmethod
    def bridge_alive(bridge_id: str) -> str:
        """A bridge's heartbeat: while it exists, the bridge's jobs and relayed calls are its own."""
        return f"redswitch:bridge:{bridge_id}"

    @staticmethod
    def dialled(dial_id: str) -> str:
        """Set when a bridge accepts a dial_id: the duplicate guard (``DEDUP_TTL``)."""
        return f"redswitch:dialled:{dial_id}"

    # -- calls ----------------------------------------------------------------------------------------------

    @staticmethod
    def call(dial_id: str) -> str:
        """Hash describing a call Redswitch placed (ids, leg uuids, job uuid, state, node, barger)."""
        return f"redswitch:call:{dial_id}"

    @staticmethod
    def active_calls() -> str:
        """Set of dial_ids with a call in progress (for the control relay, admission and the reconciler)."""
        return "redswitch:active"

    @staticmethod
    def lifecycle() -> str:
        """Pub/sub channel announcing ``start:<dial_id>`` and ``end:<dial_id>`` to the control relays."""
        return "redswitch:calls"

    @staticmethod
    def events(dial_id: str) -> str:
        """Stream of every event published on the call's channel, in order (``EVENT_STREAMS``): entries
        ``event`` = the channel's JSON; lives ``EVENT_STREAM_TTL`` after its last event."""
        return f"redswitch:events:{dial_id}"

    @staticmethod
    def firehose() -> str:
        """Stream of every call's events (``dial_id``, ``event``), capped near ``FIREHOSE_MAXLEN`` entries. A
        dial_id (letters, digits, ``_``, ``-``) can never make this name."""
        return "redswitch:firehose"

    @staticmethod
    def job(job_uuid: str) -> str:
        """Maps a bgapi Job-UUID to its dial_id, so the listener can report a call FreeSWITCH refused."""
        return f"redswitch:job:{job_uuid}"

    @staticmethod
    def relay_owner(dial_id: str) -> str:
        """The bridge whose relay forwards this call's control messages (exactly one executes each)."""
        return f"redswitch:relay:{dial_id}"

    @staticmethod
    def control_log(dial_id: str) -> str:
        """Hash of a call's recent control messages as the relays heard them, numbered per digest of their text:
        ``c:<digest>`` (entries made), ``lo:<digest>`` (the oldest kept), ``m:<digest>:<n>`` (when entry ``n`` was
        made) and ``t:<digest>:<n>`` (the execution that took it: each is executed once, whoever forwards it)."""
        return f"redswitch:control:{dial_id}"

    @staticmethod
    def signature(sig: str) -> str:
        """A control signature already used (``redswitch/auth.py``): its value is the execution that used it."""
        return f"redswitch:sig:{sig}"

    @staticmethod
    def listener_batches(listener: str) -> str:
        """The number of the last batch a listener applied: a retried batch is not applied twice."""
        return f"redswitch:listener:{listener}:applied"

    @staticmethod
    def node_lease(node: str) -> str:
        """Which listener follows a FreeSWITCH node: ``<listener>/<epoch>/<taken at, ms>``, expiring unless renewed.
        The whole value is the holder's fencing token: the events script refuses a batch carrying any other."""
        return f"redswitch:listener:{{{node}}}:lease"

    @staticmethod
    def node_epoch(node: str) -> str:
        """Counter: each take of a node's lease gets a new epoch, so a token is never issued twice (the hash tag
        keeps it in the lease's cluster slot)."""
        return f"redswitch:listener:{{{node}}}:epoch"

    @staticmethod
    def listeners() -> str:
        """Sorted set of live listeners, scored by when each last said so (Redis time, ms)."""
        return "redswitch:listeners"

    # -- FreeSWITCH nodes ------------------------------------------------------------------------------------

    @staticmethod
    def node_calls(node: str) -> str:
        """Set of the dial_ids a FreeSWITCH node holds (a new call goes to the node holding fewest)."""
        return f"redswitch:node-calls:{node}"

    @staticmethod
    def node_down(node: str) -> str:
        """Present while a node that refused a connection is skipped (``NODE_RETRY_AFTER``)."""
        return f"redswitch:node-down:{node}"

    @staticmethod
    def node_turn() -> str:
        """Counter: equal nodes take turns."""
        return "redswitch:node-turn"

    # -- admission ------------------------------------------------------------------------------------------

    def org(self, org_id: str, part: str) -> str:
        """An org's admission key: ``calls`` (slots held), ``waiting`` (its line), ``seq`` (the line's counter),
        ``polled`` (when each waiter last asked). On a cluster the four share the org's slot."""
        if self.cluster:
            return f"redswitch:admission:org:{{{org_id}}}:{part}"
        if part == "seq":
            return "redswitch:admission:seq"
        return f"redswitch:admission:org:{org_id}:{part}"

    def rate(self, kind: str, name: str, part: str) -> str:
        """A sessions-per-second key of a switch or a gateway: ``sent`` (the log) or ``next`` (the next free slot);
        on a cluster every one shares one slot (one clock for all)."""
        if self.cluster:
            return f"redswitch:admission:{{rates}}:{kind}:{name}:{part}"
        return f"redswitch:admission:{kind}:{name}:{part}"

    # -- housekeeping ---------------------------------------------------------------------------------------

    @staticmethod
    def scheduler_lease() -> str:
        """Holds the id of the scheduler that acts, expiring unless renewed."""
        return "redswitch:scheduler:lease"
