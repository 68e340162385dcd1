"""FreeSWITCH's url-encoding of event header values (``switch_url_encode_opt`` / ``switch_url_decode``).

FreeSWITCH encodes a fixed "unsafe" set and leaves an existing ``%XX`` escape alone (``double_encode`` off), so the
encoding is lossy: a value that already contains ``%41`` is sent as ``%41`` and decodes to ``A``. We reproduce that
exactly because the golden transcripts (and every client's parser) depend on it.

Speed matters here (every header of every event goes through it), so both directions work on whole strings with
C-level primitives: a 256-entry ``str.translate`` table over the UTF-8 bytes seen as latin-1 characters for
encoding, ``split("%")`` plus a hex-pair table for decoding. :func:`url_encode_many` encodes a list of values in
a single translate call.
"""

from __future__ import annotations

import re

__all__ = ["URL_UNSAFE", "url_decode", "url_decode_many", "url_encode", "url_encode_many"]

#: ``SWITCH_URL_UNSAFE`` from ``src/include/switch_utils.h`` (control chars and bytes > 0x7E are unsafe too).
URL_UNSAFE = b'\r\n #%&+:;<=>?@[\\]^`{|}"'

_HEX = b"0123456789abcdefABCDEF"


def _unsafe(byte: int) -> bool:
    return byte < 0x20 or byte > 0x7E or byte in URL_UNSAFE


#: ``str.translate`` table: code point (a byte, via latin-1) -> ``%XX`` for every unsafe byte, others unchanged.
_TABLE: list[str] = [f"%{b:02X}" if _unsafe(b) else chr(b) for b in range(256)]
_SAFE = "".join(chr(b) for b in range(0x20, 0x7F) if not _unsafe(b))
#: Matches any character that needs work (unsafe ASCII or anything non-ASCII): no match means "return as is".
_NEEDS_WORK = re.compile("[^" + re.escape(_SAFE) + "]")
#: An existing escape that must pass through unchanged.
_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")
#: ``XX`` -> the byte it stands for, for every upper/lower-case spelling.
_HEX_PAIRS: dict[bytes, bytes] = {bytes((a, b)): bytes((int(bytes((a, b)), 16),)) for a in _HEX for b in _HEX}
#: Separator for :func:`url_encode_many`; a NUL cannot occur in a FreeSWITCH (C string) header value.
_SEP = "\x00"
_TABLE_KEEP_SEP = [_SEP, *_TABLE[1:]]
_SAFE_BYTES = _SAFE.encode("ascii")
_CONTROL_BYTES = frozenset([*range(0x20), 0x7F])
#: Control characters: their presence sends a text down the translate path (NUL is the joined text's separator).
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_MANY = re.compile("[\x01-\x1f\x7f]")
#: The printable unsafe characters with their encodings, ``%`` first (the others' encodings hold a ``%``).
_PRINTABLE_UNSAFE = (("%", "%25"), *((chr(b), _TABLE[b]) for b in URL_UNSAFE if 0x20 <= b <= 0x7E and b != 0x25))


def _as_bytes_text(value: str) -> str:
    """The UTF-8 bytes of ``value`` as a str of code points < 256 (identity for ASCII), so the table applies."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


def _encode_plain(text: str, table: list[str]) -> str:
    """Encode text with no escape to keep: ``str.replace`` per unsafe char if printable ASCII, else the table."""
    control = _CONTROL if table is _TABLE else _CONTROL_MANY
    if not text.isascii() or control.search(text) is not None:
        return text.translate(table)
    for char, escaped in _PRINTABLE_UNSAFE:
        if char in text:
            text = text.replace(char, escaped)
    return text


def _encode(text: str, table: list[str]) -> str:
    """Encode text (code points < 256), keeping existing ``%XX`` escapes as they are."""
    if "%" not in text:
        return _encode_plain(text, table)
    parts = _ESCAPE.split(text)  # odd indexes are existing escapes: kept verbatim (no double encoding)
    parts[::2] = [_encode_plain(part, table) for part in parts[::2]]
    return "".join(parts)


def url_encode(value: str) -> str:
    """Encode ``value`` the way FreeSWITCH writes a plain-event header value (upper-case hex, no double encoding)."""
    if _NEEDS_WORK.search(value) is None:
        return value
    return _encode(_as_bytes_text(value), _TABLE)


def url_encode_many(values: list[str]) -> list[str]:
    """``[url_encode(v) for v in values]`` in one pass over the joined text (the event serialiser's hot path).

    The unsafe characters present are found with one ``bytes.translate`` that deletes the safe ones; only those are
    then replaced, each with one ``str.replace`` over the whole text.
    """
    joined = _SEP.join(values)
    if not joined.isascii():
        return _encode_many_slow(values, joined)
    unsafe = joined.encode("ascii").translate(None, _SAFE_BYTES)
    if unsafe.count(0) != len(values) - 1:
        return [url_encode(value) for value in values]
    present = set(unsafe)
    present.discard(0)
    if not present:
        return list(values)
    if 0x25 in present or not present.isdisjoint(_CONTROL_BYTES):
        return _encode(joined, _TABLE_KEEP_SEP).split(_SEP)
    for byte in present:
        joined = joined.replace(chr(byte), _TABLE[byte])
    return joined.split(_SEP)


def _encode_many_slow(values: list[str], joined: str) -> list[str]:
    """Non-ASCII text: the table over the UTF-8 bytes, or value by value if a value holds the separator."""
    if joined.count(_SEP) != len(values) - 1:
        return [url_encode(value) for value in values]
    return _encode(_as_bytes_text(joined), _TABLE_KEEP_SEP).split(_SEP)


def url_decode(value: str) -> str:
    """Decode ``%XX`` escapes (FreeSWITCH does not map ``+`` to space); invalid UTF-8 is replaced, never raised."""
    if "%" not in value:
        return value
    first, *rest = value.encode("utf-8").split(b"%")
    out = [first]
    for part in rest:
        byte = _HEX_PAIRS.get(part[:2])
        if byte is None:
            out += (b"%", part)
        else:
            out += (byte, part[2:])
    return b"".join(out).decode("utf-8", errors="replace")


#: Escapes FreeSWITCH writes for printable ASCII (``%3A`` ...) and their bytes, ``%25`` left out: decoding these
#: can never create or change another escape, as no hex digit or ``%`` comes out.
_PRINTABLE_ESCAPES = tuple((b"%%%02X" % b, bytes((b,))) for b in URL_UNSAFE if 0x20 <= b <= 0x7E and b != 0x25)


def url_decode_many(values: list[str]) -> list[str]:
    """``[url_decode(v) for v in values]``, decoding the joined text with one ``replace`` per printable escape present.

    Anything else (``%25``, control characters, UTF-8 bytes, lower-case hex, a lone ``%``) goes value by value.
    """
    joined = "\n".join(values)
    if "%" not in joined:
        return list(values)
    data = joined.encode("utf-8")
    for escape, byte in _PRINTABLE_ESCAPES:
        if escape in data:
            data = data.replace(escape, byte)
    if b"%" in data or joined.count("\n") != len(values) - 1:
        return [url_decode(value) for value in values]
    return data.decode("utf-8", errors="replace").split("\n")
