"""The daemons' trust rules: who may associate, and where a C-MOVE may send.

Both real daemons accept only AE titles on their trusted list, each bound to a
host; a title from another host is as unknown as a title not on the list. The
move destination is looked up only in this map: a C-MOVE never sends anywhere a
site engineer did not configure.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from client.site import ALLOW_ALL, TrustedAE

# PS3.8 9.3.4: A-ASSOCIATE-RJ (result, source, reason).
REJECT_CALLING_AE = (1, 1, 3)  # rejected-permanent, service-user, calling-AE-not-recognized
REJECT_CALLED_AE = (1, 1, 7)  # rejected-permanent, service-user, called-AE-not-recognized


@dataclass(frozen=True)
class Verdict:
    """One association decision, with the reason logged for the site engineer."""

    accepted: bool
    reason: str
    rejection: tuple[int, int, int] | None = None
    entry: TrustedAE | None = None  # the trusted AE the caller matched, if any


def normalise_ae(title: str) -> str:
    """Leading and trailing spaces are not significant in an AE title (PS3.5 6.2)."""
    return title.strip(" ")


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

    def entry(self, ae_title: str) -> TrustedAE | None:
        """The map row of ``ae_title`` (exact, case-sensitive: DICOM AE titles are)."""
        return self._by_title.get(normalise_ae(ae_title))

    def destination(self, ae_title: str) -> TrustedAE | None:
        """Where a C-MOVE to ``ae_title`` goes; None when it is not on the map."""
        return self.entry(ae_title)

    def judge(self, calling: str, called: str, address: str,
              implementation_uid: str | None) -> Verdict:
        """Accept or reject one A-ASSOCIATE-RQ, saying why in words."""
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
    if verdict.accepted:
        logger.info("%s accepts association from %r: %s", daemon, calling, verdict.reason)
    else:
        logger.warning("%s rejects association from %r %s: %s", daemon, calling,
                       verdict.rejection, verdict.reason)
