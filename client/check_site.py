"""Is this site file one rtmove can work with? Each rule the real daemons enforce, checked.

A site engineer usually learns about a wrong trusted row from a move that fails an hour
into a session. Every rule here is one the DB Daemon or the File Daemon applies when a
query or a move arrives, so a failing check names the row and the value to change
before anyone waits on a move.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydicom.charset import python_encoding

from client.echo import echo
from client.errors import AssociationRejected, DicomError, Kind
from client.settings import Settings, from_site
from client.site import Model, Site, TrustedAE, ae_title_problem

Resolver = Callable[[str], frozenset[str]]

# Sets whose repertoire is ASCII only: names with accents or other scripts become '?'.
_ASCII_ONLY = frozenset({"", "ISO_IR 6"})
_KNOWN_CHARSETS = frozenset(term for term in python_encoding
                            if term and not term.startswith("ISO 2022"))
_WILDCARDS = ("", "0.0.0.0", "::")
_MOVE_MODELS = (Model.STUDY_MOVE, Model.PATIENT_MOVE)
_PORT_MAX = 65535
_PRIVILEGED_BELOW = 1024


@dataclass(frozen=True)
class Check:
    """One verdict on the site; ``fix`` says what to change when it fails.

    ``skipped``: not evaluated, because a check it depends on already failed (the
    problem is reported once, there). ``kind`` is the exit code a failure means:
    a static check fails as a usage error (the file is wrong); a live one as its error.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    kind: Kind = Kind.USAGE

    @property
    def failed(self) -> bool:
        return not self.ok and not self.skipped


Probe = Callable[[], Check]


def _pass(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _fail(name: str, detail: str, fix: str, kind: Kind = Kind.USAGE) -> Check:
    return Check(name, False, detail, fix, kind=kind)


def _skip(name: str, detail: str) -> Check:
    return Check(name, False, detail, skipped=True)


# --- hosts ----------------------------------------------------------------------------

def _canonical(address: str) -> str:
    """``::ffff:127.0.0.1`` is the IPv4 peer a daemon sees; a scope id is no address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def resolve_host(host: str) -> frozenset[str]:
    """Every address ``host`` stands for, as the daemons resolve their trusted rows.

    Comparing addresses, not spellings, makes ``localhost`` and ``127.0.0.1`` one host;
    raises OSError when the name resolves to nothing.
    """
    try:
        return frozenset({_canonical(host)})
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    addresses = frozenset(_canonical(str(info[4][0])) for info in infos)
    if not addresses:
        raise OSError(f"{host!r} resolves to no address")
    return addresses


class _Hosts:
    """One resolution per name per run: a slow resolver is then slow only once."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self._known: dict[str, frozenset[str] | None] = {}

    def addresses(self, host: str) -> frozenset[str] | None:
        """None when ``host`` cannot be resolved."""
        if host not in self._known:
            try:
                self._known[host] = self._resolve(host)
            except (OSError, UnicodeError):
                self._known[host] = None
        return self._known[host]

    def same(self, a: str, b: str) -> bool | None:
        """Whether ``a`` and ``b`` share an address; None when either cannot be resolved."""
        first, second = self.addresses(a), self.addresses(b)
        if first is None or second is None:
            return None
        return bool(first & second)

    def is_local(self, host: str) -> bool:
        """Whether ``host`` is this machine (a wildcard bind listens on all of its addresses)."""
        addresses = self.addresses(host) or frozenset()
        if any(ipaddress.ip_address(a).is_loopback for a in addresses):
            return True
        own = self.addresses(socket.gethostname()) or frozenset()
        return bool(addresses & own)


def _is_wildcard(bind: str) -> bool:
    return bind in _WILDCARDS


def daemon_host(bind: str) -> str:
    """Where a daemon bound to ``bind`` is called from this machine (as ``from_site`` does)."""
    return "127.0.0.1" if _is_wildcard(bind) else bind


def _unresolved(host: str, key: str) -> tuple[str, str]:
    return (f"cannot resolve {host!r} ({key}) to an address, so the daemon can match no "
            "connection to it",
            f"write an IP address in {key}, or a name this network resolves")


# --- the trusted maps --------------------------------------------------------------------

def _row(trusted: Iterable[TrustedAE], ae_title: str) -> TrustedAE | None:
    """The row the daemon uses for ``ae_title``: the last one, as a map keyed by title keeps."""
    found = None
    for row in trusted:
        if row.ae_title.strip(" ") == ae_title.strip(" "):
            found = row
    return found


def _db_map(site: Site) -> str:
    return ("[[db_daemon.trusted]]" if site.db_daemon.trusted is not None
            else "the DB Daemon's derived trusted map (the file has no [[db_daemon.trusted]])")


def _fd_map(site: Site) -> str:
    return ("[[file_daemon.trusted]]" if site.file_daemon.trusted is not None
            else "the File Daemon's derived trusted map (the file has no "
                 "[[file_daemon.trusted]])")


def _add_row(title: str, host: str, port: int, table: str) -> str:
    return (f"add a row ae_title = {title!r}, host = {host!r}, port = {port} to {table} "
            "(the daemon's trusted application entities)")


def _check_db_trusts_client(site: Site, hosts: _Hosts) -> Check:
    """The DB Daemon must accept the client's association, or no query or move starts."""
    name = "db-trusts-client"
    db, client = site.db_daemon, site.client
    row = _row(site.db_trusted(), client.ae_title)
    if not db.permit_trusted_only:
        return _pass(name, f"{db.ae_title} has permit_trusted_only off: it accepts any calling "
                           f"AE title, {client.ae_title} from {client.host} included")
    table = "[[db_daemon.trusted]]"
    if row is None:
        return _fail(name, f"{client.ae_title} is not on {db.ae_title}'s trusted list in "
                           f"{_db_map(site)}: the DB Daemon rejects every query and move from "
                           "this client (calling AE title not recognized)",
                     _add_row(client.ae_title, client.host, client.port, table))
    for host, key in ((client.host, "client.host"),
                      (row.host, f"the host of {client.ae_title}'s {table} row")):
        if hosts.addresses(host) is None:
            return _fail(name, *_unresolved(host, key))
    if not hosts.same(row.host, client.host):
        return _fail(name, f"{db.ae_title} trusts {client.ae_title} only from {row.host}, but "
                           f"the client connects from {client.host} (client.host): the DB "
                           "Daemon rejects it as if it were not on the list",
                     f"set host = {client.host!r} in {client.ae_title}'s {table} row, or "
                     "correct client.host to the address the daemons see")
    return _pass(name, f"{db.ae_title} trusts {client.ae_title} from {row.host}")


def _check_client_move_destination(site: Site, hosts: _Hosts) -> Check:
    """``--dest self``: the DB Daemon opens a sub-association to the row, not to client.port."""
    name = "client-move-destination"
    db, client = site.db_daemon, site.client
    table = "[[db_daemon.trusted]]"
    row = _row(site.db_trusted(), client.ae_title)
    if row is None:
        if db.permit_trusted_only:
            return _skip(name, f"{db.ae_title} has no row for {client.ae_title} to move to "
                               "(see db-trusts-client)")
        return _fail(name, f"{client.ae_title} is not on {db.ae_title}'s trusted list: a move "
                           "to the client itself (--dest self) is refused (move destination "
                           "unknown), even with permit_trusted_only off",
                     _add_row(client.ae_title, client.host, client.port, table))
    problems: list[str] = []
    fixes: list[str] = []
    if not db.permit_trusted_only:  # else db-trusts-client has compared the hosts already
        if hosts.addresses(row.host) is None or hosts.addresses(client.host) is None:
            unresolved = row.host if hosts.addresses(row.host) is None else client.host
            return _fail(name, *_unresolved(unresolved, f"{client.ae_title}'s host"))
        if not hosts.same(row.host, client.host):
            problems.append(f"to host {row.host}, but the client receives on {client.host} "
                            "(client.host)")
            fixes.append(f"host = {client.host!r}")
    if row.port != client.port:
        problems.append(f"to port {row.port}, but the client receives on port {client.port} "
                        "(client.port)")
        fixes.append(f"port = {client.port}")
    if problems:
        return _fail(name, f"{db.ae_title} sends moves for {client.ae_title} "
                           + " and ".join(problems) + ": moves to the client itself "
                           "(--dest self) would fail",
                     f"set {', '.join(fixes)} in {client.ae_title}'s {table} row "
                     "(or change the [client] section to match)")
    return _pass(name, f"moves to {client.ae_title} (--dest self) go to {row.host}:{row.port}, "
                       "where the client receives")


def _check_db_trusts_file_daemon(site: Site, hosts: _Hosts) -> Check:
    """The move destination: a wrong port here is the classic "move fails, echo works"."""
    name = "db-trusts-file-daemon"
    db, fd = site.db_daemon, site.file_daemon
    table = "[[db_daemon.trusted]]"
    fd_host = daemon_host(fd.bind)
    row = _row(site.db_trusted(), fd.ae_title)
    if row is None:
        return _fail(name, f"{fd.ae_title} is not on {db.ae_title}'s trusted list in "
                           f"{_db_map(site)}: moves to the File Daemon are refused (move "
                           "destination unknown, 0xA801)",
                     _add_row(fd.ae_title, fd_host, fd.port, table))
    if hosts.addresses(row.host) is None:
        return _fail(name, *_unresolved(row.host, f"the host of {fd.ae_title}'s {table} row"))
    problems: list[str] = []
    fixes: list[str] = []
    note = ""
    if _is_wildcard(fd.bind):
        note = f" (the File Daemon listens on every interface, {fd.bind or 'all'})"
    elif not hosts.same(row.host, fd.bind):
        problems.append(f"to host {row.host}, but the File Daemon listens on {fd.bind} "
                        "(file_daemon.bind)")
        fixes.append(f"host = {fd.bind!r}")
    if row.port != fd.port:
        problems.append(f"to port {row.port}, but the File Daemon listens on port {fd.port} "
                        "(file_daemon.port)")
        fixes.append(f"port = {fd.port}")
    if problems:
        return _fail(name, f"{db.ae_title} opens its C-STORE sub-association for "
                           f"{fd.ae_title} " + " and ".join(problems) + ": C-ECHO to the "
                           "File Daemon works while every move to it fails",
                     f"set {', '.join(fixes)} in {fd.ae_title}'s {table} row")
    return _pass(name, f"{db.ae_title} sends moves for {fd.ae_title} to "
                       f"{row.host}:{row.port}{note}")


def _check_file_daemon_trusts_db(site: Site, hosts: _Hosts) -> Check:
    """The File Daemon must accept the DB Daemon's sub-association, or every store fails."""
    name = "file-daemon-trusts-db"
    db, fd = site.db_daemon, site.file_daemon
    if not fd.permit_trusted_only:
        return _pass(name, f"{fd.ae_title} has permit_trusted_only off: it accepts any calling "
                           f"AE title, {db.ae_title} included")
    table = "[[file_daemon.trusted]]"
    db_host = daemon_host(db.bind)
    row = _row(site.fd_trusted(), db.ae_title)
    if row is None:
        return _fail(name, f"{db.ae_title} is not on {fd.ae_title}'s trusted list in "
                           f"{_fd_map(site)}: the File Daemon rejects the DB Daemon's C-STORE "
                           "sub-association, so every move to it fails",
                     _add_row(db.ae_title, db_host, db.port, table))
    if hosts.addresses(row.host) is None:
        return _fail(name, *_unresolved(row.host, f"the host of {db.ae_title}'s {table} row"))
    if _is_wildcard(db.bind):
        return _pass(name, f"{fd.ae_title} trusts {db.ae_title} from {row.host} (the DB Daemon "
                           "listens on every interface; check that it connects from there)")
    if not hosts.same(row.host, db.bind):
        return _fail(name, f"{fd.ae_title} trusts {db.ae_title} only from {row.host}, but the "
                           f"DB Daemon's address is {db.bind} (db_daemon.bind): the File Daemon "
                           "rejects its C-STORE sub-association, so every move to it fails",
                     f"set host = {db.bind!r} in {db.ae_title}'s {table} row")
    return _pass(name, f"{fd.ae_title} trusts {db.ae_title} from {row.host}")


# --- ports, AE titles, character sets, models ------------------------------------------

def _listeners(site: Site) -> list[tuple[str, str, int]]:
    """(key, host, port) of each port something listens on: both daemons and the client."""
    db, fd, client = site.db_daemon, site.file_daemon, site.client
    return [("db_daemon.port", db.bind, db.port), ("file_daemon.port", fd.bind, fd.port),
            ("client.port", client.host, client.port)]


def _check_port_range(site: Site) -> Check:
    """Port 0 (a free port at start) suits tests, but no trusted row can name it."""
    name = "port-range"
    bad = [(key, port) for key, _host, port in _listeners(site) if not 1 <= port <= _PORT_MAX]
    if bad:
        listed = ", ".join(f"{key} is {port}" for key, port in bad)
        return _fail(name, f"{listed}: a port must be 1 to {_PORT_MAX} to be called or named "
                           "in a trusted row (0 only picks a free port when an emulator starts)",
                     "give " + ", ".join(key for key, _ in bad) + f" a fixed port from 1 to "
                     f"{_PORT_MAX}")
    return _pass(name, ", ".join(f"{key} {port}" for key, _host, port in _listeners(site)))


def _on_one_host(hosts: _Hosts, a: str, b: str) -> bool:
    """Whether listeners at ``a`` and ``b`` compete for ports (wildcards take every address)."""
    if _is_wildcard(a) and _is_wildcard(b):
        return True
    if _is_wildcard(a) or _is_wildcard(b):
        return hosts.is_local(b if _is_wildcard(a) else a)
    return bool(hosts.same(a, b))  # unresolvable: reported by the trust checks


def _check_ports_distinct(site: Site, hosts: _Hosts) -> Check:
    """Two listeners on one host and port: the second cannot start."""
    name = "ports-distinct"
    listeners = [item for item in _listeners(site) if item[2] != 0]
    clashes: list[str] = []
    for i, (key, host, port) in enumerate(listeners):
        for other_key, other_host, other_port in listeners[i + 1:]:
            if port == other_port and _on_one_host(hosts, host, other_host):
                clashes.append(f"{key} and {other_key} are both {port} on {host} / {other_host}")
    if clashes:
        return _fail(name, "; ".join(clashes) + ": only one of them can listen there",
                     "give the DB Daemon, the File Daemon and the client's receive port "
                     "(client.port) different ports on one host")
    return _pass(name, "no two listeners share a port on one host")


def _check_privileged_ports(site: Site) -> Check:
    """Below 1024 only root may listen on Linux and macOS (fine for a daemon on Windows)."""
    name = "privileged-ports"
    low = [(key, port) for key, _host, port in _listeners(site) if 0 < port < _PRIVILEGED_BELOW]
    if low:
        listed = ", ".join(f"{key} {port}" for key, port in low)
        # A note, not a failure: real DB Daemons listen on 104/105 at some sites, fine on
        # Windows; only what runs here (rtmove's port, an emulator) needs the privilege.
        return _pass(name, f"{listed} below {_PRIVILEGED_BELOW}: fine for a daemon on Windows; "
                           "on Linux or macOS, listening there (rtmove's client.port, an "
                           "emulated daemon) needs root or CAP_NET_BIND_SERVICE")
    return _pass(name, f"every port is {_PRIVILEGED_BELOW} or above")


def _check_ae_titles_valid(site: Site) -> Check:
    """The loader refuses bad titles; a site built in code has not been through it."""
    name = "ae-titles-valid"
    problems = []
    for key, title in _titles(site):
        problem = ae_title_problem(title.strip(" "))
        if problem is not None:
            problems.append(f"{key} {title!r} {problem}")
    for table, trusted in (("db_daemon.trusted", site.db_trusted()),
                           ("file_daemon.trusted", site.fd_trusted())):
        for row in trusted:
            problem = ae_title_problem(row.ae_title.strip(" "))
            if problem is not None:
                problems.append(f"{table} row {row.ae_title!r} {problem}")
    if problems:
        return _fail(name, "; ".join(problems),
                     "use 1 to 16 ASCII characters, without a backslash or control characters")
    return _pass(name, ", ".join(title for _key, title in _titles(site)))


def _titles(site: Site) -> list[tuple[str, str]]:
    return [("db_daemon.ae_title", site.db_daemon.ae_title),
            ("file_daemon.ae_title", site.file_daemon.ae_title),
            ("client.ae_title", site.client.ae_title)]


def _check_ae_titles_distinct(site: Site) -> Check:
    """A trusted map has one row per AE title: two parties sharing one are indistinguishable."""
    name = "ae-titles-distinct"
    titles = _titles(site)
    shared = [f"{key} and {other_key} are both {title.strip(' ')!r}"
              for i, (key, title) in enumerate(titles)
              for other_key, other in titles[i + 1:] if title.strip(" ") == other.strip(" ")]
    if shared:
        return _fail(name, "; ".join(shared) + ": a trusted map keeps one row per AE title, "
                           "so the daemons cannot tell them apart (a move to that title goes "
                           "to whichever row wins)",
                     "give the DB Daemon, the File Daemon and the client three different AE "
                     "titles")
    return _pass(name, "the DB Daemon, the File Daemon and the client have their own AE titles")


def _check_charsets_known(site: Site) -> Check:
    """An unknown set is an object the daemon cannot encode or decode."""
    name = "charsets-known"
    problems: list[str] = []
    for table, trusted in (("[[db_daemon.trusted]]", site.db_trusted()),
                           ("[[file_daemon.trusted]]", site.fd_trusted())):
        for row in trusted:
            where = f"{row.ae_title}'s {table} row"
            for key, value in (("import_charset", row.import_charset),
                               ("export_charset", row.export_charset)):
                if value and value not in _KNOWN_CHARSETS:
                    problems.append(f"{key} {value!r} in {where} is no DICOM character set")
            if row.charset_override and not row.import_charset:
                problems.append(f"{where} has charset_override on but no import_charset, so "
                                "the daemon has no set to read that AE's data in")
    if problems:
        return _fail(name, "; ".join(problems),
                     "use a Specific Character Set defined term such as 'ISO_IR 192' (UTF-8) "
                     "or 'ISO_IR 100' (Latin-1)")
    return _pass(name, "every trusted row's import and export character set is known")


def _check_non_ascii_names(site: Site) -> Check:
    """What the DB Daemon exports to the client and the File Daemon is what they receive."""
    name = "non-ascii-names"
    db = site.db_daemon
    table = "[[db_daemon.trusted]]"
    rows = [row for title in (site.client.ae_title, site.file_daemon.ae_title)
            if (row := _row(site.db_trusted(), title)) is not None]
    if not rows:
        return _skip(name, "no client or File Daemon row to check (see the trust checks)")
    ascii_rows = [row for row in rows if row.export_charset in _ASCII_ONLY]
    if ascii_rows:
        listed = ", ".join(f"{row.ae_title} in {row.export_charset or 'no set'!s}"
                           for row in ascii_rows)
        return _fail(name, f"{db.ae_title} sends objects to {listed} (ASCII only): non-ASCII "
                           "patient names will arrive as '?'",
                     "set export_charset = \"ISO_IR 192\" (UTF-8) or a Latin set such as "
                     f"\"ISO_IR 100\" in {table} for "
                     + ", ".join(row.ae_title for row in ascii_rows))
    return _pass(name, ", ".join(f"{row.ae_title} receives {row.export_charset}" for row in rows))


def _check_models(site: Site) -> Check:
    """rtmove finds plans with Study Root C-FIND and fetches them with a C-MOVE."""
    name = "models"
    db = site.db_daemon
    served = ", ".join(db.models) or "nothing"
    missing: list[str] = []
    if Model.STUDY_FIND not in db.models:
        missing.append(f'"{Model.STUDY_FIND}" (rtmove finds plans with it)')
    if not any(model in db.models for model in _MOVE_MODELS):
        missing.append(f'"{Model.STUDY_MOVE}" or "{Model.PATIENT_MOVE}" (rtmove moves with it)')
    if missing:
        return _fail(name, f"{db.ae_title} serves {served}, without " + " and ".join(missing),
                     "add " + " and ".join(m.split(" (")[0] for m in missing)
                     + " to db_daemon.models, as the real daemon serves them")
    return _pass(name, f"{db.ae_title} serves {served}")


def _exposure(name: str, key: str, bind: str, permit_trusted_only: bool) -> str | None:
    """What listening on ``bind`` exposes, or None for loopback only (this machine)."""
    if _is_wildcard(bind):
        where = f"every interface ({key} {bind or 'empty'})"
    else:
        try:
            if ipaddress.ip_address(bind.split("%", 1)[0]).is_loopback:
                return None
        except ValueError:
            pass  # a name (a site built in code): whatever it resolves to
        where = f"{bind} ({key}), which other machines can reach"
    guard = ("only its trusted list keeps other callers out" if permit_trusted_only
             else "and permit_trusted_only is off: it accepts ANY AE title from ANY host")
    return f"{name} listens on {where}: {guard}"


def _check_listen_exposure(site: Site) -> Check:
    """The site model allows a daemon on every interface (the real ones serve a network);
    this says so loudly, as ``dbdsim serve`` does, rather than forbidding it."""
    name = "listen-exposure"
    db, fd = site.db_daemon, site.file_daemon
    notes = [note for note in (
        _exposure(f"the DB Daemon {db.ae_title}", "db_daemon.bind", db.bind,
                  db.permit_trusted_only),
        _exposure(f"the File Daemon {fd.ae_title}", "file_daemon.bind", fd.bind,
                  fd.permit_trusted_only)) if note is not None]
    bind = from_site(site).receive_bind
    where = f"on loopback only ({bind}), as the DB Daemon is" if bind else "on every interface"
    receiver = (f"rtmove's own Storage SCP (client.port {site.client.port}) listens {where} "
                "while it receives headers or a --dest self move, and stores what any caller "
                f"sends to {site.client.ae_title}")
    if notes:
        # A note, not a failure: the model allows it on purpose, the engineer must know.
        return _pass(name, "WARNING: " + "; ".join(notes) + f". Also, {receiver}")
    return _pass(name, f"both daemons listen on loopback only ({db.bind}, {fd.bind}): no "
                       f"other machine can reach them. Note: {receiver}")


def static_checks(site: Site, *, resolve: Resolver = resolve_host) -> list[Check]:
    """Every rule the site's daemons will apply, checked from the site alone (no network
    but name resolution); ``resolve`` is replaceable so tests need no DNS."""
    hosts = _Hosts(resolve)
    return [
        _check_ae_titles_valid(site),
        _check_ae_titles_distinct(site),
        _check_models(site),
        _check_db_trusts_client(site, hosts),
        _check_client_move_destination(site, hosts),
        _check_db_trusts_file_daemon(site, hosts),
        _check_file_daemon_trusts_db(site, hosts),
        _check_port_range(site),
        _check_ports_distinct(site, hosts),
        _check_privileged_ports(site),
        _check_charsets_known(site),
        _check_non_ascii_names(site),
        _check_listen_exposure(site),
    ]


# --- live -------------------------------------------------------------------------------

def probe_name(probe: Probe) -> str:
    """A probe is named after its function (``find_study_root``), or its ``name`` attribute."""
    named = getattr(probe, "name", None)
    if isinstance(named, str):
        return named
    return str(getattr(probe, "__name__", type(probe).__name__)).replace("_", "-")


def _echo_check(name: str, host: str, port: int, calling: str, called: str, timeout: float,
                *, caller_optional: bool = False) -> Check:
    try:
        seconds = echo(host, port, calling, called, timeout)
    except AssociationRejected as exc:
        if caller_optional and (exc.source, exc.reason) == (1, 3):
            return _pass(name, f"{called} at {host}:{port} is listening and answers to "
                               f"{called}; it rejects {calling} as calling AE title, which "
                               "rtmove does not mind (only the DB Daemon sends to it)")
        return _fail(name, str(exc), "", exc.kind)
    except DicomError as exc:
        return _fail(name, str(exc), "", exc.kind)
    return _pass(name, f"{called} at {host}:{port} answered C-ECHO from {calling} in "
                       f"{seconds * 1000:.0f} ms")


def live_checks(site: Site, settings: Settings, *, timeout: float,
                probes: Sequence[Probe] = ()) -> list[Check]:
    """C-ECHO both daemons as the client, then run ``probes`` (C-FIND, trial move, ...).

    ``probes`` is the hook for checks needing the DB Daemon to answer: each returns its
    Check, and a DicomError it raises becomes a failing Check carrying the sentence. They
    are skipped when the DB Daemon did not answer C-ECHO, rather than each timing out.
    """
    fd = site.file_daemon
    db_echo = _echo_check("echo-db-daemon", settings.host, settings.port, settings.aet,
                          settings.aec, timeout)
    # The File Daemon needs to trust only the DB Daemon: the client calling it shows it is
    # up, at that address, under that AE title, even when it refuses the client's title.
    fd_echo = _echo_check("echo-file-daemon", daemon_host(fd.bind), fd.port, settings.aet,
                          fd.ae_title, timeout, caller_optional=True)
    checks = [db_echo, fd_echo]
    for probe in probes:
        name = probe_name(probe)
        if not db_echo.ok:
            checks.append(_skip(name, f"{settings.aec} did not answer C-ECHO (see "
                                      "echo-db-daemon)"))
            continue
        try:
            checks.append(probe())
        except DicomError as exc:
            checks.append(_fail(name, str(exc), "", exc.kind))
    return checks
