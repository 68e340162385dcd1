"""Pure translation of jobs into originate command lines.

Kept apart from the actors so the same command can be built, inspected and tested without a broker, an
ESL connection or Redis; every value goes through :mod:`redswitch.protocol.commands`, which refuses
anything unsafe for its position.
"""

from __future__ import annotations

import dataclasses

from redswitch.config import Settings
from redswitch.messages import AspCall
from redswitch.protocol import commands

#: Channel variables that tie every leg (and so every event) to its call; the listener reads them back.
VAR_DIAL_ID = "redswitch_dial_id"
VAR_ORG_ID = "redswitch_org_id"
VAR_USER_ID = "redswitch_user_id"
VAR_SIDE = "redswitch_side"
#: A ``transfer``'s new leg carries ``redswitch_transfer=pending`` from its originate until it is bridged in (the
#: listener announces nothing of it meanwhile: its answer is announced with the bridge, its failure by the
#: transfer's ``error``), then ``bridged``. The leg it replaced gets ``redswitch_replaced_by=<new uuid>`` just
#: before the ``uuid_bridge`` that ends it: the listener announces neither its answer nor its hangup.
VAR_TRANSFER = "redswitch_transfer"
TRANSFER_PENDING = "pending"
TRANSFER_BRIDGED = "bridged"
VAR_REPLACED_BY = "redswitch_replaced_by"
#: SIP headers the original Redswitch sent (carriers' and SBCs' routing rules may match them): side 0 carried the
#: ids, its side and the call provider; every other leg carries only its side (``SIP_HEADERS=original``, default).
ORIGINAL_SIDE_0_HEADERS = {
    VAR_DIAL_ID: "sip_h_Accuvit-Dial-ID",
    VAR_ORG_ID: "sip_h_Accuvit-Organization-ID",
    VAR_USER_ID: "sip_h_Accuvit-User-ID",
}
ORIGINAL_SIDE_HEADER = "sip_h_Accuvit-Dial-Side"
ORIGINAL_PROVIDER_HEADER = "sip_h_X-TalkIQ-Callprovider"
#: Redswitch's own set, on every leg (``SIP_HEADERS=x``): the ids and the side.
X_HEADERS = {VAR_DIAL_ID: "sip_h_X-Dial-Id", VAR_ORG_ID: "sip_h_X-Org-Id", VAR_USER_ID: "sip_h_X-User-Id"}
X_SIDE_HEADER = "sip_h_X-Call-Side"
#: ``ignore_early_media`` per side. FreeSWITCH's originate returns as soon as a leg has early media (a carrier's
#: ``183 Session Progress`` with ringback, what most mobile carriers send long before the person picks up) unless
#: the originate's variables say ``ignore_early_media=true``; the application after it (``&bridge`` to side 1,
#: ``&eavesdrop``) would then run while the phone still rings. So side 0 and the barger's leg wait for a real
#: answer. Side 1 passes its early media on (the user, already talking to us, hears the callee's real ringback
#: or the carrier's announcement); it must say so explicitly, since ``bridge`` copies an unset
#: ``ignore_early_media`` from the calling channel (``switch_ivr_originate.c``).
IGNORE_EARLY_MEDIA = {"0": "true", "1": "false", "2": "true"}
#: Side 0's ``continue_on_fail``: when the bridge to side 1 fails, FreeSWITCH hangs side 0 up with side 1's cause
#: (busy, unallocated, ...) but, by default, goes on after NO_ANSWER, NO_USER_RESPONSE and ORIGINATOR_CANCEL, and
#: then ends side 0 NORMAL_CLEARING with nothing left to run (``switch_channel_handle_cause``). ``false`` makes an
#: unanswered callee end the user's side ``NO_ANSWER`` too, as every other refusal does.
SIDE_0_EXTRA = {"continue_on_fail": "false"}


@dataclasses.dataclass(frozen=True)
class Leg:
    """One side of a call: who is dialled, what they are shown, and the uuid FreeSWITCH must give the leg."""

    side: str
    number: str
    caller_id: str
    uuid: str
    #: The job's call_provider, for the original's ``X-TalkIQ-Callprovider`` header on side 0.
    call_provider: str = ""


def endpoint(settings: Settings, call_provider: str, number: str) -> str:
    """The dial endpoint of ``number`` through ``call_provider``, from ENDPOINT_TEMPLATE."""
    return settings.endpoint_template.format(call_provider=call_provider, number=number)


def sip_endpoint(settings: Settings, address: str) -> str:
    """The endpoint for a SIP address ``user@host``, dialled without the gateway."""
    return settings.sip_endpoint_template.format(address=address)


def leg_variables(settings: Settings, ids: dict[str, str], leg: Leg) -> dict[str, str]:
    values = {
        "origination_uuid": leg.uuid,
        **ids,
        VAR_SIDE: leg.side,
        "origination_caller_id_number": leg.caller_id,
        "origination_caller_id_name": leg.caller_id,
        "originate_timeout": str(settings.originate_timeout),
        "ignore_early_media": IGNORE_EARLY_MEDIA[leg.side],
        **(SIDE_0_EXTRA if leg.side == "0" else {}),
    }
    values.update(sip_headers(settings, ids, leg))
    return values


def transfer_variables(settings: Settings, ids: dict[str, str], leg: Leg, ring: int) -> dict[str, str]:
    """The variables of a transfer's new leg for ``leg.side``: the side's own (ids, side, SIP headers), marked
    pending, ringing at most ``ring`` seconds, and waiting for a real answer (``ignore_early_media=true``, as side
    0): it is parked until then, and a ringing leg must not replace a side that is talking."""
    values = leg_variables(settings, ids, leg)
    values.update({"originate_timeout": str(ring), "ignore_early_media": "true", VAR_TRANSFER: TRANSFER_PENDING})
    values.pop("continue_on_fail", None)  # side 0's, for its &bridge: the new leg runs park
    return values


def sip_headers(settings: Settings, ids: dict[str, str], leg: Leg) -> dict[str, str]:
    """The ``sip_h_*`` variables of ``leg`` for the header set ``SIP_HEADERS`` names (see docs/protocol.md)."""
    headers: dict[str, str] = {}
    if settings.sip_headers in ("original", "both"):
        if leg.side == "0":
            headers.update({header: ids[var] for var, header in ORIGINAL_SIDE_0_HEADERS.items() if var in ids})
            if leg.call_provider:
                headers[ORIGINAL_PROVIDER_HEADER] = leg.call_provider
        headers[ORIGINAL_SIDE_HEADER] = leg.side
    if settings.sip_headers in ("x", "both"):
        headers.update({header: ids[var] for var, header in X_HEADERS.items() if var in ids})
        headers[X_SIDE_HEADER] = leg.side
    return headers


def call_ids(job: AspCall) -> dict[str, str]:
    return {VAR_DIAL_ID: job.dial_id, VAR_ORG_ID: job.org_id, VAR_USER_ID: job.user_id}


def click_to_call(settings: Settings, job: AspCall, uuid0: str, uuid1: str) -> str:
    """``originate {side 0}caller &bridge({side 1}callee)``: ring the caller first, then bridge the callee."""
    ids = call_ids(job)
    side0 = Leg("0", job.caller_number, job.caller_id_lega, uuid0, job.call_provider)
    side1 = Leg("1", job.callee_number, job.caller_id_legb, uuid1)
    a_leg = commands.dial_string(
        endpoint(settings, job.call_provider, side0.number), leg_variables(settings, ids, side0)
    )
    b_leg = commands.dial_string(
        endpoint(settings, job.call_provider, side1.number), leg_variables(settings, ids, side1)
    )
    return commands.originate(a_leg, commands.app("bridge", b_leg))
