"""Writing a site back as a site file: every key written, and read back as the same site."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from client.site import (
    ClientConfig,
    DBDaemonService,
    FileDaemonService,
    Model,
    Quirks,
    Site,
    Timeouts,
    TrustedAE,
    default_site,
    load_site,
    parse_site,
)
from client.site_dump import dump_site


def _round_trip(site: Site) -> Site:
    return parse_site(dump_site(site), source=site.source)


def _with(site: Site, *, db: dict[str, Any] | None = None, fd: dict[str, Any] | None = None,
          client: dict[str, Any] | None = None) -> Site:
    return dataclasses.replace(
        site, db_daemon=dataclasses.replace(site.db_daemon, **(db or {})),
        file_daemon=dataclasses.replace(site.file_daemon, **(fd or {})),
        client=dataclasses.replace(site.client, **(client or {})))


_DEFAULT = default_site()
_ROWS = (
    TrustedAE("MOSAIQ", "10.1.2.3", 104, "1.2.840.113619.6.94", "ISO_IR 100", "ISO_IR 6", True),
    TrustedAE("ARIA_IMPORT", "archive.example.org", 11112, "2.25.1234", "ISO_IR 144",
              "ISO_IR 100", True),
    TrustedAE("STORESCP", "localhost", 65535, "1.2.3", "ISO_IR 6", "ISO_IR 192", True),
)
_SITES = {
    "default": _DEFAULT,
    "trusted maps": _with(_DEFAULT, db={"trusted": _ROWS}, fd={"trusted": _ROWS[::-1]}),
    "empty trusted maps": _with(_DEFAULT, db={"trusted": ()}, fd={"trusted": ()}),
    "with_trusted": _DEFAULT.with_trusted(_ROWS[0]),
    "quirks": _with(_DEFAULT, db={"quirks": Quirks(("RTDOSE", "CT"), True, 0.25)}),
    "timeouts": _with(_DEFAULT, db={"timeouts": Timeouts(0.1, 1e-7, 1e20)},
                      fd={"timeouts": Timeouts(2.5, 3600.0, 123456.789)}),
    "models": _with(_DEFAULT, db={"models": (Model.STUDY_MOVE, Model.PATIENT_GET,
                                             Model.STUDY_FIND)}),
    "storage": _with(_DEFAULT, db={"storage": Path("/srv/dbdsim/storage")},
                     fd={"output": Path("/srv/dbdsim/out")}),
    "patient folders off": _with(_DEFAULT, fd={"patient_folders": False}),
    "every interface": _with(_DEFAULT, db={"bind": "0.0.0.0"}, fd={"bind": "0.0.0.0"}),
    "other values": Site(
        DBDaemonService("VMSDBD", 0, "::1", False, 1, strict_hierarchy=True),
        FileDaemonService("FD 2", 0, "10.0.0.7", False, 99, output=Path("/out")),
        ClientConfig("RTMOVE", "client.example", 0), source="/etc/dbdsim/site.toml"),
}


@pytest.mark.parametrize("site", _SITES.values(), ids=_SITES.keys())
def test_round_trip(site: Site) -> None:
    assert _round_trip(site) == site


@pytest.mark.parametrize("site", _SITES.values(), ids=_SITES.keys())
def test_load_site_reads_the_written_file(site: Site, tmp_path: Path) -> None:
    path = tmp_path / "effective-site.toml"
    path.write_text(dump_site(site), encoding="utf-8")
    # A relative output is written relative, so load_site takes it from the file's folder.
    output = site.file_daemon.output
    expected = _with(site, fd={"output": output if output.is_absolute() else tmp_path / output})
    assert load_site(path) == dataclasses.replace(expected, source=str(path))


def test_every_field_is_written() -> None:
    """A model field the writer forgets would silently fall back to its default."""
    site = _SITES["trusted maps"]
    site = _with(site, db={"storage": Path("/srv/storage")})
    data = tomllib.loads(dump_site(site))
    names = {cls: {f.name for f in dataclasses.fields(cls)}
             for cls in (Site, DBDaemonService, FileDaemonService, ClientConfig, Timeouts,
                         Quirks, TrustedAE)}
    assert set(data) == names[Site] - {"source"}
    assert set(data["db_daemon"]) == names[DBDaemonService]
    assert set(data["file_daemon"]) == names[FileDaemonService]
    assert set(data["client"]) == names[ClientConfig]
    for daemon in ("db_daemon", "file_daemon"):
        assert set(data[daemon]["timeouts"]) == names[Timeouts]
        for row in data[daemon]["trusted"]:
            assert set(row) == names[TrustedAE]
    assert set(data["db_daemon"]["quirks"]) == names[Quirks]


def test_none_and_empty_trusted_maps_and_no_storage() -> None:
    derived = tomllib.loads(dump_site(_DEFAULT))
    assert "trusted" not in derived["db_daemon"]
    assert "trusted" not in derived["file_daemon"]
    assert "storage" not in derived["db_daemon"]
    empty = dump_site(_SITES["empty trusted maps"])
    assert tomllib.loads(empty)["db_daemon"]["trusted"] == []
    assert _round_trip(_SITES["empty trusted maps"]).db_daemon.trusted == ()
    assert _round_trip(_DEFAULT).db_daemon.trusted is None


def test_starts_with_a_comment_naming_the_source() -> None:
    site = dataclasses.replace(_DEFAULT, source='C:\\sites\\"main"\nsite.toml')
    text = dump_site(site)
    assert text.startswith('# Written by dbdsim from "C:\\\\sites\\\\\\"main\\"\\nsite.toml".\n')
    assert _round_trip(site) == site  # the source cannot break out of its comment


def test_strings_are_escaped() -> None:
    trusted = (TrustedAE('Q"T', 'ho"st#', 1), TrustedAE("X=Y]", "hôpital.ch", 2))
    site = Site(
        DBDaemonService(ae_title='DB"1\'#', storage=Path('/data/a\\b/"quoted"/ünïcödé/病院'),
                        trusted=trusted),
        FileDaemonService(ae_title="[FD]", output=Path("/tmp/tab\there/nl\nthere/del\x7f/\x00/é")),
        ClientConfig(ae_title="'single'", host="クライアント"),
        source="tests")
    text = dump_site(site)
    assert "ünïcödé/病院" in text and "クライアント" in text  # UTF-8 kept, not \u escapes
    assert '"/data/a\\\\b/\\"quoted\\"/' in text
    assert "\\t" in text and "\\n" in text and "\\u007F" in text and "\\u0000" in text
    assert _round_trip(site) == site


def test_a_lone_surrogate_is_refused() -> None:
    site = _with(_DEFAULT, fd={"output": Path("/out/bad\udcff")})
    with pytest.raises(ValueError, match=r"file_daemon\.output.*U\+DCFF"):
        dump_site(site)


# --- any site the reader accepts --------------------------------------------------------

_AE_CHARS = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "\\")
# The reader strips spaces around an AE title, so only titles without them come back as written.
ae_titles = st.text(_AE_CHARS, min_size=1, max_size=16).filter(lambda t: t == t.strip(" "))
ports = st.integers(0, 65535)  # 0: pick a free port (daemons and the client)
hosts = st.sampled_from(["127.0.0.1", "localhost", "10.1.2.3", "::1"]) | st.text(
    st.characters(codec="utf-8").filter(lambda c: c.isprintable() and not c.isspace()),
    min_size=1, max_size=20)
binds = st.sampled_from(["127.0.0.1", "0.0.0.0", "::", "::1"]) | st.ip_addresses().map(str)
charsets = st.sampled_from(["ISO_IR 192", "ISO_IR 100", "ISO_IR 6", "ISO_IR 144"])
uids = (st.just("*") | st.integers(0, 10**38).map(lambda n: f"2.25.{n}")
        | st.sampled_from(["1.2.840.10008.1.2", "1.2.3"]))
seconds = st.floats(min_value=0, exclude_min=True, allow_infinity=False)
path_parts = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="/"),
                              min_size=1, max_size=8), min_size=1, max_size=4)
paths = path_parts.map(lambda parts: Path("/", *parts)) | path_parts.map(lambda p: Path(*p))
timeouts = st.builds(Timeouts, seconds, seconds, seconds)
trusted_rows = st.builds(TrustedAE, ae_titles, hosts, st.integers(1, 65535), uids, charsets,
                         charsets, st.booleans())
# One row per AE title in a map (the reader refuses repeats); None: derived from the site.
trusted_maps = st.none() | st.lists(trusted_rows, max_size=4,
                                    unique_by=lambda row: row.ae_title).map(tuple)
_OTHER_MODELS = [m for m in Model if m not in (Model.STUDY_FIND, Model.STUDY_MOVE)]
models = st.lists(st.sampled_from(_OTHER_MODELS), unique=True).flatmap(
    lambda extra: st.permutations([Model.STUDY_FIND, Model.STUDY_MOVE, *extra])).map(tuple)
modalities = st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=8),
                      max_size=4).map(tuple)
quirks = st.builds(Quirks, modalities, st.booleans(),
                   st.floats(min_value=0, max_value=1, exclude_min=True))
db_daemons = st.builds(DBDaemonService, ae_titles, ports, binds, st.booleans(),
                       st.integers(1, 2**31), timeouts, models, st.booleans(),
                       st.none() | paths, trusted_maps, quirks)
file_daemons = st.builds(FileDaemonService, ae_titles, ports, binds, st.booleans(),
                         st.integers(1, 2**31), timeouts, paths, st.booleans(), st.booleans(),
                         trusted_maps)
sites = st.builds(Site, db_daemons, file_daemons, st.builds(ClientConfig, ae_titles, hosts, ports),
                  st.text(max_size=30))


@settings(deadline=None)
@given(sites)
def test_any_accepted_site_round_trips(site: Site) -> None:
    # The reader refuses two daemons on one port (unless 0: a free port each).
    assume(site.db_daemon.port == 0 or site.db_daemon.port != site.file_daemon.port)
    text = dump_site(site)
    back = parse_site(text, source=site.source)
    assert back == site
    assert dump_site(back) == text  # and writing it again gives the same file
