"""The response lane (client/response_lane.py) against pynetdicom's own decoding.

The lane builds the primitive of a plain DIMSE-C response itself instead of letting
pynetdicom decode its command set with pydicom; whatever it builds must equal what
pynetdicom would have built from the same P-DATA, attribute for attribute, and whatever
is not plain (or arrives in pieces it does not take, or is listened to) must go to
pynetdicom untouched. Then over real sockets: a C-FIND's matches and a C-MOVE's pending
responses from the emulated DB Daemon, and the C-STORE responses DCMTK's storescp sends
the daemon's sub-association, all taken by the lane, in order.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
from daemons import running_daemons, small_archive
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import free_port, running
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.association import Association
from pynetdicom.dimse_messages import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RSP,
    DIMSEMessage,
)
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from client import response_lane
from client.site import TrustedAE
from client.tcp import NO_DELAY
from emulators.archive import Archive

_SETTINGS = settings(max_examples=300, deadline=None)
# pydicom warns about the odd values some cases carry as pynetdicom decodes them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_UID = st.from_regex(r"\A(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,8}\Z")
_STATUS = st.one_of(st.sampled_from([0x0000, 0xFF00, 0xFF01, 0xB000, 0xB007, 0xFE00, 0xA700,
                                     0xA701, 0xA702, 0xA801, 0xA900, 0xC000, 0xC211,
                                     0x0122]),
                    st.integers(0, 0xFFFF))
_COMMENT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                 exclude_characters="\\"), min_size=1, max_size=64)
_TAGS = st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
                 min_size=1, max_size=3)
_COUNT = st.one_of(st.none(), st.integers(0, 0xFFFF))
_MESSAGES: dict[type[Any], type[DIMSEMessage]] = {
    C_ECHO: C_ECHO_RSP, C_STORE: C_STORE_RSP, C_FIND: C_FIND_RSP, C_GET: C_GET_RSP,
    C_MOVE: C_MOVE_RSP}


# -- helpers -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def every_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane queues every pending response here (the equality with pynetdicom's queue
    is under test), but where a test sets its own interval (the dropping is)."""
    monkeypatch.setattr(response_lane, "_PENDING_EVERY", 0.0)


def _association(lane: bool) -> tuple[Association, Any]:
    """A requestor association (never connected), with the lane or without (its DIMSE
    provider's ``receive_primitive`` is what DT-2 calls), and the list of the P-DATA the
    lane hands to pynetdicom."""
    assoc = Association(AE(), "requestor")
    assoc.unbind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)  # as quiet_pynetdicom
    handed: list[P_DATA] = []
    if lane:
        response_lane.take_plain_responses(_opened(assoc))
        _count_handed(assoc, handed)
    return assoc, handed


def _count_handed(assoc: Any, handed: list[P_DATA]) -> None:
    """Append to ``handed`` each P-DATA the lane of ``assoc`` hands to pynetdicom."""
    lane: Any = assoc.dimse.receive_primitive
    assert isinstance(lane.__self__, response_lane._Lane)
    original = lane.__self__.original

    def counted(pdata: P_DATA) -> None:
        handed.append(pdata)
        original(pdata)

    lane.__self__.original = counted


class _Opened:
    """The EVT_CONN_OPEN event as the lane's handler reads it."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc


def _opened(assoc: Association) -> Event:
    return cast(Event, _Opened(assoc))


def _outcome(assoc: Association, pdatas: list[P_DATA]) -> list[object]:
    """What DT-2 makes of ``pdatas`` in turn: what is queued for the association (each
    primitive's state), the state machine's events, an exception, a partial message."""
    dimse: Any = assoc.dimse
    result: list[object] = []
    for pdata in pdatas:
        try:
            dimse.receive_primitive(pdata)
        except Exception as exc:  # pynetdicom's decoder raises on some peers' bytes
            result.append(("raised", type(exc).__name__))
    while not dimse.msg_queue.empty():
        context_id, primitive = dimse.msg_queue.get_nowait()
        result.append((context_id, _state(primitive)))
    result.append(("events", list(assoc.dul.event_queue.queue)))
    result.append(("partial", dimse.message is not None))
    return result


def _state(primitive: object) -> dict[str, object]:
    """Every attribute of a primitive but its methods: type and value (an identifier's
    bytes and position, each tag of a multi-valued Offending Element with its type)."""
    state: dict[str, object] = {"class": type(primitive)}
    for name in dir(primitive):
        if name.startswith("__"):
            continue
        value = getattr(primitive, name)
        if callable(value) and not isinstance(value, BytesIO):
            continue
        if isinstance(value, BytesIO):
            state[name] = ("BytesIO", value.getvalue(), value.tell())
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            state[name] = (type(value), [(type(v), v) for v in value])
        else:
            state[name] = (type(value), value)
    return state


def _pdata(*pdvs: tuple[int, bytes]) -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list = [list(pdv) for pdv in pdvs]  # type: ignore[misc]
    return pdata


def _pdvs(primitive: Any, max_pdu: int = 16382, context_id: int = 1,
          ) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """pynetdicom's encoding of a response: its command's PDVs, its data set's."""
    message = _MESSAGES[type(primitive)]()
    message.primitive_to_message(primitive)
    command: list[tuple[int, bytes]] = []
    data: list[tuple[int, bytes]] = []
    for pdata in message.encode_msg(context_id, max_pdu):
        for cid, value in pdata.presentation_data_value_list:
            (command if value[0] & 1 else data).append((cid, value))
    return command, data


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _command(*elements: bytes, group_length: int | None = None) -> bytes:
    body = b"".join(elements)
    length = len(body) if group_length is None else group_length
    return _element(0, struct.pack("<I", length)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


_MOVE_CLASS = b"1.2.840.10008.5.1.4.1.2.2.2\x00"
_FIND_CLASS = b"1.2.840.10008.5.1.4.1.2.2.1\x00"


def _pending_move(*extra: bytes, status: int = 0xFF00) -> bytes:
    """A pending C-MOVE response's command, ``extra`` elements put in tag order."""
    elements = [_element(2, _MOVE_CLASS), _element(0x100, _us(0x8021)),
                _element(0x120, _us(5)), _element(0x800, _us(0x0101)),
                _element(0x900, _us(status)), _element(0x1020, _us(3)),
                _element(0x1021, _us(1)), _element(0x1022, _us(0)), _element(0x1023, _us(0)),
                *extra]
    return _command(*sorted(elements, key=lambda e: struct.unpack_from("<HH", e)))


def _find_with_identifier() -> bytes:
    return _command(_element(2, _FIND_CLASS), _element(0x100, _us(0x8020)),
                    _element(0x120, _us(5)), _element(0x800, _us(0x0001)),
                    _element(0x900, _us(0xFF00)))


_IDENTIFIER = b"\x08\x00\x52\x00\x06\x00\x00\x00IMAGE "


# -- generated responses -----------------------------------------------------------------
@st.composite
def _responses(draw: st.DrawFn) -> Any:
    """A response pynetdicom could send: any kind, status, optional elements."""
    kind = draw(st.sampled_from([C_ECHO, C_STORE, C_FIND, C_GET, C_MOVE]))
    primitive: Any = kind()
    primitive.MessageIDBeingRespondedTo = draw(st.integers(0, 0xFFFF))
    primitive.Status = draw(_STATUS)
    primitive.AffectedSOPClassUID = draw(st.one_of(st.none(), _UID))
    if kind is C_STORE:
        primitive.AffectedSOPInstanceUID = draw(st.one_of(st.none(), _UID))
    primitive.ErrorComment = draw(st.one_of(st.none(), _COMMENT))
    if kind is not C_ECHO:
        tags = draw(st.one_of(st.none(), _TAGS))
        primitive.OffendingElement = None if tags is None else \
            [(group << 16) | element for group, element in tags]
    if kind in (C_GET, C_MOVE):
        primitive.NumberOfRemainingSuboperations = draw(_COUNT)
        primitive.NumberOfCompletedSuboperations = draw(_COUNT)
        primitive.NumberOfFailedSuboperations = draw(_COUNT)
        primitive.NumberOfWarningSuboperations = draw(_COUNT)
    if kind in (C_FIND, C_GET, C_MOVE):
        identifier = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=400)))
        primitive.Identifier = None if identifier is None else BytesIO(identifier)
    return primitive


@_SETTINGS
@given(_responses(), st.sampled_from([0, 40, 120, 16382]),
       st.sampled_from(["one", "command-then-data", "each-fragment"]), st.integers(1, 255))
def test_a_response_decodes_as_pynetdicom_decodes_it(
        primitive: Any, max_pdu: int, split: str, context_id: int) -> None:
    """Whatever the response and however its PDVs come, the lane's outcome is
    pynetdicom's; the lane takes every plain one that arrives whole, or as a command then
    its data set."""
    command, data = _pdvs(primitive, max_pdu, context_id)
    if split == "one":
        pdatas = [_pdata(*command, *data)]
    elif split == "command-then-data":
        pdatas = [_pdata(*command)] + ([_pdata(*data)] if data else [])
    else:
        pdatas = [_pdata(pdv) for pdv in command + data]
    theirs, _ = _association(lane=False)
    ours, handed = _association(lane=True)
    assert _outcome(ours, pdatas) == _outcome(theirs, pdatas)
    whole = split != "each-fragment" or (len(command) == 1 and len(data) <= 1)
    assert (not handed) == whole, (split, len(command), len(data))


@_SETTINGS
@given(_responses(), st.sampled_from([0, 60]))
def test_responses_one_after_another_keep_their_order(primitive: Any, max_pdu: int) -> None:
    """A response the lane takes, then one PDV per P-DATA (handed over when the message
    does not fit one), then one it takes again: the same queue, in the same order."""
    command, data = _pdvs(primitive, max_pdu)
    move = _pdata((1, b"\x03" + _pending_move()))
    pdatas = [move, *(_pdata(pdv) for pdv in command + data), move]
    theirs, _ = _association(lane=False)
    ours, _ = _association(lane=True)
    assert _outcome(ours, pdatas) == _outcome(theirs, pdatas)


# -- what goes to pynetdicom -------------------------------------------------------------
_HANDED_OVER: dict[str, list[P_DATA]] = {
    "an element PS3.7 does not define (Error ID)":
        [_pdata((1, b"\x03" + _pending_move(_element(0x903, _us(1)))))],
    "an element of another response (SOP Instance UID in a C-MOVE response)":
        [_pdata((1, b"\x03" + _pending_move(_element(0x1000, b"1.2.3\x00"))))],
    "elements out of order": [_pdata((1, b"\x03" + _command(
        _element(0x100, _us(0x8021)), _element(2, _MOVE_CLASS), _element(0x120, _us(5)),
        _element(0x800, _us(0x0101)), _element(0x900, _us(0xFF00)))))],
    "an element twice": [_pdata((1, b"\x03" + _command(
        _element(2, _MOVE_CLASS), _element(0x100, _us(0x8021)), _element(0x120, _us(5)),
        _element(0x120, _us(6)), _element(0x800, _us(0x0101)),
        _element(0x900, _us(0xFF00)))))],
    "a request (C-FIND-RQ)": [_pdata((1, b"\x03" + _command(
        _element(2, _FIND_CLASS), _element(0x100, _us(0x0020)), _element(0x110, _us(5)),
        _element(0x700, _us(2)), _element(0x800, _us(0x0001)))), (1, b"\x02" + _IDENTIFIER))],
    "a C-CANCEL request": [_pdata((1, b"\x03" + _command(
        _element(0x100, _us(0x0FFF)), _element(0x120, _us(5)), _element(0x800, _us(0x0101)))))],
    "a UID with a leading zero": [_pdata((1, b"\x03" + _command(
        _element(2, b"1.02.3"), _element(0x100, _us(0x8001)), _element(0x120, _us(5)),
        _element(0x800, _us(0x0101)), _element(0x900, _us(0)))))],
    "a UID pynetdicom rejects (65 characters: Evt19)": [_pdata((1, b"\x03" + _command(
        _element(2, b"1." + b"2" * 63 + b"\x00"), _element(0x100, _us(0x8001)),
        _element(0x120, _us(5)), _element(0x800, _us(0x0101)), _element(0x900, _us(0)))))],
    "a group length that is wrong": [_pdata((1, b"\x03" + _command(
        _element(2, _MOVE_CLASS), _element(0x100, _us(0x8021)), _element(0x120, _us(5)),
        _element(0x800, _us(0x0101)), _element(0x900, _us(0xFF00)), group_length=12)))],
    "a Status of 4 bytes": [_pdata((1, b"\x03" + _command(
        _element(0x100, _us(0x8030)), _element(0x120, _us(5)), _element(0x800, _us(0x0101)),
        _element(0x900, b"\x00\x00\x00\x00"))))],
    "no Status": [_pdata((1, b"\x03" + _command(
        _element(0x100, _us(0x8030)), _element(0x120, _us(5)), _element(0x800, _us(0x0101)))))],
    "an error comment of two values": [_pdata((1, b"\x03" + _pending_move(
        _element(0x902, b"a\\b "), status=0xC000)))],
    "an error comment with padding of its own": [_pdata((1, b"\x03" + _pending_move(
        _element(0x902, b"ab  "), status=0xC000)))],
    "an empty Offending Element": [_pdata((1, b"\x03" + _pending_move(
        _element(0x901, b""), status=0xA900)))],
    "a C-STORE response announcing a data set": [_pdata((1, b"\x03" + _command(
        _element(0x100, _us(0x8001)), _element(0x120, _us(5)), _element(0x800, _us(0x0001)),
        _element(0x900, _us(0)))), (1, b"\x02" + _IDENTIFIER))],
    "reserved bits in the message control header": [
        _pdata((1, b"\x07" + _pending_move()))],
    "a message split over two P-DATA (its command)": [
        _pdata((1, b"\x01" + _pending_move()[:20])), _pdata((1, b"\x03" + _pending_move()[20:]))],
    "a data set whose last fragment is missing (then the next message)": [
        _pdata((1, b"\x03" + _find_with_identifier()), (1, b"\x00" + _IDENTIFIER)),
        _pdata((1, b"\x03" + _pending_move()))],
    "a data set in two P-DATA after its command": [
        _pdata((1, b"\x03" + _find_with_identifier())), _pdata((1, b"\x00" + _IDENTIFIER[:6])),
        _pdata((1, b"\x02" + _IDENTIFIER[6:]))],
    "a held command followed by another command": [
        _pdata((1, b"\x03" + _find_with_identifier())), _pdata((1, b"\x03" + _pending_move()))],
    "a data set on another presentation context": [
        _pdata((1, b"\x03" + _find_with_identifier()), (3, b"\x02" + _IDENTIFIER))],
    "two messages in one P-DATA": [
        _pdata((1, b"\x03" + _pending_move()), (1, b"\x03" + _pending_move()))],
    "something after the data set's last fragment": [
        _pdata((1, b"\x03" + _find_with_identifier()), (1, b"\x02" + _IDENTIFIER),
               (1, b"\x03" + _pending_move()))],
}


@pytest.mark.parametrize("case", list(_HANDED_OVER))
def test_what_is_not_plain_goes_to_pynetdicom(case: str) -> None:
    pdatas = _HANDED_OVER[case]
    theirs, _ = _association(lane=False)
    ours, handed = _association(lane=True)
    assert _outcome(ours, pdatas) == _outcome(theirs, pdatas)
    assert handed, "the lane took it"


def test_a_rejected_command_is_rejected_by_pynetdicom() -> None:
    """pynetdicom answers a UID it finds invalid with Evt19; the lane lets it."""
    ours, handed = _association(lane=True)
    outcome = _outcome(ours, _HANDED_OVER["a UID pynetdicom rejects (65 characters: Evt19)"])
    assert ("events", ["Evt19"]) in outcome and handed


def test_a_listener_gets_every_message() -> None:
    """Anyone bound to EVT_DIMSE_RECV (pynetdicom's debug log, rtmove's match count) sees
    each message: the lane hands them all over while a listener is bound, and takes them
    again once it is gone."""
    ours, handed = _association(lane=True)
    heard: list[str] = []
    ours.bind(evt.EVT_DIMSE_RECV, lambda event: heard.append(type(event.message).__name__))
    move = _pdata((1, b"\x03" + _pending_move()))
    held = _pdata((1, b"\x03" + _find_with_identifier()))
    data = _pdata((1, b"\x02" + _IDENTIFIER))
    _outcome(ours, [move, held, data])
    assert heard == ["C_MOVE_RSP", "C_FIND_RSP"] and len(handed) == 3
    ours.unbind(evt.EVT_DIMSE_RECV, cast(list[Any], ours.get_handlers(evt.EVT_DIMSE_RECV))[0][0])
    handed.clear()
    _outcome(ours, [held])  # taken (held) before a listener comes: the data set hands over
    ours.bind(evt.EVT_DIMSE_RECV, lambda event: heard.append(type(event.message).__name__))
    outcome = _outcome(ours, [data])
    assert heard[-1] == "C_FIND_RSP" and handed == [held, data]
    assert outcome[0][1]["Identifier"][1] == _IDENTIFIER  # type: ignore[index]


def test_a_uid_validator_of_the_users_judges_every_uid(monkeypatch: pytest.MonkeyPatch,
                                                      ) -> None:
    ours, handed = _association(lane=True)
    monkeypatch.setitem(_config.VALIDATORS, "UI", lambda value: (False, "not on my list"))
    outcome = _outcome(ours, [_pdata((1, b"\x03" + _pending_move()))])
    assert handed and ("events", ["Evt19"]) in outcome


def test_an_acceptor_keeps_pynetdicoms_path() -> None:
    assoc = Association(AE(), "acceptor")
    before = assoc.dimse.receive_primitive
    response_lane.take_plain_responses(_opened(assoc))
    assert assoc.dimse.receive_primitive == before


def test_a_c_move_pending_response_is_taken_as_dcmtk_sends_it() -> None:
    """The shape dcmqrscp and the DB Daemon send 120 times a series: group length first,
    the four counts, no data set."""
    ours, handed = _association(lane=True)
    outcome = _outcome(ours, [_pdata((1, b"\x03" + _pending_move()))])
    assert not handed
    state = outcome[0][1]  # type: ignore[index]
    assert state["NumberOfRemainingSuboperations"] == (int, 3)
    assert state["Status"] == (int, 0xFF00) and state["Identifier"][1] == b""


# -- over real sockets -------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=1, seed=11, slices=40, size=16)
    yield archive
    archive.close()


@contextmanager
def _counting() -> Iterator[dict[str, int]]:
    """How many responses of each kind the lane builds, in this process (the DB Daemon's
    sub-associations included)."""
    counts: dict[str, int] = {}
    build = response_lane.primitive

    def counted(response: Any, context_id: int, data_set: bytes | None) -> Any:
        made = build(response, context_id, data_set)
        counts[type(made).__name__] = counts.get(type(made).__name__, 0) + 1
        return made

    response_lane.primitive = counted
    try:
        yield counts
    finally:
        response_lane.primitive = build


@contextmanager
def _requestor(port: int) -> Iterator[tuple[Association, list[P_DATA]]]:
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="VMSDBD1", evt_handlers=NO_DELAY)
    try:
        assert assoc.is_established
        handed: list[P_DATA] = []
        _count_handed(assoc, handed)
        yield assoc, handed
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _series(archive: Archive) -> tuple[str, list[str]]:
    ct = archive.recipe(0).cts[0]
    return ct.series.uid, list(ct.slice_uids)


def test_a_find_and_a_move_over_sockets(archive: Archive, tmp_path: Path,
                                        require_tool: Callable[[str], str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Every match and every pending response arrives, in order, with its status and
    counts, and the lane took each (storescp's C-STORE responses to the daemon too)."""
    require_tool("storescp")
    caplog.set_level("WARNING", logger="pynetdicom")  # its debug handlers would listen
    series, slices = _series(archive)
    port, folder = free_port(), tmp_path / "storescp"
    folder.mkdir()
    entry = TrustedAE("STORESCP", "127.0.0.1", port)
    with running(["storescp", "-aet", "STORESCP", "-od", str(folder), str(port)], port,
                 tmp_path / "storescp.log"), \
            running_daemons(tmp_path, archive, extra=(entry,)) as (_site, dbd, _fd), \
            _counting() as counts, _requestor(dbd.port) as (assoc, handed):
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.SeriesInstanceUID = series
        query.SOPInstanceUID = ""
        found = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in found] == [0xFF00] * len(slices) + [0x0000]
        assert sorted(str(cast(Dataset, ds).SOPInstanceUID) for _, ds in found[:-1]) == \
            sorted(slices)
        assert counts == {"C_FIND": len(slices) + 1} and not handed

        moved = list(assoc.send_c_move(query, "STORESCP",
                                       StudyRootQueryRetrieveInformationModelMove))
        statuses = [status for status, _ in moved]
        pending = [s for s in statuses if s.Status in (0xFF00, 0xFF01)]
        assert len(pending) >= 1 and statuses[-1].Status == 0x0000
        assert [s.NumberOfCompletedSuboperations for s in pending] == \
            sorted(s.NumberOfCompletedSuboperations for s in pending)
        for status in pending:
            assert status.NumberOfRemainingSuboperations + \
                status.NumberOfCompletedSuboperations == len(slices)
        assert statuses[-1].NumberOfCompletedSuboperations == len(slices)
        assert statuses[-1].NumberOfFailedSuboperations == 0
        assert counts["C_MOVE"] == len(statuses) and not handed
        assert counts["C_STORE"] == len(slices)  # the daemon's sub-association's
    assert len(list(folder.iterdir())) == len(slices)


# -- pending C-MOVE responses in quick succession --------------------------------------

def _queued(assoc: Association) -> list[tuple[int | None, int | None, int | None]]:
    """(message responded to, status, completed) of each primitive queued."""
    dimse: Any = assoc.dimse
    out = []
    while not dimse.msg_queue.empty():
        _, primitive = dimse.msg_queue.get_nowait()
        out.append((primitive.MessageIDBeingRespondedTo, primitive.Status,
                    getattr(primitive, "NumberOfCompletedSuboperations", None)))
    return out


def _move_response(message_id: int, status: int, completed: int) -> P_DATA:
    return _pdata((1, b"\x03" + _command(
        _element(2, _MOVE_CLASS), _element(0x100, _us(0x8021)), _element(0x120, _us(message_id)),
        _element(0x800, _us(0x0101)), _element(0x900, _us(status)),
        _element(0x1020, _us(10 - completed)), _element(0x1021, _us(completed)),
        _element(0x1022, _us(0)), _element(0x1023, _us(0)))))


def test_pending_moves_within_the_interval_are_dropped_but_never_a_final(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pending C-MOVE response within the interval of the last one queued says nothing
    the next will not: dropped. One for another request, one after the interval, and
    every final response are queued."""
    monkeypatch.setattr(response_lane, "_PENDING_EVERY", 3600.0)
    assoc, handed = _association(lane=True)
    dimse: Any = assoc.dimse
    for pdata in (_move_response(5, 0xFF00, 1), _move_response(5, 0xFF00, 2),
                  _move_response(5, 0xFF00, 3), _move_response(6, 0xFF00, 1),
                  _move_response(5, 0xFF00, 4), _move_response(5, 0x0000, 10),
                  _move_response(5, 0xB000, 10)):
        dimse.receive_primitive(pdata)
    assert not handed
    assert _queued(assoc) == [(5, 0xFF00, 1), (6, 0xFF00, 1), (5, 0xFF00, 4),
                              (5, 0x0000, 10), (5, 0xB000, 10)]
    monkeypatch.setattr(response_lane, "_PENDING_EVERY", 0.0)  # the interval has passed
    dimse.receive_primitive(_move_response(5, 0xFF00, 5))
    dimse.receive_primitive(_move_response(5, 0xFF00, 6))
    assert _queued(assoc) == [(5, 0xFF00, 5), (5, 0xFF00, 6)]


def test_a_stuck_move_still_shows_as_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending responses that keep coming without progress keep reaching rtmove, one per
    interval: its check for a move that no longer progresses still sees them."""
    monkeypatch.setattr(response_lane, "_PENDING_EVERY", 0.02)
    assoc, _ = _association(lane=True)
    dimse: Any = assoc.dimse
    deadline = time.monotonic() + 0.1
    sent = 0
    while time.monotonic() < deadline:
        dimse.receive_primitive(_move_response(7, 0xFF00, 3))
        sent += 1
        time.sleep(0.001)
    queued = _queued(assoc)
    assert 3 <= len(queued) < sent
    assert set(queued) == {(7, 0xFF00, 3)}
