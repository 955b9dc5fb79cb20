"""Site files: the example, the default, every validation rule with its key and line."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

from client.site import (
    ALLOW_ALL,
    DEFAULT_MODELS,
    ClientConfig,
    DBDaemonService,
    FileDaemonService,
    Model,
    Quirks,
    Site,
    SiteError,
    Timeouts,
    TrustedAE,
    default_site,
    load_site,
    load_site_or_default,
    parse_site,
)
from client.site_toml import find_key_line, format_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.toml"


def _error(text: str) -> SiteError:
    with pytest.raises(SiteError) as caught:
        parse_site(text, "site.toml")
    return caught.value


# --- the example and the default ---------------------------------------------------------

def test_example_parses_to_the_written_site() -> None:
    site = load_site(EXAMPLE)
    folder = EXAMPLE.parent
    dcmtk = TrustedAE("DCMTK", "127.0.0.1", 5680, "*", "ISO_IR 192", "ISO_IR 192", False)
    expected = Site(
        db_daemon=DBDaemonService(
            ae_title="VMSDBD1", port=5678, bind="127.0.0.1", permit_trusted_only=True,
            max_associations=10, timeouts=Timeouts(30.0, 60.0, 60.0),
            models=(Model.STUDY_FIND, Model.STUDY_MOVE, Model.PATIENT_MOVE),
            strict_hierarchy=False, storage=folder / "dbd-storage",
            trusted=(dcmtk, TrustedAE("VMSFD", "127.0.0.1", 5679)),
            quirks=Quirks(c001_modalities=(), refuse_plans_without_beams=False,
                          partial_move_fraction=1.0)),
        file_daemon=FileDaemonService(
            ae_title="VMSFD", port=5679, bind="127.0.0.1", permit_trusted_only=True,
            max_associations=10, timeouts=Timeouts(30.0, 60.0, 60.0),
            output=folder / "dbdsim-out", patient_folders=True,
            trusted=(TrustedAE("VMSDBD1", "127.0.0.1", 5678), dcmtk)),
        client=ClientConfig(ae_title="DCMTK", host="127.0.0.1", port=5680),
        source=str(EXAMPLE),
    )
    assert site == expected


def test_example_means_the_default_apart_from_its_commented_paths() -> None:
    """The example promises its values are the embedded default's, except where it says."""
    site, default = load_site(EXAMPLE), default_site()
    assert site.db_trusted() == default.db_trusted()
    assert site.fd_trusted() == default.fd_trusted()
    db = dataclasses.replace(site.db_daemon, storage=None, trusted=None)
    fd = dataclasses.replace(site.file_daemon, output=Path("dbdsim-out"), trusted=None)
    assert db == default.db_daemon
    assert fd == default.file_daemon
    assert site.client == default.client


def test_example_writes_every_key() -> None:
    """A key missing from the example is one a site engineer cannot discover by copying it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    tables: list[tuple[str, type[Any]]] = [
        ("db_daemon", DBDaemonService), ("db_daemon.timeouts", Timeouts),
        ("db_daemon.quirks", Quirks), ("db_daemon.trusted[0]", TrustedAE),
        ("file_daemon", FileDaemonService), ("file_daemon.timeouts", Timeouts),
        ("file_daemon.trusted[0]", TrustedAE), ("client", ClientConfig),
    ]
    for table, model in tables:
        path: list[str | int] = []
        for part in table.split("."):
            name, _, index = part.partition("[")
            path += [name, int(index[:-1])] if index else [name]
        for field in dataclasses.fields(model):
            assert find_key_line(text, [*path, field.name]) is not None, f"{table}.{field.name}"


def test_no_file_is_the_default() -> None:
    assert load_site_or_default(None) == default_site()
    assert load_site_or_default(EXAMPLE) == load_site(EXAMPLE)


def test_empty_text_is_the_default_with_its_source() -> None:
    assert parse_site("") == dataclasses.replace(default_site(), source="<string>")
    assert parse_site("", "x.toml").source == "x.toml"


def test_defaults_kept_for_missing_keys() -> None:
    site = parse_site('[db_daemon]\nport = 11112\n[db_daemon.timeouts]\nacse = 5\n')
    assert site.db_daemon.port == 11112
    assert site.db_daemon.timeouts == Timeouts(acse=5.0)
    assert site.db_daemon.ae_title == "VMSDBD1"
    assert site.db_daemon.models == DEFAULT_MODELS
    assert site.file_daemon == FileDaemonService()


def test_accepted_values_are_normalised() -> None:
    site = parse_site(
        '[db_daemon]\nae_title = "  VMSDBD  "\nbind = "::1"\nmodels = ["patient-root-get"]\n'
        '[db_daemon.quirks]\nc001_modalities = ["RTDOSE", "RTPLAN"]\npartial_move_fraction = 1\n'
        '[db_daemon.timeouts]\nnetwork = 2.5\n'
        '[[db_daemon.trusted]]\nae_title = "A"\nhost = "pc-12.hospital.local"\nport = 65535\n'
        'implementation_uid = "1.2.840.10008.1.1"\nimport_charset = "ISO_IR 101"\n'
        '[file_daemon]\nport = 0\nbind = "0.0.0.0"\n[client]\nport = 0\n')
    assert site.db_daemon.ae_title == "VMSDBD"
    assert site.db_daemon.bind == "::1"
    assert site.db_daemon.models == (Model.PATIENT_GET,)
    assert site.db_daemon.quirks.c001_modalities == ("RTDOSE", "RTPLAN")
    assert site.db_daemon.quirks.partial_move_fraction == 1.0
    assert isinstance(site.db_daemon.quirks.partial_move_fraction, float)
    assert site.db_daemon.timeouts.network == 2.5
    assert site.db_daemon.trusted == (
        TrustedAE("A", "pc-12.hospital.local", 65535, "1.2.840.10008.1.1", "ISO_IR 101"),)
    assert site.db_daemon.trusted[0].implementation_uid != ALLOW_ALL
    assert (site.file_daemon.port, site.client.port) == (0, 0)


# --- trusted maps ----------------------------------------------------------------------

def test_trusted_absent_is_derived() -> None:
    site = parse_site('[client]\nae_title = "RESEARCH"\n')
    assert site.db_daemon.trusted is None
    assert site.file_daemon.trusted is None
    assert [row.ae_title for row in site.db_trusted()] == ["RESEARCH", "VMSFD"]


def test_trusted_empty_trusts_no_one() -> None:
    site = parse_site("[db_daemon]\ntrusted = []\n")
    assert site.db_daemon.trusted == ()
    assert site.db_trusted() == ()
    assert site.file_daemon.trusted is None


def test_trusted_inline_array_of_tables() -> None:
    site = parse_site('[file_daemon]\ntrusted = [{ ae_title = "X", host = "h", port = 1 }]\n')
    assert site.fd_trusted() == (TrustedAE("X", "h", 1),)


# --- validation: each rule names the key and the line -------------------------------------

TRUSTED_ROW = '[[db_daemon.trusted]]\nae_title = "A"\nhost = "h"\nport = 104\n'

INVALID = [
    # unknown keys and tables, with a suggestion
    ('[db_daemon]\nae_titel = "X"\n', "db_daemon.ae_titel", 2, "did you mean 'ae_title'?"),
    ("[db_deamon]\nport = 1\n", "db_deamon", 1, "unknown table 'db_deamon' (did you mean"),
    ('[db_deamon.timeouts]\nacse = 1\n', "db_deamon", 1, "did you mean 'db_daemon'?"),
    ("[file_daemon.quirks]\n", "file_daemon.quirks", 1, "expected one of: ae_title,"),
    ("[db_daemon.timeouts]\nacse = 1\nnetwrok = 3\n", "db_daemon.timeouts.netwrok", 3,
     "did you mean 'network'?"),
    (TRUSTED_ROW + 'implementation = "*"\n', "db_daemon.trusted[0].implementation", 5,
     "did you mean 'implementation_uid'?"),
    ("[client]\nport = 1\naetitle = 'X'\n", "client.aetitle", 3, "did you mean 'ae_title'?"),
    ("[clients]\n", "clients", 1, "did you mean 'client'?"),
    # tables
    ("db_daemon = 5\n", "db_daemon", 1, "must be a table, got 5"),
    ("[db_daemon]\ntimeouts = 30\n", "db_daemon.timeouts", 2, "must be a table, got 30"),
    # wrong types
    ('[db_daemon]\nstrict_hierarchy = "yes"\n', "db_daemon.strict_hierarchy", 2,
     "must be true or false, got 'yes'"),
    ("[file_daemon]\npatient_folders = 1\n", "file_daemon.patient_folders", 2,
     "must be true or false, got 1"),
    (TRUSTED_ROW + 'export_charset = "ISO 2022 IR 87"\n', "db_daemon.trusted[0].export_charset", 5,
     "cannot stand alone"),
    (TRUSTED_ROW + "charset_override = 0\n", "db_daemon.trusted[0].charset_override", 5,
     "must be true or false"),
    ("[db_daemon.quirks]\nrefuse_plans_without_beams = []\n",
     "db_daemon.quirks.refuse_plans_without_beams", 2, "got an array"),
    ("[db_daemon]\nstorage = 5\n", "db_daemon.storage", 2, "must be a string, got 5"),
    ('[file_daemon]\noutput = ""\n', "file_daemon.output", 2, "must be a folder path"),
    # ports
    ('[db_daemon]\nport = "abc"\n', "db_daemon.port", 2,
     "must be an integer from 0 to 65535, got 'abc'"),
    ("[db_daemon]\nport = true\n", "db_daemon.port", 2, "got true"),
    ("[db_daemon]\nport = 5678.0\n", "db_daemon.port", 2, "got 5678.0"),
    ("[file_daemon]\nport = 65536\n", "file_daemon.port", 2, "from 0 to 65535, got 65536"),
    ("[file_daemon]\nport = -1\n", "file_daemon.port", 2, "got -1"),
    ("[client]\nport = 70000\n", "client.port", 2, "from 0 to 65535, got 70000"),
    ('[[db_daemon.trusted]]\nae_title = "A"\nhost = "h"\nport = 0\n',
     "db_daemon.trusted[0].port", 4, "must be an integer from 1 to 65535, got 0"),
    # counts, timeouts, fractions
    ("[db_daemon]\nmax_associations = 0\n", "db_daemon.max_associations", 2, "at least 1, got 0"),
    ("[file_daemon]\nmax_associations = 1.5\n", "file_daemon.max_associations", 2, "got 1.5"),
    ("[db_daemon.timeouts]\nacse = 0\n", "db_daemon.timeouts.acse", 2, "greater than 0, got 0"),
    ("[file_daemon.timeouts]\ndimse = -1.5\n", "file_daemon.timeouts.dimse", 2, "got -1.5"),
    ("[file_daemon.timeouts]\nnetwork = inf\n", "file_daemon.timeouts.network", 2, "got inf"),
    ("[db_daemon.timeouts]\nnetwork = nan\n", "db_daemon.timeouts.network", 2, "got nan"),
    ('[db_daemon.timeouts]\ndimse = "60"\n', "db_daemon.timeouts.dimse", 2, "got '60'"),
    ("[db_daemon.timeouts]\nacse = true\n", "db_daemon.timeouts.acse", 2, "got true"),
    ("[db_daemon.quirks]\npartial_move_fraction = 0\n", "db_daemon.quirks.partial_move_fraction",
     2, "greater than 0 and at most 1, got 0"),
    ("[db_daemon.quirks]\npartial_move_fraction = 1.01\n",
     "db_daemon.quirks.partial_move_fraction", 2, "got 1.01"),
    # AE titles
    ('[db_daemon]\nae_title = ""\n', "db_daemon.ae_title", 2, "1 to 16 characters"),
    ('[db_daemon]\nae_title = "    "\n', "db_daemon.ae_title", 2, "1 to 16 characters"),
    ('[file_daemon]\nae_title = "ABCDEFGHIJKLMNOPQ"\n', "file_daemon.ae_title", 2,
     "1 to 16 characters"),
    ('[client]\nae_title = "A\\\\B"\n', "client.ae_title", 2, "must not contain a backslash"),
    ('[client]\nae_title = "A\\tB"\n', "client.ae_title", 2, "must not contain control"),
    ('[client]\nae_title = "RÉSEARCH"\n', "client.ae_title", 2, "must be ASCII"),
    ("[client]\nae_title = 7\n", "client.ae_title", 2, "must be a string, got 7"),
    (TRUSTED_ROW.replace('"A"', '"AAAAAAAAAAAAAAAAA"'), "db_daemon.trusted[0].ae_title", 2,
     "1 to 16 characters"),
    # bind and host
    ('[db_daemon]\nbind = "localhost"\n', "db_daemon.bind", 2,
     "must be an IP address such as 127.0.0.1"),
    ('[file_daemon]\nbind = "127.0.0.1 "\n', "file_daemon.bind", 2, "got '127.0.0.1 '"),
    ('[file_daemon]\nbind = ""\n', "file_daemon.bind", 2, "not a host name"),
    ('[[file_daemon.trusted]]\nae_title = "A"\nhost = ""\nport = 1\n',
     "file_daemon.trusted[0].host", 3, "must be a host name or IP address"),
    ('[[file_daemon.trusted]]\nae_title = "A"\nhost = "my pc"\nport = 1\n',
     "file_daemon.trusted[0].host", 3, "without spaces"),
    ('[client]\nhost = "pc\\u0007"\n', "client.host", 2, "control characters"),
    # implementation UID and charsets
    (TRUSTED_ROW + 'implementation_uid = "1.2.03"\n', "db_daemon.trusted[0].implementation_uid",
     5, "must be '*' (allow all) or a UID"),
    (TRUSTED_ROW + 'implementation_uid = ""\n', "db_daemon.trusted[0].implementation_uid", 5,
     "got ''"),
    (TRUSTED_ROW + 'import_charset = "ISO_IR_192"\n', "db_daemon.trusted[0].import_charset", 5,
     "did you mean 'ISO_IR 192'?"),
    (TRUSTED_ROW + 'export_charset = "UTF-8"\n', "db_daemon.trusted[0].export_charset", 5,
     "Specific Character Set defined term"),
    (TRUSTED_ROW + 'export_charset = ""\n', "db_daemon.trusted[0].export_charset", 5, "got ''"),
    # models
    ("[db_daemon]\nmodels = []\n", "db_daemon.models", 2, "must name at least one model"),
    ('[db_daemon]\nmodels = "study-root-find"\n', "db_daemon.models", 2,
     "must be an array of model names"),
    ('[db_daemon]\nmodels = [\n  "study-root-find",\n  "study-root-fnd",\n]\n',
     "db_daemon.models[1]", 2, "did you mean 'study-root-find'?"),
    ('[db_daemon]\nmodels = ["study-root-find", "study-root-move", "study-root-find"]\n',
     "db_daemon.models[2]", 2, "repeats 'study-root-find', already db_daemon.models[0]"),
    ("[db_daemon]\nmodels = [1]\n", "db_daemon.models[0]", 2, "got 1"),
    # c001 modalities
    ('[db_daemon.quirks]\nc001_modalities = ["RTDOSE", "rtplan"]\n',
     "db_daemon.quirks.c001_modalities[1]", 2, "in capitals such as 'RTDOSE', got 'rtplan'"),
    ('[db_daemon.quirks]\nc001_modalities = [""]\n', "db_daemon.quirks.c001_modalities[0]", 2,
     "got ''"),
    ("[db_daemon.quirks]\nc001_modalities = [5]\n", "db_daemon.quirks.c001_modalities[0]", 2,
     "got 5"),
    ('[db_daemon.quirks]\nc001_modalities = "RTDOSE"\n', "db_daemon.quirks.c001_modalities", 2,
     "must be an array of modalities"),
    # trusted maps
    ("[db_daemon]\ntrusted = 5\n", "db_daemon.trusted", 2, "must be an array of tables"),
    ("[db_daemon]\ntrusted = [5]\n", "db_daemon.trusted[0]", 2, "must be a table, got 5"),
    ('[[db_daemon.trusted]]\nae_title = "A"\nport = 1\n', "db_daemon.trusted[0]", 1,
     "is missing the required key 'host'"),
    (TRUSTED_ROW + "[[db_daemon.trusted]]\n", "db_daemon.trusted[1]", 5,
     "missing the required keys 'ae_title', 'host', 'port'"),
    (TRUSTED_ROW + TRUSTED_ROW.replace('"A"', '"B"') + TRUSTED_ROW.replace('"A"', '" A "'),
     "db_daemon.trusted[2].ae_title", 10,
     "'A' is already the AE title of db_daemon.trusted[0]"),
    # the daemons' listening addresses
    ("[db_daemon]\nport = 6000\n[file_daemon]\nport = 6000\n", "file_daemon.port", 4,
     "cannot both listen there"),
    ("[db_daemon]\nport = 5679\n", "db_daemon.port", 2, "cannot both listen there"),
    ('[db_daemon]\nbind = "0.0.0.0"\nport = 7000\n[file_daemon]\nport = 7000\n',
     "file_daemon.port", 5, "(0.0.0.0 port 7000)"),
    ('[db_daemon]\nbind = "::"\n[file_daemon]\nbind = "127.0.0.2"\nport = 5678\n',
     "file_daemon.port", 5, "cannot both listen there"),
    # an inline table has no line per key: the line of the table's key instead
    ('db_daemon = { port = "x" }\n', "db_daemon.port", 1, "got 'x'"),
]


@pytest.mark.parametrize(("text", "key", "line", "words"), INVALID,
                         ids=[f"{case[1]}-{i}" for i, case in enumerate(INVALID)])
def test_invalid_site_names_key_and_line(text: str, key: str, line: int, words: str) -> None:
    error = _error(text)
    assert (error.source, error.key, error.line) == ("site.toml", key, line)
    assert str(error).startswith(f"site.toml line {line}, {key}: ")
    assert words in str(error)


def test_error_sentence_matches_the_documented_form() -> None:
    text = "\n".join([*TRUSTED_ROW.splitlines(), *TRUSTED_ROW.replace('"A"', '"B"').replace(
        "port = 104", 'port = "abc"').splitlines()])
    assert str(_error(text)) == ("site.toml line 8, db_daemon.trusted[1].port: must be an "
                                 "integer from 1 to 65535, got 'abc'")


@pytest.mark.parametrize("text", [
    "[db_daemon]\nport = 0\n[file_daemon]\nport = 0\n",
    '[db_daemon]\nport = 7000\n[file_daemon]\nport = 7000\nbind = "127.0.0.2"\n',
    '[db_daemon]\nport = 7000\nbind = "::1"\n[file_daemon]\nport = 7000\n',
])
def test_daemons_may_share_port_zero_or_a_port_on_different_addresses(text: str) -> None:
    parse_site(text)


# --- syntax and files ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line"), [
    ("[db_daemon]\nport = 1\nae_title = VMSDBD1\n", 3),
    ("[client]\nport = 1\n\n[client]\n", 4),
    ('[client]\nae_title = "unterminated\nport = 1\n', 2),
    ("[db_daemon]\nport = ", 2),
])
def test_toml_syntax_error_gives_the_line(text: str, line: int) -> None:
    error = _error(text)
    assert error.line == line
    assert error.key is None
    assert str(error).startswith(f"site.toml line {line}: is not valid TOML")
    assert "(at line" not in str(error)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(SiteError) as caught:
        load_site(path)
    assert caught.value.source == str(path)
    assert (caught.value.key, caught.value.line) == (None, None)
    assert str(caught.value).startswith(f"{path}: cannot read the site file")


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[client]\n\nae_title = "RÉ"\n'.encode("latin-1"))
    with pytest.raises(SiteError) as caught:
        load_site(path)
    assert caught.value.line == 3
    assert str(caught.value) == f"{path} line 3: is not UTF-8 text (byte 0xC9); save it as UTF-8"


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[client]\nae_title = "BOM"\n')
    assert load_site(path).client.ae_title == "BOM"


def test_relative_paths_are_taken_from_the_file_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    absolute = tmp_path / "elsewhere"
    text = f'[db_daemon]\nstorage = "store"\n[file_daemon]\noutput = "{absolute}"\n'
    (folder / "site.toml").write_text(text, encoding="utf-8")
    site = load_site(folder / "site.toml")
    assert site.db_daemon.storage == folder / "store"
    assert site.file_daemon.output == absolute
    assert parse_site(text).db_daemon.storage == Path("store")
    assert parse_site(text, base_dir=Path("/srv")).db_daemon.storage == Path("/srv/store")


def test_relative_site_path_still_gives_absolute_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site.toml").write_text('[file_daemon]\noutput = "out"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    site = load_site(Path("site.toml"))
    assert site.file_daemon.output == tmp_path / "out"
    assert site.source == "site.toml"


# --- the error type --------------------------------------------------------------------

def test_site_error_forms_and_pickling() -> None:
    error = SiteError("a.toml", "is wrong", "client.port", 3)
    assert str(error) == "a.toml line 3, client.port: is wrong"
    assert str(SiteError("a.toml", "is wrong", "client.port")) == "a.toml, client.port: is wrong"
    assert str(SiteError("a.toml", "is wrong", line=3)) == "a.toml line 3: is wrong"
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.key, copy.line, str(copy)) == (
        "a.toml", "client.port", 3, str(error))


# --- the line finder -------------------------------------------------------------------

SAMPLE = """\
# a comment with key = 1
[db_daemon]
port = 1
"quoted key" = 2
timeouts.acse = 3
models = [
  "a",   # port = 9
  ["b"]
]
note = \"\"\"
storage = "not a key"
[not.a.header]
\"\"\"
storage = "x"

[[db_daemon.trusted]]
ae_title = "A"

[[db_daemon.trusted]]
  ae_title = "B"
  port = 104

[file_daemon.timeouts]
acse = 1
[[a]]
[[a.b]]
x = 1
[[a]]
[[a.b]]
[[a.b]]
x = 2
[a.c]
y = 1
"""


@pytest.mark.parametrize(("path", "line"), [
    (("db_daemon",), 2),
    (("db_daemon", "port"), 3),
    (("db_daemon", "quoted key"), 4),
    (("db_daemon", "timeouts", "acse"), 5),
    (("db_daemon", "timeouts"), 5),  # inside: the first line writing under it
    (("db_daemon", "models"), 6),
    (("db_daemon", "note"), 10),
    (("db_daemon", "storage"), 14),
    (("db_daemon", "trusted"), 16),
    (("db_daemon", "trusted", 0), 16),
    (("db_daemon", "trusted", 0, "ae_title"), 17),
    (("db_daemon", "trusted", 1), 19),
    (("db_daemon", "trusted", 1, "ae_title"), 20),
    (("db_daemon", "trusted", 1, "port"), 21),
    (("file_daemon",), 23),
    (("file_daemon", "timeouts", "acse"), 24),
    (("a", 0, "b", 0, "x"), 27),
    (("a", 1, "b", 1, "x"), 31),
    (("a", 1, "c", "y"), 33),
    (("db_daemon", "trusted", 2), None),
    (("db_daemon", "trusted", 0, "port"), None),
    (("not", "a", "header"), None),
    (("client",), None),
    ((), None),
])
def test_find_key_line(path: tuple[str | int, ...], line: int | None) -> None:
    assert find_key_line(SAMPLE, path) == line


def test_find_key_line_ignores_keys_inside_values() -> None:
    text = 'models = [\n  "x",\n]\nport = 1\n'
    assert find_key_line(text, ("port",)) == 4
    assert find_key_line('a = "port = 1"\n', ("port",)) is None


def test_format_key() -> None:
    assert format_key(("db_daemon", "trusted", 1, "port")) == "db_daemon.trusted[1].port"
    assert format_key(("db_daemon", "models", 0)) == "db_daemon.models[0]"
    assert format_key(("a b", "c")) == '"a b".c'
