"""UID helpers shared by the client and the emulators.

Deterministic UIDs are ``2.25.<n>`` (ITU-T X.667 / PS3.5 B.2): ``n`` is a UUID
derived from a SHA-256 of the parts, so the same parts give the same UID on every
machine, and different parts practically never collide, with no registered root.
"""

from __future__ import annotations

import hashlib
import re

UID_MAX_LENGTH = 64
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

# Implementation identity written in the File Meta of every file this project makes.
IMPLEMENTATION_CLASS_UID = "2.25.159425331479183617218736493725302813442"
IMPLEMENTATION_VERSION_NAME = "DBDSIM_010"


def derive_uid(*parts: object) -> str:
    """A stable UID for a tuple of parts (their ``str`` joined by NUL)."""
    key = "\0".join(str(p) for p in parts).encode("utf-8")
    raw = bytearray(hashlib.sha256(key).digest()[:16])
    # RFC 9562 version 8 (custom) with the RFC variant bits.
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return "2.25." + str(int.from_bytes(raw, "big"))


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a syntactically valid DICOM UID (PS3.5 9.1)."""
    return 0 < len(value) <= UID_MAX_LENGTH and _UID_RE.match(value) is not None
