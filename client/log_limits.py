"""Log records never carry pixel data, nor more than a few bytes of any binary value.

rtmove's ``-vv`` and the daemons' debug level pass pynetdicom's log through. pynetdicom
prints short OB/OW values in hex and, for other VRs (UN: a private tag in implicit VR),
the value's Python ``bytes`` repr whatever its length; an exception or a ``%r`` of a
bytes object does the same. :class:`BinaryLimitFilter` cuts every such value to
:data:`MAX_BINARY_BYTES` and hides pixel data entirely, on whatever handler it sits, so
no log call has to remember it. Text is left alone: identifiers are a matter of the
level (see ``emulators.log_policy`` for the daemons' rules).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

MAX_BINARY_BYTES = 16  # of any binary value, in any form (repr, hex)
MAX_MESSAGE_CHARS = 16_384  # a whole message; a longer one is cut, saying so
PIXEL_HIDDEN = "<pixel data not logged>"

# b'...' or b"..." (also inside bytearray(...)), escapes included.
_BYTES_BODY = r"b'(?:[^'\\]|\\.)*'" + "|" + r'b"(?:[^"\\]|\\.)*"'
_BYTES_REPR = re.compile(rf"(?<!\w)(?:{_BYTES_BODY})", re.DOTALL)
# Hex pairs separated by spaces, colons or dashes: "50 49 58 45 ..." (pynetdicom, dumps).
_SPACED_HEX = re.compile(rf"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{{2}}[ :-]){{{MAX_BINARY_BYTES},}}"
                         r"[0-9A-Fa-f]{2}(?![0-9A-Fa-f])")
# Contiguous hex; a long decimal run (a UID component) is no binary value unless longer
# than any UID (64 characters) could be.
_HEX_RUN = re.compile(rf"(?<![0-9A-Za-z])[0-9A-Fa-f]{{{2 * MAX_BINARY_BYTES + 2},}}"
                      r"(?![0-9A-Za-z])")
_UID_MAX = 64
# A value in a DICOM dump line, "(0009,0010) LO [...]": binary bytes a peer put in a text
# element are shown decoded, so a value holding control characters is binary too.
_DUMP_VALUE = re.compile(r"(\([0-9A-Fa-f]{4}, ?[0-9A-Fa-f]{4}\) +[A-Z]{2}:? +\[)(.*)(\])")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Pixel data in a DICOM dump: (7FE0,0008/0009/0010), float and double float pixel data too.
_PIXEL_TAG = re.compile(r"\(7FE0, ?00(?:08|09|10)\)|Pixel Data|PixelData", re.IGNORECASE)
_PIXEL_VALUE = re.compile(rf"\[[^\]]*\]|(?<!\w)(?:{_BYTES_BODY})", re.DOTALL)


def _cut_repr(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        value = _literal_bytes(text)
    except ValueError:
        return text[:2 * MAX_BINARY_BYTES] + "...'"
    if len(value) <= MAX_BINARY_BYTES:
        return text
    return f"{value[:MAX_BINARY_BYTES]!r}... ({len(value)} bytes)"


def _literal_bytes(text: str) -> bytes:
    """The bytes a ``b'...'`` repr stands for (escapes decoded, nothing evaluated)."""
    body = text[2:-1]
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape").encode(
        "latin-1")


def _cut_spaced(match: re.Match[str]) -> str:
    text = match.group(0)
    pairs = re.findall(r"[0-9A-Fa-f]{2}", text)
    return " ".join(pairs[:MAX_BINARY_BYTES]) + f" ... ({len(pairs)} bytes)"


def _cut_run(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.isdigit() and len(text) <= _UID_MAX:
        return text  # a number or a UID component, not a binary dump
    return text[:2 * MAX_BINARY_BYTES] + f"... ({len(text) // 2} bytes)"


def _cut_dump_value(match: re.Match[str]) -> str:
    value = match.group(2)
    if len(value) <= MAX_BINARY_BYTES or not _UNPRINTABLE.search(value):
        return match.group(0)
    return (f"{match.group(1)}{value[:MAX_BINARY_BYTES]!r}... ({len(value)} characters, "
            f"binary){match.group(3)}")


def limit_binary(text: str) -> str:
    """``text`` with pixel data hidden and every other binary value cut short."""
    if _PIXEL_TAG.search(text):
        text = "\n".join(_PIXEL_VALUE.sub(PIXEL_HIDDEN, line) if _PIXEL_TAG.search(line)
                         else line for line in text.split("\n"))
    if "[" in text:
        text = _DUMP_VALUE.sub(_cut_dump_value, text)
    text = _BYTES_REPR.sub(_cut_repr, text)
    text = _SPACED_HEX.sub(_cut_spaced, text)
    text = _HEX_RUN.sub(_cut_run, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"... ({len(text)} characters, cut)"
    return text


def rewrite_record(record: logging.LogRecord, rewrite: Callable[[str], str]) -> None:
    """Apply ``rewrite`` (str -> str) to the record's message, traceback and stack.

    The message is formatted once and stored without arguments, so every handler after
    this one sees the rewritten text; a traceback is formatted into ``exc_text``, which
    formatters use instead of formatting ``exc_info`` again.
    """
    message = record.getMessage()
    new = rewrite(message)
    if new != message or record.args:
        record.msg, record.args = new, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = rewrite(record.exc_text)
    if record.stack_info:
        record.stack_info = rewrite(record.stack_info)


class BinaryLimitFilter(logging.Filter):
    """A handler or logger filter: :func:`limit_binary` on every record; drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        rewrite_record(record, limit_binary)
        return True


def install(handler: logging.Handler) -> None:
    """Put a :class:`BinaryLimitFilter` on ``handler`` (once)."""
    if not any(isinstance(f, BinaryLimitFilter) for f in handler.filters):
        handler.addFilter(BinaryLimitFilter())
