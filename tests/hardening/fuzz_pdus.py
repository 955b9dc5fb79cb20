"""Raw DICOM upper-layer PDUs and DIMSE messages for fuzzing the daemons, byte by byte.

pynetdicom's encoders refuse exactly what a fuzzer must send (a 17-character AE title,
an even presentation context ID, a length that lies), so everything here is written
from PS3.8 9.3 (PDUs), PS3.7 6.3 / E (DIMSE framing) and PS3.5 7 (data elements).
:class:`Peer` is a socket client that speaks these bytes and names what came back;
the hypothesis strategies at the end describe the malformed inputs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hypothesis import strategies as st

# -- vocabulary ------------------------------------------------------------------------

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
STUDY_FIND = b"1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = b"1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_MOVE = b"1.2.840.10008.5.1.4.1.2.1.2"
CT_STORAGE = b"1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = b"1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = b"1.2.840.10008.1.2"
EXPLICIT = b"1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.9.7433.99"

# DIMSE command fields (PS3.7 E.1).
C_STORE_RQ, C_FIND_RQ, C_MOVE_RQ, C_ECHO_RQ = 0x0001, 0x0020, 0x0021, 0x0030
C_CANCEL_RQ = 0x0FFF
RESPONSE_BIT = 0x8000
NO_DATA_SET = 0x0101
PENDING = frozenset({0xFF00, 0xFF01})
COMMAND_LAST, COMMAND_MORE, DATA_LAST, DATA_MORE = 0x03, 0x01, 0x02, 0x00

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})


# -- upper layer PDUs (PS3.8 9.3) --------------------------------------------------------


def pdu(kind: int, body: bytes, *, length: int | None = None, reserved: int = 0) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length (``length`` may lie)."""
    return struct.pack(">BBI", kind, reserved, len(body) if length is None else length) + body


def item(kind: int, body: bytes, *, length: int | None = None) -> bytes:
    """An item or sub-item: type, reserved byte, 2-byte length (``length`` may lie)."""
    size = len(body) if length is None else length
    return struct.pack(">BBH", kind, 0, size & 0xFFFF) + body


def ae_field(title: bytes) -> bytes:
    """An AE title field: 16 bytes space-padded; longer titles overflow the layout."""
    return title.ljust(16, b" ") if len(title) < 16 else title


@dataclass(frozen=True)
class Context:
    """One proposed presentation context; ``abstract=None`` leaves its sub-item out."""

    id: int
    abstract: bytes | None
    syntaxes: tuple[bytes, ...] = (IMPLICIT,)

    def encode(self) -> bytes:
        body = bytes([self.id & 0xFF, 0, 0, 0])
        if self.abstract is not None:
            body += item(0x30, self.abstract)
        for syntax in self.syntaxes:
            body += item(0x40, syntax)
        return item(0x20, body)


@dataclass(frozen=True)
class AssociateRQ:
    """An A-ASSOCIATE-RQ with every field settable to something absurd."""

    called: bytes
    calling: bytes
    contexts: tuple[Context, ...]
    protocol: int = 1
    application_context: bytes | None = APPLICATION_CONTEXT
    max_pdu: int | None = 16384
    implementation_uid: bytes | None = IMPLEMENTATION_UID
    extra_user_items: tuple[bytes, ...] = ()  # raw sub-items, appended
    extra_items: tuple[bytes, ...] = ()  # raw items after the user information
    pdu_length: int | None = None  # a lie, when set

    def encode(self) -> bytes:
        head = struct.pack(">HH", self.protocol & 0xFFFF, 0) + ae_field(self.called) \
            + ae_field(self.calling) + bytes(32)
        items = b""
        if self.application_context is not None:
            items += item(0x10, self.application_context)
        items += b"".join(context.encode() for context in self.contexts)
        user = b""
        if self.max_pdu is not None:
            user += item(0x51, struct.pack(">I", self.max_pdu & 0xFFFFFFFF))
        if self.implementation_uid is not None:
            user += item(0x52, self.implementation_uid)
        user += b"".join(self.extra_user_items)
        items += item(0x50, user) + b"".join(self.extra_items)
        return pdu(ASSOCIATE_RQ, head + items, length=self.pdu_length)


RELEASE_RQ_PDU = pdu(RELEASE_RQ, bytes(4))
ABORT_PDU = pdu(ABORT, bytes(4))


def pdv(context_id: int, control: int, fragment: bytes, *, length: int | None = None) -> bytes:
    """A presentation data value item: 4-byte length, context ID, message control header."""
    size = len(fragment) + 2 if length is None else length
    return struct.pack(">IBB", size & 0xFFFFFFFF, context_id & 0xFF, control & 0xFF) + fragment


def p_data(*pdvs: bytes, length: int | None = None) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs), length=length)


def message(context_id: int, command: bytes, data: bytes | None = None,
            max_fragment: int = 16000) -> bytes:
    """A well-framed DIMSE message: command PDUs, then data set PDUs (PS3.8 E.2)."""
    out = b""
    for control_more, control_last, body in ((COMMAND_MORE, COMMAND_LAST, command),
                                             (DATA_MORE, DATA_LAST, data)):
        if body is None:
            continue
        pieces = [body[i:i + max_fragment] for i in range(0, len(body), max_fragment)] or [b""]
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            out += p_data(pdv(context_id, control_last if last else control_more, piece))
    return out


# -- data elements (PS3.5 7.1) ------------------------------------------------------------


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def element(tag: int, value: bytes, *, vr: bytes | None = None, explicit: bool = False,
            length: int | None = None) -> bytes:
    """One little-endian data element; ``vr`` is only written when ``explicit``."""
    size = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", size & 0xFFFFFFFF) + value
    vr = vr if vr is not None else b"UN"
    if vr in _LONG_VRS or len(vr) != 2:
        return head + vr + b"\0\0" + struct.pack("<I", size & 0xFFFFFFFF) + value
    return head + vr + struct.pack("<H", size & 0xFFFF) + value


ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


def sq_item(body: bytes, *, defined: bool = True) -> bytes:
    if defined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
    return struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + body \
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)


def sequence(tag: int, items: Sequence[bytes], *, explicit: bool, defined: bool) -> bytes:
    body = b"".join(items)
    if defined:
        return element(tag, body, vr=b"SQ", explicit=explicit)
    return element(tag, body, vr=b"SQ", explicit=explicit, length=UNDEFINED) \
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def ui(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _pad(raw, b"\0")


def text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _pad(raw, b" ")


def us(value: int) -> bytes:
    return struct.pack("<H", value & 0xFFFF)


def command_set(fields: dict[int, bytes], *, group_length: int | None = None) -> bytes:
    """An Implicit VR Little Endian command set, (0000,0000) first; ``fields`` by element."""
    rest = b"".join(element(tag, fields[tag]) for tag in sorted(fields))
    size = len(rest) if group_length is None else group_length
    return element(0x00000000, struct.pack("<I", size & 0xFFFFFFFF)) + rest


def echo_rq(message_id: int = 1) -> dict[int, bytes]:
    return {0x0002: ui(VERIFICATION), 0x0100: us(C_ECHO_RQ), 0x0110: us(message_id),
            0x0800: us(NO_DATA_SET)}


def find_rq(sop_class: bytes = STUDY_FIND, message_id: int = 1) -> dict[int, bytes]:
    return {0x0002: ui(sop_class), 0x0100: us(C_FIND_RQ), 0x0110: us(message_id),
            0x0700: us(0), 0x0800: us(0)}


def move_rq(destination: bytes, sop_class: bytes = STUDY_MOVE,
            message_id: int = 1) -> dict[int, bytes]:
    return {0x0002: ui(sop_class), 0x0100: us(C_MOVE_RQ), 0x0110: us(message_id),
            0x0600: text(destination), 0x0700: us(0), 0x0800: us(0)}


def store_rq(sop_class: bytes, sop_uid: bytes, message_id: int = 1) -> dict[int, bytes]:
    return {0x0002: ui(sop_class), 0x0100: us(C_STORE_RQ), 0x0110: us(message_id),
            0x0700: us(0), 0x0800: us(0), 0x1000: ui(sop_uid)}


def parse_elements(data: bytes) -> dict[int, bytes]:
    """A flat Implicit VR Little Endian data set (a command set) as {tag: value}."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, elem, size = struct.unpack_from("<HHI", data, offset)
        offset += 8
        out[(group << 16) | elem] = data[offset:offset + size]
        offset += size
    return out


# -- a raw peer ---------------------------------------------------------------------------


class Kind(StrEnum):
    """How a case ended, as the peer saw it."""

    ACCEPTED = "accepted"  # A-ASSOCIATE-AC (then released)
    REJECTED = "rejected"  # A-ASSOCIATE-RJ
    ABORTED = "aborted"  # A-ABORT
    IDLE_ABORTED = "idle-aborted"  # A-ABORT only after the daemon's network timeout
    CLOSED = "closed"  # the connection ended with no PDU
    RESPONSE = "response"  # a final DIMSE response
    RELEASED = "released"  # nothing answered; A-RELEASE-RP to our release
    TIMEOUT = "timeout"  # nothing within the deadline: a hang
    PROTOCOL = "protocol-error"  # the daemon sent something PS3.8 does not allow here


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    detail: str = ""
    status: int | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else str(self.kind)


@dataclass
class Received:
    kind: int | None  # PDU type; None: EOF; -1: timeout
    body: bytes = b""
    at: float = 0.0


class Peer:
    """One TCP connection to a daemon, reading whole PDUs against a deadline."""

    def __init__(self, port: int, deadline: float, host: str = "127.0.0.1") -> None:
        self.deadline = deadline
        self.sock = socket.create_connection((host, port), timeout=deadline)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self.eof = False
        self.sent_at = time.monotonic()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, pieces: int = 0) -> bool:
        """Send ``data`` (in slices of ``pieces`` bytes when given); False if the daemon
        closed the connection meanwhile."""
        try:
            if pieces:
                for start in range(0, len(data), pieces):
                    self.sock.sendall(data[start:start + pieces])
            else:
                self.sock.sendall(data)
        except OSError:
            return False
        finally:
            self.sent_at = time.monotonic()
        return True

    def half_close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, size: int, until: float) -> bool:
        while len(self._buffer) < size:
            left = until - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self._buffer += chunk
        return True

    def read(self, timeout: float | None = None) -> Received:
        """The next whole PDU, EOF (kind None) or a timeout (kind -1)."""
        until = time.monotonic() + (self.deadline if timeout is None else timeout)
        if not self._fill(6, until):
            return Received(None if self.eof else -1, at=time.monotonic())
        kind, _, size = struct.unpack_from(">BBI", self._buffer)
        if not self._fill(6 + size, until):
            return Received(None if self.eof else -1, at=time.monotonic())
        body, self._buffer = self._buffer[6:6 + size], self._buffer[6 + size:]
        return Received(kind, body, time.monotonic())


@dataclass(frozen=True)
class Accepted:
    """What an A-ASSOCIATE-AC granted: context ID -> (result, transfer syntax)."""

    contexts: dict[int, tuple[int, bytes]]
    max_pdu: int

    def usable(self, context_id: int) -> bool:
        return self.contexts.get(context_id, (1, b""))[0] == 0


def parse_ac(body: bytes) -> Accepted:
    contexts: dict[int, tuple[int, bytes]] = {}
    max_pdu = 0
    offset = 68
    while offset + 4 <= len(body):
        kind, _, size = struct.unpack_from(">BBH", body, offset)
        value = body[offset + 4:offset + 4 + size]
        offset += 4 + size
        if kind == 0x21 and len(value) >= 4:
            syntax = value[8:] if len(value) > 8 else b""
            contexts[value[0]] = (value[2], syntax.rstrip(b"\0"))
        elif kind == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_kind, _, sub_size = struct.unpack_from(">BBH", value, sub)
                if sub_kind == 0x51 and sub_size == 4:
                    max_pdu = struct.unpack_from(">I", value, sub + 4)[0]
                sub += 4 + sub_size
    return Accepted(contexts, max_pdu)


def ended(received: Received, idle_after: float, sent_at: float) -> Outcome | None:
    """The outcome a non-data PDU (or EOF, timeout) means; None for P-DATA."""
    if received.kind == -1:
        return Outcome(Kind.TIMEOUT)
    if received.kind is None:
        return Outcome(Kind.CLOSED)
    if received.kind == ABORT:
        late = received.at - sent_at >= idle_after
        source = received.body[2] if len(received.body) >= 4 else -1
        reason = received.body[3] if len(received.body) >= 4 else -1
        return Outcome(Kind.IDLE_ABORTED if late else Kind.ABORTED, f"{source}/{reason}")
    if received.kind == ASSOCIATE_RJ:
        fields = "/".join(str(b) for b in received.body[1:4])
        return Outcome(Kind.REJECTED, fields)
    if received.kind == P_DATA_TF:
        return None
    return Outcome(Kind.PROTOCOL, f"PDU 0x{received.kind:02X}")


@dataclass
class Response:
    """A DIMSE message from the daemon, reassembled."""

    context_id: int
    command: dict[int, bytes]
    data: bytes | None

    @property
    def field(self) -> int:
        value = self.command.get(0x00000100, b"")
        return struct.unpack("<H", value)[0] if len(value) == 2 else -1

    @property
    def status(self) -> int | None:
        value = self.command.get(0x00000900, b"")
        return struct.unpack("<H", value)[0] if len(value) == 2 else None


def status_class(status: int) -> str:
    """PS3.7 C: the kind of a DIMSE status, for the figures."""
    if status == 0:
        return "success"
    if status in PENDING:
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return f"failure-0x{status:04X}"


# -- sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """The daemons' timeouts, and how long a peer waits beyond them before calling a hang."""

    network: float
    margin: float

    @property
    def deadline(self) -> float:
        return self.network + self.margin


def raw_case(port: int, chunks: Sequence[bytes], end: str, timing: Timing) -> Outcome:
    """Send ``chunks`` as the first bytes of a connection, end it as ``end`` says
    ("close", "half-close" or "hold"), and name the daemon's first answer."""
    with Peer(port, timing.deadline) as peer:
        for chunk in chunks:
            if not peer.send(chunk):
                break
        if end == "close":
            # Close after reading: a full close discards what the daemon still sends.
            peer.half_close()
        elif end == "half-close":
            peer.half_close()
        first = peer.read()
        if first.kind == ASSOCIATE_AC:
            return _release_after(peer, Outcome(Kind.ACCEPTED), timing)
        outcome = ended(first, timing.network * 0.9, peer.sent_at)
        return outcome or Outcome(Kind.PROTOCOL, "P-DATA before association")


def _release_after(peer: Peer, outcome: Outcome, timing: Timing) -> Outcome:
    """Release an association the daemon accepted; the outcome unless that fails."""
    if not peer.send(RELEASE_RQ_PDU):
        return Outcome(Kind.PROTOCOL, "closed before release")
    while True:
        answer = peer.read()
        if answer.kind == RELEASE_RP:
            return outcome
        if answer.kind == P_DATA_TF:
            continue  # a late DIMSE response, before the release is answered
        ending = ended(answer, timing.network * 0.9, peer.sent_at)
        if ending is not None and ending.kind is Kind.ABORTED:
            # The daemon's abort of what came before, overtaking our release.
            return Outcome(Kind.ABORTED, f"at-release-{ending.detail}")
        return Outcome(Kind.PROTOCOL, f"release answered by {ending.label if ending else '?'}")


def associate(peer: Peer, rq: AssociateRQ, timing: Timing, pieces: int = 0,
              ) -> Accepted | Outcome:
    """Send ``rq``; the accepted contexts, or how the daemon ended it instead."""
    if not peer.send(rq.encode(), pieces):
        return Outcome(Kind.CLOSED, "during A-ASSOCIATE-RQ")
    answer = peer.read()
    if answer.kind == ASSOCIATE_AC:
        return parse_ac(answer.body)
    outcome = ended(answer, timing.network * 0.9, peer.sent_at)
    return outcome or Outcome(Kind.PROTOCOL, "P-DATA instead of A-ASSOCIATE-AC")


def read_response(peer: Peer, timing: Timing) -> Response | Outcome:
    """The daemon's next final DIMSE response (pending ones are skipped)."""
    command, data = b"", b""
    has_command, want_data = False, False
    while True:
        received = peer.read()
        outcome = ended(received, timing.network * 0.9, peer.sent_at)
        if outcome is not None:
            return outcome
        body, offset = received.body, 0
        while offset + 6 <= len(body):
            size, context_id, control = struct.unpack_from(">IBB", body, offset)
            fragment = body[offset + 6:offset + 4 + size]
            offset += 4 + size
            if control & 1:
                command += fragment
                if control & 2:
                    has_command = True
                    fields = parse_elements(command)
                    dataset_type = fields.get(0x00000800, us(NO_DATA_SET))
                    want_data = dataset_type != us(NO_DATA_SET)
            else:
                data += fragment
            if has_command and (not want_data or (not control & 1 and control & 2)):
                response = Response(context_id, parse_elements(command),
                                    data if want_data else None)
                command, data, has_command, want_data = b"", b"", False, False
                if response.status not in PENDING:
                    return response


def dimse_case(port: int, rq: AssociateRQ, payload: bytes, timing: Timing, *,
               expect_response: bool, pieces: int = 0,
               check: Callable[[Response], str | None] | None = None) -> Outcome:
    """Associate properly, send ``payload`` (P-DATA PDUs), and name what followed.

    With ``expect_response`` the daemon owes a final DIMSE response (or an A-ABORT);
    without, a short look for an A-ABORT, then our A-RELEASE-RQ must be answered.
    ``check`` may name a problem with a response (e.g. success for a truncated object).
    """
    with Peer(port, timing.deadline) as peer:
        granted = associate(peer, rq, timing, pieces)
        if isinstance(granted, Outcome):
            return Outcome(Kind.PROTOCOL, f"setup: {granted.label}")
        if not peer.send(payload, pieces):
            answer = peer.read()
            ending = ended(answer, timing.network * 0.9, peer.sent_at)
            return ending or Outcome(Kind.CLOSED, "while sending")
        if expect_response:
            response = read_response(peer, timing)
            if isinstance(response, Outcome):
                return response
            status = response.status
            if status is None:
                return Outcome(Kind.PROTOCOL, "response without a status")
            problem = check(response) if check is not None else None
            if problem is not None:
                return Outcome(Kind.PROTOCOL, problem, status)
            outcome = Outcome(Kind.RESPONSE, status_class(status), status)
            return _release_after(peer, outcome, timing)
        early = peer.read(timeout=0.05)
        if early.kind != -1:
            ending = ended(early, timing.network * 0.9, peer.sent_at)
            if ending is not None:
                return ending
            # A response after all: then the release must still work.
            return _release_after(peer, Outcome(Kind.RESPONSE, "unexpected"), timing)
        return _release_after(peer, Outcome(Kind.RELEASED), timing)


def established_case(port: int, rq: AssociateRQ, chunk: bytes, end: str,
                     timing: Timing) -> Outcome:
    """Associate properly, then send ``chunk`` (a stray or broken PDU) and name what the
    daemon did: A-ABORT, close, or (to something that was a release request) A-RELEASE-RP."""
    with Peer(port, timing.deadline) as peer:
        granted = associate(peer, rq, timing)
        if isinstance(granted, Outcome):
            return Outcome(Kind.PROTOCOL, f"setup: {granted.label}")
        peer.send(chunk)
        if end == "half-close":
            peer.half_close()
        while True:
            answer = peer.read()
            if answer.kind == RELEASE_RP:
                return Outcome(Kind.RELEASED)
            if answer.kind == P_DATA_TF:
                continue  # an answer to a DIMSE message the chunk happened to hold
            ending = ended(answer, timing.network * 0.9, peer.sent_at)
            return ending or Outcome(Kind.PROTOCOL, "?")


# -- what the strategies describe ------------------------------------------------------------


@dataclass(frozen=True)
class RawCase:
    """Bytes as the first thing on a connection, and how the connection ends."""

    family: str
    chunks: tuple[bytes, ...]
    end: str  # "close", "half-close", "hold"


@dataclass(frozen=True)
class AssocCase:
    family: str
    rq: AssociateRQ
    mutation: str = ""  # what was done to its bytes after encoding
    data: bytes = b""  # the encoded, possibly mutated, bytes

    @property
    def complete(self) -> bool:
        """Whether the daemon can read the whole PDU (so it owes an answer now)."""
        if len(self.data) < 6:
            return False
        length: int = struct.unpack_from(">I", self.data, 2)[0]
        return length <= len(self.data) - 6


# Strings that break parsers: empty, spaces, NUL and control bytes, invalid UTF-8,
# Latin-1, long, and values that look like wildcards, ranges and lists.
NASTY_TEXT: tuple[bytes, ...] = (
    b"", b" ", b"                ", b"\0", b"A\0B", b"\x1b$B", b"\x1b(B", b"\r\n", b"\x7f",
    b"\xff\xfe", b"\xc3\x28", b"\xe9t\xe9", "山田^太郎".encode(), b"*", b"?", b"[", b"\\",
    b"A\\B\\C", b"*" * 70, b"X" * 65, b"Y" * 1025, b"%s%n", b"'; DROP TABLE patient; --",
    b"../../../etc/passwd", b"CON", b"-", b"--", b"0", b"-1", b"99999999999999999999999",
    b"1e400", b"NaN",
)
DATES: tuple[bytes, ...] = (
    b"20200101", b"2020-13-45", b"20201345", b"-", b"20200101-20190101-x", b"20200101-",
    b"-20200101", b"20190101-20200101", b"2020", b"202001", b"99999999", b"00000000",
    b"20200230", b"20200101\\20200102", b"2020010", b"20200101--20200102", b"\xff\xff",
)
TIMES: tuple[bytes, ...] = (
    b"120000", b"1200", b"12", b"250000", b"126060", b"120000.1234567", b"12:00:00", b"-",
    b"1200-1100", b"-1200", b"1200-", b"1200-1300-1400", b"235960.999999",
)
LEVELS: tuple[bytes, ...] = (
    b"PATIENT", b"STUDY", b"SERIES", b"IMAGE", b"", b"study", b"FRAME", b"STUDY\\SERIES",
    b"IMAGE ", b" IMAGE", b"\xff", b"P" * 17, b"\0",
)
CHARSETS: tuple[bytes, ...] = (
    b"ISO_IR 100", b"ISO_IR 192", b"ISO 2022 IR 87", b"ISO 2022 IR 6\\ISO 2022 IR 87",
    b"GB18030", b"ISO_IR 999", b"\\\\", b"\xff", b"ISO_IR 13\\ISO 2022 IR 149",
)
MOVE_DESTINATIONS: tuple[bytes, ...] = (
    b"", b" ", b"                ", b"VMSFD", b"vmsfd", b"DCMTK", b"VMSDBD1", b"NOBODY",
    b"X" * 17, b"X" * 64, b"\0", b"VMS\0FD", b"\xe9\xe9", "山田".encode(), b"VMSFD\\DCMTK",
    b"\r\n", b" VMSFD ",
)

# (tag, the VR it has) of keys the DB Daemon matches on, and a few it does not know.
QUERY_KEYS: tuple[tuple[int, bytes, str], ...] = (
    (0x00100020, b"LO", "text"), (0x00100010, b"PN", "text"), (0x00100030, b"DA", "date"),
    (0x00100040, b"CS", "text"), (0x0020000D, b"UI", "uid"), (0x00080020, b"DA", "date"),
    (0x00080030, b"TM", "time"), (0x00080050, b"SH", "text"), (0x00200010, b"SH", "text"),
    (0x00081030, b"LO", "text"), (0x00080090, b"PN", "text"), (0x00080061, b"CS", "text"),
    (0x00201206, b"IS", "text"), (0x00201208, b"IS", "text"), (0x0020000E, b"UI", "uid"),
    (0x00080060, b"CS", "text"), (0x00200011, b"IS", "text"), (0x0008103E, b"LO", "text"),
    (0x00201209, b"IS", "text"), (0x00080018, b"UI", "uid"), (0x00080016, b"UI", "uid"),
    (0x00200013, b"IS", "text"), (0x300A0002, b"SH", "text"), (0x300A0006, b"DA", "date"),
    (0x300A0007, b"TM", "time"), (0x30060008, b"DA", "date"), (0x300E0002, b"CS", "text"),
    (0x3004000A, b"CS", "text"), (0x00080054, b"AE", "text"), (0x00091010, b"LO", "text"),
    (0x00090010, b"LO", "text"), (0x00321060, b"LO", "text"), (0x00400100, b"SQ", "text"),
)
VRS: tuple[bytes, ...] = (
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR",
    b"US", b"UT", b"ZZ", b"\0\0", b"xx",
)
UIDS: tuple[bytes, ...] = (
    b"1.2.3", b"", b"1.2.3\\1.2.4", b"*", b"1.2.*", b"0.0", b"1..2", b"1.2.3.", b"A.B",
    b"1.2." + b"9" * 70, b"\0\0", b"1.2.840.10008.5.1.4.1.1.2",
)


@dataclass(frozen=True)
class Elem:
    """One identifier element as the fuzzer wants it on the wire."""

    tag: int
    vr: bytes
    value: bytes
    length: int | None = None  # a lie, when set
    known: str = ""  # "study", "series", "sop": replaced by a real UID of the archive

    def encode(self, explicit: bool, known: Callable[[str], bytes]) -> bytes:
        value = ui(known(self.known)) if self.known else self.value
        return element(self.tag, value, vr=self.vr, explicit=explicit, length=self.length)


@dataclass(frozen=True)
class Nested:
    """A sequence of ``count`` items, repeated side by side or nested ``depth`` deep."""

    tag: int
    count: int
    depth: int
    defined: bool

    def encode(self, explicit: bool, known: Callable[[str], bytes]) -> bytes:
        leaf = element(0x00100020, text(b"X"), vr=b"LO", explicit=explicit)
        items = [sq_item(leaf, defined=self.defined)] * self.count
        encoded = sequence(self.tag, items, explicit=explicit, defined=self.defined)
        for _ in range(self.depth):
            encoded = sequence(self.tag, [sq_item(encoded, defined=self.defined)],
                               explicit=explicit, defined=self.defined)
        return encoded


@dataclass(frozen=True)
class Identifier:
    elements: tuple[Elem | Nested, ...]
    explicit: bool
    tail: bytes = b""  # junk after the last element

    def encode(self, known: Callable[[str], bytes]) -> bytes:
        ordered = sorted(self.elements, key=lambda e: e.tag)
        return b"".join(e.encode(self.explicit, known) for e in ordered) + self.tail


@dataclass(frozen=True)
class Framing:
    """How a DIMSE message goes on the wire: well framed, or broken in one way."""

    kind: str = "normal"
    context_id: int | None = None  # for "context": a context ID never negotiated
    fragment: int = 16000
    pieces: int = 0  # TCP writes of this many bytes (0: one write)


FRAMINGS = ("normal", "context", "data-first", "no-command-last", "no-data-last",
            "missing-data", "extra-data", "pdv-too-long", "pdv-too-short", "pdv-zero",
            "pdv-one", "pdu-too-long", "empty-pdu", "reserved-bits", "two-pdvs-one-pdu",
            "interleaved", "tiny-fragments")


def frame(framing: Framing, context_id: int, command: bytes, data: bytes | None) -> bytes:
    """The P-DATA-TF bytes of one message, framed as ``framing`` says (PS3.8 9.3.5, E)."""
    kind = framing.kind
    if kind == "context":
        return message(framing.context_id or 2, command, data)
    if kind == "data-first":
        return p_data(pdv(context_id, DATA_LAST, data or b"\0\0\0\0")) \
            + p_data(pdv(context_id, COMMAND_LAST, command))
    if kind == "no-command-last":
        return p_data(pdv(context_id, COMMAND_MORE, command))
    if kind == "no-data-last":
        return p_data(pdv(context_id, COMMAND_LAST, command)) \
            + p_data(pdv(context_id, DATA_MORE, data or b""))
    if kind == "missing-data":  # the command announces a data set that never comes
        return p_data(pdv(context_id, COMMAND_LAST, command))
    if kind == "extra-data":  # data after a command that announced none
        return message(context_id, command, data or b"\x08\0\x52\0\0\0\0\0")
    if kind == "pdv-too-long":
        return p_data(pdv(context_id, COMMAND_LAST, command, length=len(command) + 50))
    if kind == "pdv-too-short":
        return p_data(pdv(context_id, COMMAND_LAST, command, length=max(len(command) // 2, 2)))
    if kind == "pdv-zero":
        return p_data(pdv(context_id, COMMAND_LAST, b"", length=0)[:4])
    if kind == "pdv-one":
        return p_data(pdv(context_id, COMMAND_LAST, b"", length=1)[:5])
    if kind == "pdu-too-long":
        body = pdv(context_id, COMMAND_LAST, command)
        return p_data(body, length=len(body) - 3) + body[-3:] + message(context_id, command,
                                                                          data)
    if kind == "empty-pdu":
        return p_data()
    if kind == "reserved-bits":  # PS3.8 E.2: bits 2-7 are reserved; receivers ignore them
        out = p_data(pdv(context_id, 0xFC | COMMAND_LAST, command))
        if data is not None:
            out += p_data(pdv(context_id, 0xF0 | DATA_LAST, data))
        return out
    if kind == "two-pdvs-one-pdu":
        pdvs = [pdv(context_id, COMMAND_LAST, command)]
        if data is not None:
            pdvs.append(pdv(context_id, DATA_LAST, data))
        return p_data(*pdvs)
    if kind == "interleaved":  # a second command before the first data set ends
        return p_data(pdv(context_id, COMMAND_LAST, command)) \
            + p_data(pdv(context_id, DATA_MORE, (data or b"")[:4])) \
            + p_data(pdv(context_id, COMMAND_LAST, command)) \
            + p_data(pdv(context_id, DATA_LAST, data or b""))
    if kind == "tiny-fragments":
        return message(context_id, command, data, max_fragment=max(framing.fragment, 1))
    return message(context_id, command, data)


# -- strategies ----------------------------------------------------------------------------

ENDS = ("close", "half-close")


def garbage_first() -> st.SearchStrategy[RawCase]:
    """Random bytes as the first thing on a connection."""
    return st.builds(lambda data, end: RawCase("garbage", (data,), end),
                     st.binary(min_size=1, max_size=512), st.sampled_from(ENDS))


def _unknown_pdu(kind: int, reserved: int, length: int, body: bytes, end: str) -> RawCase:
    return RawCase("unknown-type", (pdu(kind, body, length=length, reserved=reserved),), end)


def unknown_pdu_type(ends: Sequence[str] = ENDS) -> st.SearchStrategy[RawCase]:
    """PDU types PS3.8 does not define (0x00, 0x08..0xFF), any length."""
    kinds = st.one_of(st.just(0), st.integers(0x08, 0xFF))
    lengths = st.one_of(st.integers(0, 64), st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, 1 << 20]))
    return st.builds(_unknown_pdu, kinds, st.integers(0, 255), lengths,
                     st.binary(max_size=64), st.sampled_from(list(ends)))


def baseline_rq(called: bytes, calling: bytes = b"DCMTK") -> AssociateRQ:
    """A valid request a trusted caller would send: Verification plus the daemon's services."""
    contexts = (Context(1, VERIFICATION), Context(3, STUDY_FIND, (IMPLICIT,)),
                Context(5, STUDY_FIND, (EXPLICIT,)), Context(7, STUDY_MOVE),
                Context(9, PATIENT_MOVE), Context(11, CT_STORAGE, (IMPLICIT,)),
                Context(13, CT_STORAGE, (EXPLICIT,)), Context(15, MR_STORAGE))
    return AssociateRQ(called, calling, contexts)


def _baseline_pdus(called: bytes) -> list[bytes]:
    return [baseline_rq(called).encode(), RELEASE_RQ_PDU, ABORT_PDU,
            p_data(pdv(1, COMMAND_LAST, command_set(echo_rq())))]


def truncated_pdu(called: bytes, ends: Sequence[str] = ENDS) -> st.SearchStrategy[RawCase]:
    """A valid PDU whose length field promises more bytes than are sent."""

    def build(base: bytes, cut: float, extra: int, end: str) -> RawCase:
        promised = len(base) - 6 + extra
        sent = 6 + int((len(base) - 6) * cut)
        head = base[:2] + struct.pack(">I", promised)
        return RawCase("truncated", (head + base[6:sent],), end)

    return st.builds(build, st.sampled_from(_baseline_pdus(called)),
                     st.floats(0, 1), st.integers(1, 100_000), st.sampled_from(list(ends)))


def oversized_length(called: bytes, ends: Sequence[str] = ENDS) -> st.SearchStrategy[RawCase]:
    """A known PDU type with an absurd length (0xFFFFFFFF and friends)."""

    def build(base: bytes, length: int, keep: int, end: str) -> RawCase:
        return RawCase("oversized", (base[:2] + struct.pack(">I", length) + base[6:6 + keep],),
                       end)

    lengths = st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x80000000, 0x7FFFFFFF, 1 << 28])
    return st.builds(build, st.sampled_from(_baseline_pdus(called)), lengths,
                     st.integers(0, 300), st.sampled_from(list(ends)))


_AE_TITLES = st.one_of(
    st.sampled_from([b"", b" ", b" " * 16, b"X" * 17, b"Y" * 40, b"\0", b"\0" * 16, b"A\0B",
                     b"\x01\x02", b"\r\n", b"\xe9\xe9", "山田".encode(), b"\\", b"DCMTK\0",
                     b"dcmtk", b" DCMTK", b"\x7f"]),
    st.binary(min_size=1, max_size=20))
_SYNTAXES = st.sampled_from([IMPLICIT, EXPLICIT, b"1.2.840.10008.1.2.2", b"1.2.3.4.5", b"",
                             b"\0", b"1.2.840.10008.1.2.4.50", b"X" * 65, b"1.2.840.10008.1.2\0"])
_ABSTRACTS = st.sampled_from([VERIFICATION, STUDY_FIND, STUDY_MOVE, CT_STORAGE, b"1.2.3.4",
                              b"", b"\0", b"9" * 70, b"1.2.840.10008.5.1.4.1.2.2.3", None])


def _contexts() -> st.SearchStrategy[tuple[Context, ...]]:
    one = st.builds(Context, st.integers(0, 255), _ABSTRACTS,
                    st.lists(_SYNTAXES, max_size=4).map(tuple))
    few = st.lists(one, max_size=6).map(tuple)
    many = st.integers(120, 300).map(
        lambda n: tuple(Context((2 * i + 1) & 0xFF, VERIFICATION) for i in range(n)))
    return st.one_of(few, few, many, st.just(()))


_USER_ITEMS = st.lists(st.one_of(
    st.builds(lambda k, v: item(k, v), st.integers(0x50, 0x5F), st.binary(max_size=40)),
    st.builds(lambda k, v, n: item(k, v, length=n), st.integers(0x51, 0x58),
              st.binary(max_size=20), st.integers(0, 0xFFFF)),
    st.just(item(0x53, b"\xff\xff\xff\xff")),  # asynchronous operations window
    st.just(item(0x54, struct.pack(">H", 3) + STUDY_FIND[:3] + b"\1\1")),  # role, lying
    st.just(item(0x58, b"\x01\x01" + struct.pack(">H", 4) + b"user" + b"\0\0")),  # identity
    st.just(item(0x56, struct.pack(">H", 200) + STUDY_FIND)),  # SOP class extended, lying
), max_size=3).map(tuple)


def associate_mutation(called: bytes, calling: bytes = b"DCMTK") -> st.SearchStrategy[AssocCase]:
    """An A-ASSOCIATE-RQ with absurd fields, or valid fields in lying bytes."""
    base = baseline_rq(called, calling)
    fields = st.fixed_dictionaries({}, optional={
        "called": st.one_of(st.just(called), _AE_TITLES),
        "calling": st.one_of(st.just(calling), _AE_TITLES),
        "protocol": st.sampled_from([0, 2, 0xFFFF, 0x8000]),
        "application_context": st.sampled_from([None, b"", b"1.2.3", b"\0", b"X" * 70,
                                                APPLICATION_CONTEXT + b"\0"]),
        "contexts": _contexts(),
        "max_pdu": st.sampled_from([None, 0, 1, 2, 6, 7, 8, 13, 0xFFFFFFFF, 1 << 31]),
        "implementation_uid": st.sampled_from([None, b"", b"\0", b"X" * 70, b"1.2"]),
        "extra_user_items": _USER_ITEMS,
        "extra_items": st.lists(st.builds(lambda k, v: item(k, v), st.integers(0, 255),
                                          st.binary(max_size=20)), max_size=2).map(tuple),
    })
    mutations = st.one_of(st.just(("", 0, 0)), st.tuples(
        st.sampled_from(["item-length", "pdu-length", "flip", "cut"]),
        st.integers(0, 10_000), st.integers(0, 0xFFFF)))

    def build(changes: dict[str, object], mutation: tuple[str, int, int]) -> AssocCase:
        rq = replace(base, **changes)  # type: ignore[arg-type]
        data = rq.encode()
        how, where, value = mutation
        if how == "item-length" and len(data) > 80:  # one item's 2-byte length lies
            offsets = _item_offsets(data)
            at = offsets[where % len(offsets)]
            data = data[:at + 2] + struct.pack(">H", value) + data[at + 4:]
        elif how == "pdu-length":
            data = data[:2] + struct.pack(">I", value) + data[6:]
        elif how == "flip" and len(data) > 6:
            at = 6 + where % (len(data) - 6)
            data = data[:at] + bytes([data[at] ^ (value & 0xFF or 1)]) + data[at + 1:]
        elif how == "cut":
            cut = 6 + where % max(len(data) - 6, 1)
            data = data[:2] + struct.pack(">I", cut - 6) + data[6:cut]
        label = ",".join(sorted(changes)) or "valid"
        return AssocCase(label, rq, how, data)

    return st.builds(build, fields, mutations)


def _item_offsets(data: bytes) -> list[int]:
    """Where each top-level item of an A-ASSOCIATE-RQ starts (after its fixed 74 bytes)."""
    offsets, at = [], 74
    while at + 4 <= len(data):
        offsets.append(at)
        at += 4 + struct.unpack_from(">H", data, at + 2)[0]
    return offsets or [6]


def _value_for(kind: str) -> st.SearchStrategy[bytes]:
    pool = {"date": DATES, "time": TIMES, "uid": UIDS}.get(kind, ())
    return st.one_of(st.sampled_from(pool + NASTY_TEXT), st.binary(max_size=40))


@st.composite
def _elem(draw: st.DrawFn) -> Elem | Nested:
    tag, vr, kind = draw(st.sampled_from(QUERY_KEYS))
    if vr == b"SQ" or draw(st.integers(0, 30)) == 0:
        return Nested(tag, draw(st.sampled_from([0, 1, 2, 500, 3000])),
                      draw(st.sampled_from([0, 1, 50, 600, 2000])), draw(st.booleans()))
    wrong_vr = draw(st.integers(0, 5)) == 0
    value = draw(_value_for(kind))
    known = draw(st.sampled_from(["study", "series", "sop"])) \
        if kind == "uid" and draw(st.integers(0, 3)) == 0 else ""
    lie = draw(st.one_of(st.none(), st.none(), st.none(),
                         st.sampled_from([0, 1, 0xFFFFFFFF, 0xFFFF, 1000, 3])))
    return Elem(tag, draw(st.sampled_from(VRS)) if wrong_vr else vr, text(value), lie, known)


@st.composite
def identifiers(draw: st.DrawFn) -> Identifier:
    """A C-FIND or C-MOVE identifier: a level (or not), keys with nasty values and VRs."""
    elements: list[Elem | Nested] = []
    level = draw(st.one_of(st.none(), st.sampled_from(LEVELS)))
    if level is not None:
        elements.append(Elem(0x00080052, b"CS", text(level)))
    if draw(st.integers(0, 4)) == 0:
        elements.append(Elem(0x00080005, b"CS", text(draw(st.sampled_from(CHARSETS)))))
    seen = {e.tag for e in elements}
    for candidate in draw(st.lists(_elem(), max_size=6)):
        if candidate.tag not in seen:
            seen.add(candidate.tag)
            elements.append(candidate)
    tail = draw(st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=12)))
    return Identifier(tuple(elements), draw(st.booleans()), tail)


@dataclass(frozen=True)
class DimseCase:
    """One DIMSE request, its command set possibly broken, framed as ``framing`` says."""

    family: str
    fields: tuple[tuple[int, bytes], ...]  # command elements, by element number
    identifier: Identifier | None
    framing: Framing
    raw_command: bytes | None = None  # replaces the encoded command set
    group_length: int | None = None

    def command(self) -> bytes:
        if self.raw_command is not None:
            return self.raw_command
        return command_set(dict(self.fields), group_length=self.group_length)

    @property
    def announces_data(self) -> bool:
        return dict(self.fields).get(0x0800, us(NO_DATA_SET)) != us(NO_DATA_SET)


_COMMAND_FIELDS = st.sampled_from([0x0000, 0x0002, 0x0FFF, 0x0010, 0x0FFF, 0x8030, 0x8020,
                                   0x0120, 0x0130, 0x0140, 0x0150, 0x0160, 0x0FFF, 0xFFFF,
                                   0x0031, 0x0100])


@st.composite
def _command_changes(draw: st.DrawFn, fields: dict[int, bytes]) -> tuple[str, dict[int, bytes]]:
    broken = ["field", "drop", "garble", "dataset-type", "priority", "message-id", "sop-class",
              "extra"]
    how = draw(st.sampled_from(["none"] * len(broken) + broken))
    fields = dict(fields)
    if how == "field":
        fields[0x0100] = us(draw(_COMMAND_FIELDS))
    elif how == "drop":
        victim = draw(st.sampled_from(sorted(fields)))
        del fields[victim]
    elif how == "garble":
        victim = draw(st.sampled_from(sorted(fields)))
        fields[victim] = draw(st.binary(max_size=9))
    elif how == "dataset-type":
        fields[0x0800] = us(draw(st.sampled_from([0x0101, 0x0000, 0x0001, 0xFFFF, 0x0102])))
    elif how == "priority":
        fields[0x0700] = us(draw(st.sampled_from([3, 0xFFFF, 2])))
    elif how == "message-id":
        fields[0x0110] = draw(st.sampled_from([us(0), us(0xFFFF), b"", b"\1"]))
    elif how == "sop-class":
        fields[0x0002] = ui(draw(st.sampled_from([b"", b"1.2.3", VERIFICATION, STUDY_MOVE,
                                                  CT_STORAGE, b"\0"])))
    elif how == "extra":
        fields[draw(st.integers(0x0001, 0x1100))] = draw(st.binary(max_size=8))
    return how, fields


def _framings(context_ids: Sequence[int]) -> st.SearchStrategy[Framing]:
    weighted = ["normal"] * len(FRAMINGS) + list(FRAMINGS)
    return st.builds(Framing, st.sampled_from(weighted),
                     st.sampled_from([0, 2, 4, 255, 127, 99, *[c + 100 for c in context_ids]]),
                     st.integers(1, 24), st.sampled_from([0, 0, 0, 1, 3, 7]))


@st.composite
def find_cases(draw: st.DrawFn) -> DimseCase:
    """A C-FIND on the Study Root context (implicit 3, explicit 5), broken somewhere."""
    identifier = draw(identifiers())
    how, fields = draw(_command_changes(find_rq(message_id=draw(st.integers(1, 0xFFFF)))))
    framing = draw(_framings([3, 5]))
    raw = draw(st.binary(max_size=64)) if draw(st.integers(0, 9)) == 0 else None
    lie = draw(st.integers(0, 0xFFFFFFFF)) if draw(st.integers(0, 9)) == 0 else None
    family = "find:" + ("raw-command" if raw is not None else how)
    return DimseCase(family, tuple(fields.items()), identifier, framing, raw, lie)


@st.composite
def move_cases(draw: st.DrawFn) -> DimseCase:
    """A C-MOVE with an absurd destination or identifier (context 7, or 9: Patient Root)."""
    destination = draw(st.one_of(st.sampled_from(MOVE_DESTINATIONS), st.binary(max_size=20)))
    sop_class = draw(st.sampled_from([STUDY_MOVE, PATIENT_MOVE]))
    identifier = draw(identifiers())
    if draw(st.booleans()):  # usually name something, so the move gets past its checks
        tag = draw(st.sampled_from([0x0020000D, 0x0020000E, 0x00080018]))
        known = {0x0020000D: "study", 0x0020000E: "series", 0x00080018: "sop"}[tag]
        extra = Elem(tag, b"UI", b"", known=known)
        kept = tuple(e for e in identifier.elements if e.tag != tag)
        identifier = replace(identifier, elements=(*kept, extra))
    how, fields = draw(_command_changes(move_rq(destination, sop_class)))
    framing = draw(st.one_of(st.just(Framing()), _framings([7, 9])))
    return DimseCase("move:" + how, tuple(fields.items()), identifier, framing)


@dataclass(frozen=True)
class StoreCase:
    """A C-STORE to the File Daemon: a small CT-like object, broken in one way."""

    family: str
    sop_uid: bytes
    dataset_uid: bytes
    command_class: bytes
    dataset_class: bytes
    patient_id: bytes
    body_mutation: str  # "none", "truncate", "garbage", "flip", "lying-length"
    where: int
    explicit: bool
    framing: Framing

    def body(self) -> tuple[bytes, bool | None]:
        """The data set bytes, and whether they are a whole data set (None: may be)."""
        elements = [
            element(0x00080016, ui(self.dataset_class), vr=b"UI", explicit=self.explicit),
            element(0x00080018, ui(self.dataset_uid), vr=b"UI", explicit=self.explicit),
            element(0x00080060, text(b"CT"), vr=b"CS", explicit=self.explicit),
            element(0x00100010, text(b"FUZZ^CASE"), vr=b"PN", explicit=self.explicit),
            element(0x00100020, text(self.patient_id), vr=b"LO", explicit=self.explicit),
            element(0x0020000D, ui(b"1.2.826.0.1.3680043.9.7433.99.1"), vr=b"UI",
                    explicit=self.explicit),
            element(0x0020000E, ui(b"1.2.826.0.1.3680043.9.7433.99.1.1"), vr=b"UI",
                    explicit=self.explicit),
            element(0x7FE00010, b"\x55" * 64, vr=b"OB", explicit=self.explicit),
        ]
        whole = b"".join(elements)
        if self.body_mutation == "truncate":
            # Strictly inside one element: a cut on an element boundary is a whole, shorter
            # data set, not a truncated one.
            starts = [0]
            for encoded in elements:
                starts.append(starts[-1] + len(encoded))
            n = self.where % len(elements)
            size = starts[n + 1] - starts[n]
            return whole[:starts[n] + 1 + (self.where // 7) % (size - 1)], False
        if self.body_mutation == "garbage":
            return bytes((self.where * 7919 + i * 31) & 0xFF for i in range(self.where % 200)), \
                None
        if self.body_mutation == "flip":  # in a value, it is still a whole data set
            at = self.where % len(whole)
            return whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:], None
        if self.body_mutation == "lying-length":
            pixel = element(0x7FE00010, b"\x55" * 64, vr=b"OB", explicit=self.explicit,
                            length=64 + 1 + self.where % 1000)
            return b"".join(elements[:-1]) + pixel, False
        return whole, True

    def command(self) -> bytes:
        return command_set(store_rq(self.command_class, self.sop_uid))


@st.composite
def store_cases(draw: st.DrawFn) -> StoreCase:
    n = draw(st.integers(1, 10**12))
    uid = f"1.2.826.0.1.3680043.9.7433.99.2.{n}".encode()
    other = draw(st.sampled_from([uid, uid, uid, uid + b"9", b"", b"1.2.3", b"\0"]))
    command_class = draw(st.sampled_from([CT_STORAGE, CT_STORAGE, MR_STORAGE, b"1.2.3", b""]))
    dataset_class = draw(st.sampled_from([command_class, command_class, CT_STORAGE,
                                          MR_STORAGE, b"", b"1.2.3"]))
    patient = draw(st.sampled_from([b"FUZZ1", b"FUZZ2", b"", b"..", b"../x", b"\0", b"A/B",
                                    b"\xe9", b"CON", b"X" * 64]))
    mutation = draw(st.sampled_from(["none", "none", "truncate", "garbage", "flip",
                                     "lying-length"]))
    framing = draw(st.one_of(st.just(Framing()), st.just(Framing()), _framings([11, 13])))
    family = f"store:{mutation}" + ("" if other == uid and dataset_class == command_class
                                    else ":mismatch")
    return StoreCase(family, uid, other, command_class, dataset_class, patient, mutation,
                     draw(st.integers(0, 10**6)), draw(st.booleans()), framing)


@dataclass(frozen=True)
class SplitCase:
    """A whole, valid session (associate, C-ECHO or C-FIND, release) written ``pieces``
    bytes at a time, announcing a maximum PDU length from absurd to huge."""

    pieces: int
    max_pdu: int | None
    find: bool


def split_cases() -> st.SearchStrategy[SplitCase]:
    return st.builds(SplitCase, st.sampled_from([0, 1, 2, 3, 7, 64]),
                     st.sampled_from([None, 0, 1, 2, 6, 7, 8, 13, 100, 16384, 0xFFFFFFFF]),
                     st.booleans())


def stray_pdus() -> st.SearchStrategy[RawCase]:
    """PDUs that have no place in an established association (Sta6), or are broken."""
    called = b"VMSDBD1"
    fixed: list[tuple[str, bytes]] = [
        ("associate-rq", baseline_rq(called).encode()),
        ("associate-ac", pdu(ASSOCIATE_AC, bytes(68))),
        ("associate-rj", pdu(ASSOCIATE_RJ, b"\0\1\1\3")),
        ("release-rp", pdu(RELEASE_RP, bytes(4))),
        ("release-rq-long", pdu(RELEASE_RQ, bytes(40))),
        ("release-rq-empty", pdu(RELEASE_RQ, b"")),
        ("abort-odd", pdu(ABORT, b"\0\0\x09\x09")),
        ("abort-long", pdu(ABORT, bytes(4000))),
    ]
    known = st.sampled_from(fixed).map(lambda f: RawCase(f[0], (f[1],), "hold"))
    unknown = st.builds(lambda k, body: RawCase("unknown-type", (pdu(k, body),), "hold"),
                        st.one_of(st.just(0), st.integers(0x08, 0xFF)), st.binary(max_size=32))
    cut = st.builds(lambda size, keep: RawCase(
        "truncated-p-data", (pdu(P_DATA_TF, b"\0" * keep, length=size),), "half-close"),
        st.sampled_from([100, 0xFFFF, 0xFFFFFFFF]), st.integers(0, 50))
    garbage = st.builds(lambda data: RawCase("garbage", (data,), "half-close"),
                        st.binary(min_size=1, max_size=64))
    return st.one_of(known, unknown, cut, garbage)


# -- counting ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Cases tried and outcomes by kind, across the module."""

    by_test: dict[str, dict[str, int]] = field(default_factory=dict)
    by_detail: dict[str, int] = field(default_factory=dict)  # e.g. response:failure-0xC000

    def add(self, test: str, outcome: Outcome) -> None:
        counts = self.by_test.setdefault(test, {})
        counts[str(outcome.kind)] = counts.get(str(outcome.kind), 0) + 1
        label = outcome.label.split(" ", 1)[0]
        self.by_detail[label] = self.by_detail.get(label, 0) + 1

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_test.values())

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.by_test.values():
            for kind, n in counts.items():
                out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))
