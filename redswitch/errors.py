"""Every error Redswitch raises on purpose.

RedswitchError
├── ConfigError            a setting is missing or malformed (names the environment variable)
├── PayloadError           a job or control message failed validation (never reaches FreeSWITCH)
├── ProtocolError          bytes that are not valid Event Socket framing
└── EslError               talking to FreeSWITCH failed
    ├── EslConnectionError     refused, dropped or timed out: worth retrying
    │   └── EslUncertainError      ... after the command was written: FreeSWITCH may have run it
    ├── EslAuthError           wrong password: retrying will not help
    └── EslCommandError        FreeSWITCH answered ``-ERR ...``
"""

from __future__ import annotations


class RedswitchError(Exception):
    """Base of every error raised by Redswitch itself."""


class ConfigError(RedswitchError):
    """A setting from the environment is missing or malformed."""


class PayloadError(RedswitchError):
    """A job or control message is malformed or unsafe; ``reason`` says why in words an operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(RedswitchError):
    """Bytes on an ESL connection do not follow the Event Socket framing."""


class EslError(RedswitchError):
    """Talking to FreeSWITCH failed."""


class EslConnectionError(EslError):
    """The ESL connection was refused, dropped or timed out; the operation may succeed if retried."""


class EslUncertainError(EslConnectionError):
    """The command was written but no reply came (timeout or drop): FreeSWITCH may or may not have run it.

    Never resend a non-idempotent command (an originate) on this error without evidence that it did not run.
    """


class EslAuthError(EslError):
    """FreeSWITCH rejected the ESL password."""


class EslCommandError(EslError):
    """FreeSWITCH answered a command with ``-ERR``; ``reply`` holds its text."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class LeaseLost(RedswitchError):
    """A listener's write was refused: another listener now holds the lease on the node it came from (fencing)."""
