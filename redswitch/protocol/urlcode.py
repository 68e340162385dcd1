"""FreeSWITCH's url-encoding of event header values (``switch_url_encode_opt`` / ``switch_url_decode``).

FreeSWITCH encodes a fixed "unsafe" set and leaves an existing ``%XX`` escape alone (``double_encode`` off), so the
encoding is lossy: a value that already contains ``%41`` is sent as ``%41`` and decodes to ``A``. We reproduce that
exactly because the golden transcripts (and every client's parser) depend on it.
"""

from __future__ import annotations

__all__ = ["URL_UNSAFE", "url_decode", "url_encode"]

#: ``SWITCH_URL_UNSAFE`` from ``src/include/switch_utils.h`` (control chars and bytes > 0x7E are unsafe too).
URL_UNSAFE = b'\r\n #%&+:;<=>?@[\\]^`{|}"'

_HEX = b"0123456789abcdefABCDEF"


def _build_table() -> list[bytes]:
    """One pre-encoded output per byte value: encoding is then a join of table lookups (fast)."""
    table = []
    for byte in range(256):
        if byte < 0x20 or byte > 0x7E or byte in URL_UNSAFE:
            table.append(b"%%%02X" % byte)
        else:
            table.append(bytes((byte,)))
    return table


_TABLE = _build_table()
_SAFE_CHARS = frozenset(chr(b) for b in range(0x20, 0x7F) if b not in URL_UNSAFE)


def _is_escape(data: bytes, i: int) -> bool:
    return i + 2 < len(data) and data[i + 1] in _HEX and data[i + 2] in _HEX


def url_encode(value: str) -> str:
    """Encode ``value`` the way FreeSWITCH writes a plain-event header value (upper-case hex, no double encoding)."""
    if _SAFE_CHARS.issuperset(value):
        return value
    data = value.encode("utf-8")
    if b"%" not in data:
        return b"".join(_TABLE[b] for b in data).decode("ascii")
    out = []
    for i, byte in enumerate(data):
        if byte == 0x25 and _is_escape(data, i):
            out.append(b"%")
        else:
            out.append(_TABLE[byte])
    return b"".join(out).decode("ascii")


def url_decode(value: str) -> str:
    """Decode ``%XX`` escapes (FreeSWITCH does not map ``+`` to space); invalid UTF-8 is replaced, never raised."""
    if "%" not in value:
        return value
    data = value.encode("utf-8")
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        byte = data[i]
        if byte == 0x25 and _is_escape(data, i):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", errors="replace")
