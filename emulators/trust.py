"""The daemons' trust rules: who may associate, and where a C-MOVE may send.

Both real daemons accept only AE titles on their trusted list, each bound to a
host; a title from another host is as unknown as a title not on the list. The
move destination is looked up only in this map: a C-MOVE never sends anywhere a
site engineer did not configure.

Titles are compared as PS3.5 6.2 defines the AE value representation: leading and
trailing spaces (20H) are not significant, nothing else is dropped or folded, so
``" DCMTK "`` is ``DCMTK`` while ``dcmtk``, ``DCMTK\\t`` or ``DCMTK\\x00`` are other
(or invalid) titles. pynetdicom strips every kind of whitespace and pydicom splits
at backslashes before the daemons see a title, so the bytes on the wire are judged
here (:meth:`TrustPolicy.handlers`): a tab or a backslash must not turn an invalid
title into a trusted one.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_MOVE_RQ
from pynetdicom.events import Event, EventHandlerType

from client.site import ALLOW_ALL, TrustedAE

LOG = logging.getLogger("dbdsim.trust")

# PS3.8 9.3.4: A-ASSOCIATE-RJ (result, source, reason).
REJECT_CALLING_AE = (1, 1, 3)  # rejected-permanent, service-user, calling-AE-not-recognized
REJECT_CALLED_AE = (1, 1, 7)  # rejected-permanent, service-user, called-AE-not-recognized

_AE_MAX = 16  # PS3.5 6.2: at most 16 characters, spaces around them not counted
_ASSOCIATE_RQ = 0x01  # PS3.8 9.3.2: PDU type; called AE title at bytes 10-25, calling 26-41
_CALLED, _CALLING = slice(10, 26), slice(26, 42)
_MOVE_DESTINATION = 0x00000600  # (0000,0600) Move Destination, AE


@dataclass(frozen=True)
class Verdict:
    """One association decision, with the reason logged for the site engineer."""

    accepted: bool
    reason: str
    rejection: tuple[int, int, int] | None = None
    entry: TrustedAE | None = None  # the trusted AE the caller matched, if any
    logged: bool = False  # already logged when the bytes arrived (see TrustPolicy.handlers)


def normalise_ae(title: str) -> str:
    """Leading and trailing spaces are not significant in an AE title (PS3.5 6.2)."""
    return title.strip(" ")


def raw_ae_problem(raw: bytes) -> str | None:
    """What makes ``raw`` (an AE value as sent) no AE title, or None when it is one.

    PS3.5 6.2: only leading and trailing spaces (20H) are padding; the rest must be 1 to
    16 characters of the Default Character Repertoire (ASCII) other than backslash and
    control characters. Tabs, NULs and the like are not padding: they make it invalid.
    """
    title = raw.strip(b" ")
    if not title:
        return "is empty or all spaces"
    for byte in title:
        if byte < 0x20 or byte == 0x7F:
            return f"holds the control character 0x{byte:02X}"
        if byte > 0x7F:
            return f"holds the non-ASCII byte 0x{byte:02X}"
        if byte == 0x5C:
            return "holds a backslash (a value separator)"
    if len(title) > _AE_MAX:
        return f"has {len(title)} characters, more than {_AE_MAX}"
    return None


def shown(raw: bytes) -> str:
    """A raw title for a log line: each byte as itself if printable ASCII, else escaped
    (never decoded into a look-alike), quoted; text, so the log's binary limit keeps it."""
    return ascii(raw.rstrip(b" ").decode("latin-1"))


def exposure(daemon: str, bind: str, port: int, permit_trusted_only: bool) -> str | None:
    """The warning a daemon listening on ``bind`` deserves, or None when only this
    machine (a loopback address) can reach it.

    The site model allows every interface (``0.0.0.0``, ``::``) on purpose, as the real
    daemons serve a hospital network; the emulators then serve synthetic or imported
    patient data to whoever can reach the port, held back by the trusted list alone.
    """
    try:
        address = ipaddress.ip_address(bind) if bind else None
    except ValueError:
        return None  # a name: the site loader refuses them, nothing to judge here
    if address is not None and address.is_loopback:
        return None
    where = "every network interface" if address is None or address.is_unspecified \
        else f"{bind}, an address other machines can reach"
    guard = ("only its trusted AE list keeps strangers out" if permit_trusted_only
             else "and permit_trusted_only is off: ANY AE title from ANY host is accepted")
    shown = f"[{bind}]" if ":" in bind else bind or "*"
    return (f"{daemon} listens on {where} ({shown}:{port}): any host that can reach "
            f"this machine can connect, {guard}; bind it to 127.0.0.1 unless other "
            "machines must call it")


def _address_set(host: str) -> frozenset[str]:
    """Every address ``host`` stands for; a name that does not resolve matches nothing."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(str(ipaddress.ip_address(info[4][0])) for info in infos)


def _canonical(address: str) -> str:
    """``::ffff:127.0.0.1`` and ``127.0.0.1`` are the same peer."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class TrustPolicy:
    """A daemon's trust rules: its own AE title, its trusted map, and the permit flag.

    Host names in the map are resolved once, when the daemon starts, as the real
    daemon does when its service starts.
    """

    def __init__(self, service_ae: str, trusted: Iterable[TrustedAE],
                 permit_trusted_only: bool) -> None:
        self.service_ae = normalise_ae(service_ae)
        self.trusted = tuple(trusted)
        self.permit_trusted_only = permit_trusted_only
        self._by_title = {normalise_ae(t.ae_title): t for t in self.trusted}
        self._addresses = {t.host: _address_set(t.host) for t in self.trusted}
        # Verdicts on the raw titles of an A-ASSOCIATE-RQ, from the DUL thread to judge().
        self._screened: weakref.WeakKeyDictionary[Association, Verdict] = \
            weakref.WeakKeyDictionary()
        self._screened_lock = threading.Lock()

    def entry(self, ae_title: str) -> TrustedAE | None:
        """The map row of ``ae_title`` (exact, case-sensitive: DICOM AE titles are)."""
        return self._by_title.get(normalise_ae(ae_title))

    def destination(self, ae_title: str) -> TrustedAE | None:
        """Where a C-MOVE to ``ae_title`` goes; None when it is not on the map."""
        return self.entry(ae_title)

    # -- the bytes on the wire ---------------------------------------------------------
    def handlers(self) -> list[EventHandlerType]:
        """Handlers that see AE titles before pynetdicom and pydicom tidy them up."""
        return [(evt.EVT_DATA_RECV, self._on_data), (evt.EVT_DIMSE_RECV, self._on_dimse)]

    def screen(self, called: bytes, calling: bytes) -> Verdict | None:
        """The rejection the raw titles of an A-ASSOCIATE-RQ earn, or None if both are valid."""
        problem = raw_ae_problem(called)
        if problem is not None:
            return Verdict(False, f"called AE title {shown(called)} {problem} (PS3.5 6.2)",
                           REJECT_CALLED_AE)
        problem = raw_ae_problem(calling)
        if problem is not None:
            return Verdict(False, f"calling AE title {shown(calling)} {problem} (PS3.5 6.2)",
                           REJECT_CALLING_AE)
        return None

    def screened(self, assoc: Association) -> Verdict | None:
        """What :meth:`screen` said about ``assoc``'s request (None: nothing against it)."""
        with self._screened_lock:
            return self._screened.get(assoc)

    def _on_data(self, event: Event) -> None:
        """EVT_DATA_RECV: screen the first PDU's titles, then stop listening (the rest
        is data, whose every PDU this handler would otherwise cost)."""
        assoc = event.assoc
        assoc.unbind(evt.EVT_DATA_RECV, self._on_data)
        data = event.data
        if data[:1] != bytes([_ASSOCIATE_RQ]) or len(data) < _CALLING.stop:
            return
        verdict = self.screen(data[_CALLED], data[_CALLING])
        if verdict is None:
            return
        # Logged now: a title pynetdicom cannot decode (NUL, non-ASCII) never reaches
        # judge(); it ends in an A-ABORT (an invalid PDU parameter) instead of a reject.
        LOG.warning("%s rejects association from %s %s: %s", self.service_ae,
                    _canonical(str(assoc.requestor.address)), verdict.rejection,
                    verdict.reason)
        with self._screened_lock:
            self._screened[assoc] = Verdict(False, verdict.reason, verdict.rejection,
                                            logged=True)

    def _on_dimse(self, event: Event) -> None:
        """EVT_DIMSE_RECV: a C-MOVE's destination as sent, before pydicom strips tabs and
        takes the first of backslash-separated values (``VMSFD\\EVIL`` is ``VMSFD``
        to it). An invalid one is replaced by a visible, untrusted stand-in, so the move
        is refused as unknown (0xA801) rather than sent to a trusted AE."""
        message = event.message
        if not isinstance(message, C_MOVE_RQ):
            return
        element = message.command_set.get_item(_MOVE_DESTINATION)
        if isinstance(element, RawDataElement):
            raw = bytes(element.value or b"")
        elif element is not None and not element.value:
            raw = b""  # empty, which pynetdicom would abort on
        else:
            return
        problem = raw_ae_problem(raw)
        if problem is None:
            return
        stand_in = self._stand_in(raw)
        LOG.warning("%s refuses a C-MOVE from %r: move destination %s %s (PS3.5 6.2); "
                    "answered as unknown destination %r", self.service_ae,
                    str(event.assoc.requestor.ae_title).strip(" "), shown(raw), problem,
                    stand_in)
        message.command_set[_MOVE_DESTINATION] = DataElement(_MOVE_DESTINATION, "AE",
                                                             stand_in)

    def _stand_in(self, raw: bytes) -> str:
        """A valid AE title showing ``raw`` (bad bytes as ``?``) on no row of the map."""
        text = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "?"
                       for b in raw.strip(b" "))
        if len(text) > _AE_MAX:
            text = text[:_AE_MAX - 1] + "?"
        for candidate in (text, "?" * _AE_MAX):
            if candidate.strip(" ") and self.entry(candidate) is None:
                return candidate
        # A site trusting both: a control character, which pynetdicom refuses with an
        # A-ABORT of the association. Never a trusted title.
        return "\x7f"

    # -- the decision -----------------------------------------------------------------
    def judge(self, calling: str, called: str, address: str,
              implementation_uid: str | None, screened: Verdict | None = None) -> Verdict:
        """Accept or reject one A-ASSOCIATE-RQ, saying why in words; ``screened`` is what
        :meth:`screened` said about its raw titles, and wins."""
        if screened is not None:
            return screened
        calling, called = normalise_ae(calling), normalise_ae(called)
        peer = _canonical(address)
        if called != self.service_ae:
            return Verdict(False, f"called AE title {called!r} is not this daemon's "
                                  f"({self.service_ae!r})", REJECT_CALLED_AE)
        entry = self.entry(calling)
        if entry is None:
            if not self.permit_trusted_only:
                return Verdict(True, f"{calling!r} from {peer} is not on the trusted list, "
                                     "and \"permit trusted only\" is off")
            return Verdict(False, f"calling AE title {calling!r} is not on the trusted list",
                           REJECT_CALLING_AE)
        if peer not in self._addresses[entry.host] and self.permit_trusted_only:
            return Verdict(False, f"calling AE title {calling!r} is trusted from host "
                                  f"{entry.host!r}, but the connection comes from {peer}",
                           REJECT_CALLING_AE, entry)
        if (entry.implementation_uid != ALLOW_ALL
                and (implementation_uid or "").strip() != entry.implementation_uid
                and self.permit_trusted_only):
            return Verdict(False, f"calling AE title {calling!r} must use implementation class "
                                  f"UID {entry.implementation_uid}, not {implementation_uid}",
                           REJECT_CALLING_AE, entry)
        return Verdict(True, f"{calling!r} from {peer} is trusted", entry=entry)


def log_verdict(logger: logging.Logger, daemon: str, calling: str, verdict: Verdict) -> None:
    if verdict.logged:
        return
    if verdict.accepted:
        logger.info("%s accepts association from %r: %s", daemon, calling, verdict.reason)
    else:
        logger.warning("%s rejects association from %r %s: %s", daemon, calling,
                       verdict.rejection, verdict.reason)
