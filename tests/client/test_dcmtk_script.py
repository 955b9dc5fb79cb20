"""rtmove dcmtk-script: the movescu lines, the file names, both script forms, the command."""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from client.cli import main
from client.dcmtk_script import (
    Command,
    ScriptError,
    movescu_commands,
    posix_sh,
    script_name,
    windows_cmd,
    write_scripts,
)
from client.manifest import Collection, Item, Manifest, Role
from client.settings import SELF, Settings

STUDY = "1.2.826.0.1.3680043.10.1"
CT_SERIES = f"{STUDY}.1"
CT = tuple(f"{CT_SERIES}.{n}" for n in range(1, 4))
SS = f"{STUDY}.2.1"
PLAN1, PLAN2 = f"{STUDY}.3.1", f"{STUDY}.3.2"
DOSE1, DOSE2 = f"{STUDY}.4.1", f"{STUDY}.4.2"

SETTINGS = Settings(host="127.0.0.1", port=5678, aec="VMSDBD1", aet="DCMTK", recv_port=5680,
                    dest="VMSFD", models=())
HEAD = ["movescu", "-v", "-aet", "DCMTK", "-aec", "VMSDBD1", "-aem", "VMSFD", "-S"]
TAIL = ["127.0.0.1", "5678"]

CT_ITEM = Item(Role.IMAGES, STUDY, CT_SERIES, CT, modality="CT", label="Thorax")
SS_ITEM = Item(Role.STRUCTURE_SET, STUDY, f"{STUDY}.2", (SS,), modality="RTSTRUCT",
               label="RS_LUNG")


def _plan(uid: str, label: str) -> Item:
    return Item(Role.PLAN, STUDY, f"{STUDY}.3", (uid,), modality="RTPLAN", label=label)


def _dose(uid: str) -> Item:
    return Item(Role.DOSE, STUDY, f"{STUDY}.4", (uid,), modality="RTDOSE")


def _manifest(patient_name: str = "O'Brien^Ann", label2: str = "LUNG_L_2") -> Manifest:
    """Two plans on one structure set and CT, each with its dose; items in a jumbled order."""
    first = Collection(PLAN1, "LUNG_L_1", items=(CT_ITEM, _dose(DOSE1), SS_ITEM,
                                                 _plan(PLAN1, "LUNG_L_1")))
    second = Collection(PLAN2, label2, items=(_plan(PLAN2, label2), SS_ITEM, CT_ITEM,
                                              _dose(DOSE2)))
    return Manifest("RT0001", patient_name, (first, second))


def _keys(*keys: str) -> list[str]:
    return [arg for key in keys for arg in ("-k", key)]


def _image(sop: str) -> list[str]:
    return [*HEAD, *_keys("0008,0052=IMAGE", f"0008,0018={sop}"), *TAIL]


def _crt_split(line: str) -> list[str]:
    """How cmd.exe (``%%``) and the Microsoft C runtime (quotes, backslashes) hand a
    batch line to a program's ``main``: enough of both to check our quoting."""
    line = line.replace("%%", "%")
    args: list[str] = []
    current: list[str] = []
    quoted = started = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            run = len(line[i:]) - len(line[i:].lstrip("\\"))
            if line[i + run:i + run + 1] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * run)
            i += run
            started = True
            continue
        if char == '"':
            quoted, started = not quoted, True
        elif char in " \t" and not quoted:
            if started:
                args.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
        i += 1
    if started:
        args.append("".join(current))
    return args


# --- the movescu lines ---------------------------------------------------------------

def test_each_object_once_plans_first_with_its_unique_key() -> None:
    commands = movescu_commands(_manifest(), SETTINGS)
    assert [c.argv for c in commands] == [
        _image(PLAN1),
        _image(PLAN2),
        _image(SS),
        [*HEAD, *_keys("0008,0052=SERIES", f"0020,000E={CT_SERIES}"), *TAIL],
        _image(DOSE1),
        _image(DOSE2),
    ]
    assert [c.remark for c in commands] == [
        "RT Plan LUNG_L_1", "RT Plan LUNG_L_2", "RT Structure Set RS_LUNG",
        "CT series 3 images - Thorax", f"RT Dose {DOSE1}", f"RT Dose {DOSE2}"]


def test_hierarchical_adds_the_higher_levels_uids() -> None:
    commands = movescu_commands(_manifest(), SETTINGS, hierarchical=True)
    assert commands[0].argv == [*HEAD, *_keys(
        "0008,0052=IMAGE", f"0020,000D={STUDY}", f"0020,000E={STUDY}.3",
        f"0008,0018={PLAN1}"), *TAIL]
    assert commands[3].argv == [*HEAD, *_keys(
        "0008,0052=SERIES", f"0020,000D={STUDY}", f"0020,000E={CT_SERIES}"), *TAIL]


def test_instance_level_item_with_several_instances_moves_each() -> None:
    beams = Item(Role.OTHER, STUDY, f"{STUDY}.9", (f"{STUDY}.9.1", f"{STUDY}.9.2"),
                 modality="RTIMAGE", label="DRR")
    manifest = Manifest("RT0001", "", (Collection(PLAN1, items=(beams,)),))
    commands = movescu_commands(manifest, SETTINGS)
    assert commands == [Command("RTIMAGE DRR (1 of 2)", _image(f"{STUDY}.9.1")),
                        Command("RTIMAGE DRR (2 of 2)", _image(f"{STUDY}.9.2"))]


def test_series_without_known_instances_is_a_whole_series_move() -> None:
    ct = Item(Role.IMAGES, STUDY, CT_SERIES, modality="CT")
    (command,) = movescu_commands(Manifest("P", "", (Collection(PLAN1, items=(ct,)),)),
                                  SETTINGS)
    assert command.remark == "CT series whole series"
    assert command.argv[-4:-2] == ["-k", f"0020,000E={CT_SERIES}"]


def test_dest_self_moves_to_our_own_ae_and_says_a_storescp_must_listen() -> None:
    settings = replace(SETTINGS, dest=SELF)
    commands = movescu_commands(_manifest(), settings)
    assert all(c.argv[c.argv.index("-aem") + 1] == "DCMTK" for c in commands)
    cmd = windows_cmd(_manifest(), settings)
    assert "rem destination self: a storescp must listen as DCMTK" in cmd
    assert "storescp -aet DCMTK -od received 5680" in cmd
    assert "# destination self: a storescp must listen as DCMTK" in posix_sh(_manifest(),
                                                                              settings)
    assert "destination self" not in windows_cmd(_manifest(), SETTINGS)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("aet", "A\\B", "calling AE title 'A\\\\B' must not contain a backslash"),
    ("aec", "X" * 17, "called AE title"),
    ("dest", "", "move destination '' must be 1 to 16"),
    ("host", "", "is no host name"),
    ("port", 0, "port 0 is not in 1-65535"),
])
def test_values_no_script_can_carry_are_refused(field: str, value: object,
                                                message: str) -> None:
    settings = Settings(**{**SETTINGS.__dict__, field: value})
    with pytest.raises(ScriptError, match=message.replace("\\", "\\\\")):
        movescu_commands(_manifest(), settings)


# --- file names ---------------------------------------------------------------------

@pytest.mark.parametrize(("patient_name", "name"), [
    ("O'Brien^Ann", "move-O'Brien(RT0001)-LUNG_L_1.cmd"),
    ("Müller^Jörg", "move-Müller(RT0001)-LUNG_L_1.cmd"),
    ("a/b\\c:d^x", "move-a_b_c_d(RT0001)-LUNG_L_1.cmd"),
    ("", "move-patient(RT0001)-LUNG_L_1.cmd"),
    ("^Ann", "move-patient(RT0001)-LUNG_L_1.cmd"),
    ("=山田^太郎", "move-山田(RT0001)-LUNG_L_1.cmd"),
    ("Yamada^Taro=山田^太郎", "move-Yamada(RT0001)-LUNG_L_1.cmd"),
    ('Tab\t<x>|"y"?*', "move-Tab__x___y___(RT0001)-LUNG_L_1.cmd"),
])
def test_script_name_is_the_samples_made_safe(patient_name: str, name: str) -> None:
    manifest = _manifest(patient_name)
    assert script_name(manifest, manifest.collections[0], ".cmd") == name


def test_script_name_falls_back_to_the_plan_uid_and_guards_the_end() -> None:
    manifest = _manifest()
    no_label = Collection(PLAN1, items=(CT_ITEM,))
    assert script_name(manifest, no_label, "sh") == f"move-O'Brien(RT0001)-{PLAN1}.sh"
    dotted = Collection(PLAN1, "Plan. ", items=(CT_ITEM,))
    assert script_name(manifest, dotted, ".cmd") == "move-O'Brien(RT0001)-Plan__.cmd"


def test_script_name_is_capped_in_bytes() -> None:
    manifest = _manifest("Ö" * 300)
    name = script_name(manifest, manifest.collections[0], ".cmd")
    assert name.startswith("move-ÖÖ") and name.endswith(".cmd")
    assert len(name.encode("utf-8")) <= 150


# --- the two script forms -----------------------------------------------------------

def test_cmd_is_the_samples_layout_with_crlf() -> None:
    text = windows_cmd(_manifest(), SETTINGS)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert lines[0] == r"@set PATH=C:\dcmtk\bin;%PATH%"
    moves = [n for n, line in enumerate(lines) if line.startswith("movescu ")]
    assert len(moves) == 6
    assert all(lines[n - 1].startswith("rem ") for n in moves)
    assert lines[moves[0] - 1] == "rem RT Plan LUNG_L_1"
    assert [_crt_split(lines[n]) for n in moves] == [
        c.argv for c in movescu_commands(_manifest(), SETTINGS)]
    assert lines[moves[3]] == ("movescu -v -aet DCMTK -aec VMSDBD1 -aem VMSFD -S "
                               f"-k 0008,0052=SERIES -k 0020,000E={CT_SERIES} 127.0.0.1 5678")


def test_cmd_quotes_what_cmd_exe_would_split_or_expand() -> None:
    settings = replace(SETTINGS, aet="MY AE", aec="A&B%X%^")
    text = windows_cmd(_manifest(label2="50%~dp0 ^"), settings,
                       dcmtk_bin=r"C:\Program Files\R&D 100%\bin")
    lines = text.split("\r\n")
    assert lines[0] == r"@set PATH=C:\Program Files\R^&D 100%%\bin;%PATH%"
    moves = [line for line in lines if line.startswith("movescu ")]
    assert '-aet "MY AE" -aec "A&B%%X%%^"' in moves[0]
    assert [_crt_split(line) for line in moves] == [
        c.argv for c in movescu_commands(_manifest(label2="50%~dp0 ^"), settings)]
    # "%~" aborts a batch file even in a comment; a final caret joins the next line.
    assert "rem RT Plan 50%%~dp0" in lines
    assert not any(line.startswith("rem") and line.endswith("^") for line in lines)


def test_cmd_without_dcmtk_folder_leaves_path_alone() -> None:
    assert "PATH" not in windows_cmd(_manifest(), SETTINGS, dcmtk_bin="")


@pytest.mark.parametrize("folder", ['C:\\a"b', "C:\\a;b", "C:\\a\nb"])
def test_cmd_refuses_a_dcmtk_folder_it_cannot_put_on_path(folder: str) -> None:
    with pytest.raises(ScriptError, match="DCMTK folder"):
        windows_cmd(_manifest(), SETTINGS, dcmtk_bin=folder)


def test_cmd_refuses_an_argument_with_a_quote() -> None:
    settings = replace(SETTINGS, aet='A"B')
    with pytest.raises(ScriptError, match=r"cannot be written into a \.cmd"):
        windows_cmd(_manifest(), settings)


def test_sh_is_shlex_safe() -> None:
    settings = replace(SETTINGS, aet="MY AE")
    manifest = _manifest(patient_name="Evil\n rm -rf ~^x", label2="$(reboot)`x`")
    text = posix_sh(manifest, settings, dcmtk_bin="/opt/dcmtk 3.6/bin")
    lines = text.split("\n")
    assert lines[0] == "#!/bin/sh"
    assert "set -e" in lines and "export TCP_NODELAY=1" in lines
    assert "export PATH='/opt/dcmtk 3.6/bin':\"$PATH\"" in lines
    moves = [line for line in lines if line.startswith("movescu ")]
    assert [shlex.split(line) for line in moves] == [
        c.argv for c in movescu_commands(manifest, settings)]
    assert "-aet 'MY AE'" in moves[0]
    assert f" -k 0008,0018={PLAN1} " in moves[0]  # a UID never needs quoting
    assert all(line.startswith(("#", "set ", "export ", "movescu ")) for line in lines if line)
    assert all(lines[lines.index(line) - 1].startswith("# ") for line in moves)
    if shutil.which("sh"):
        done = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True,
                              check=False)
        assert done.returncode == 0, done.stderr


def test_sh_refuses_a_folder_that_breaks_path() -> None:
    with pytest.raises(ScriptError, match="must not contain ':'"):
        posix_sh(_manifest(), SETTINGS, dcmtk_bin="/a:b")


# --- the files ----------------------------------------------------------------------

def test_write_scripts_one_pair_per_plan(tmp_path: Path) -> None:
    paths = write_scripts(_manifest(), SETTINGS, tmp_path / "out", dcmtk_bin_posix="/usr/bin")
    assert [p.name for p in paths] == [
        "move-O'Brien(RT0001)-LUNG_L_1.cmd", "move-O'Brien(RT0001)-LUNG_L_1.sh",
        "move-O'Brien(RT0001)-LUNG_L_2.cmd", "move-O'Brien(RT0001)-LUNG_L_2.sh"]
    for path in paths:
        data = path.read_bytes()
        # The shared CT and structure set in both plans' scripts; each plan only its own.
        assert data.count(f"0020,000E={CT_SERIES}".encode()) == 1
        assert data.count(f"0008,0018={SS}".encode()) == 1
        own, other = (PLAN1, PLAN2) if "LUNG_L_1" in path.name else (PLAN2, PLAN1)
        assert own.encode() in data and other.encode() not in data
        if path.suffix == ".sh":
            assert stat.S_IMODE(path.stat().st_mode) == 0o755
            assert b"\r" not in data
        else:
            assert data.count(b"\r\n") == data.count(b"\n")


def test_write_scripts_same_label_twice_does_not_overwrite(tmp_path: Path) -> None:
    paths = write_scripts(_manifest(label2="lung_l_1"), SETTINGS, tmp_path)
    assert [p.name for p in paths] == [
        "move-O'Brien(RT0001)-LUNG_L_1.cmd", "move-O'Brien(RT0001)-LUNG_L_1.sh",
        "move-O'Brien(RT0001)-lung_l_1-2.cmd", "move-O'Brien(RT0001)-lung_l_1-2.sh"]


def test_write_scripts_writes_nothing_when_a_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScriptError):
        write_scripts(_manifest(), SETTINGS, tmp_path / "out", dcmtk_bin_posix="/a:b")
    assert not (tmp_path / "out").exists()


# --- the command --------------------------------------------------------------------

def test_command_writes_and_lists_the_scripts(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    manifest_file = tmp_path / "manifest.json"
    _manifest().save(manifest_file)
    code = main(["dcmtk-script", "--manifest", str(manifest_file), "--out", str(tmp_path / "s"),
                 "--dest", "self", "--aet", "MY AE", "--hierarchical", "--json"])
    assert code == 0
    scripts = [Path(p) for p in json.loads(capsys.readouterr().out)["scripts"]]
    assert len(scripts) == 4 and all(p.is_file() for p in scripts)
    sh = scripts[1].read_text(encoding="utf-8")
    assert "-aem 'MY AE'" in sh and f"-k 0020,000D={STUDY}" in sh


def test_command_prints_one_path_a_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    manifest_file = tmp_path / "manifest.json"
    _manifest().save(manifest_file)
    assert main(["dcmtk-script", "--manifest", str(manifest_file), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(tmp_path / n) for n in (
        "move-O'Brien(RT0001)-LUNG_L_1.cmd", "move-O'Brien(RT0001)-LUNG_L_1.sh",
        "move-O'Brien(RT0001)-LUNG_L_2.cmd", "move-O'Brien(RT0001)-LUNG_L_2.sh")]
    assert "-aem VMSFD" in (tmp_path / printed[0]).read_text(encoding="utf-8")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON"),
    ('{"patient_id": "P", "collections": []}', "'collections' (or 'items') must be a non-empty"),
    (None, "cannot read"),
])
def test_command_with_a_bad_manifest_exits_2(tmp_path: Path, content: str | None,
                                             message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    manifest_file = tmp_path / "manifest.json"
    if content is not None:
        manifest_file.write_text(content, encoding="utf-8")
    code = main(["dcmtk-script", "--manifest", str(manifest_file), "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rtmove: {manifest_file}: ") and message in err
    assert not (tmp_path / "s").exists()


def test_command_with_a_bad_destination_exits_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    manifest_file = tmp_path / "manifest.json"
    _manifest().save(manifest_file)
    code = main(["dcmtk-script", "--manifest", str(manifest_file), "--out", str(tmp_path),
                 "--dest", "FAR_TOO_LONG_AE_TITLE", "--json"])
    assert code == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and "move destination 'FAR_TOO_LONG_AE_TITLE'" in answer["error"]


def test_client_still_does_not_import_the_emulators() -> None:
    code = ("import sys, client.cli, client.dcmtk_script, client.commands.dcmtk_script; "
            "sys.exit(any(m.split('.')[0] == 'emulators' for m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
