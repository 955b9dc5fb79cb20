"""The manifest file: the contract between resolve, move and verify, and a hand-written input.

Round trips must be exact (a moved manifest is re-read by ``rtmove move``), and every
unusable file must say which file, which entry and why, so a site engineer can fix it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.manifest import FORMAT, Collection, Item, Manifest, ManifestError, Outcome, Role

STUDY = "1.2.826.0.1.3680043.8.498.1"
CT_SERIES = "1.2.826.0.1.3680043.8.498.1.1"
RT_SERIES = "1.2.826.0.1.3680043.8.498.1.2"
PLAN_A, PLAN_B = "1.2.826.0.1.3680043.8.498.1.2.1", "1.2.826.0.1.3680043.8.498.1.2.2"
SS = "1.2.826.0.1.3680043.8.498.1.2.3"


def _ct() -> Item:
    return Item(Role.IMAGES, STUDY, CT_SERIES, ("1.2.3.1", "1.2.3.2"), modality="CT",
                label="Thorax 3mm", found_by="structure set's referenced series")


def _sample() -> Manifest:
    """Two plans sharing one CT and one structure set, with every field set somewhere."""
    ss = Item(Role.STRUCTURE_SET, STUDY, RT_SERIES, (SS,), "1.2.840.10008.5.1.4.1.1.481.3",
              "RTSTRUCT", "Lung", "plan's referenced structure set")
    plan_a = Item(Role.PLAN, STUDY, RT_SERIES, (PLAN_A,), "1.2.840.10008.5.1.4.1.1.481.5",
                  "RTPLAN", "LUNG_L_1", "--plan", Outcome.INCOMPLETE, (PLAN_A,), "unreadable")
    plan_b = Item(Role.PLAN, STUDY, RT_SERIES, (PLAN_B,), label="LUNG_L_2")
    return Manifest(
        patient_id="PAT-001", patient_name="Doe^Jane", source="VMSDBD1 at 127.0.0.1:5678",
        destination="VMSFD", extra={"seconds": 1.5, "counts": {"moved": 3}},
        collections=(
            Collection(PLAN_A, "LUNG_L_1", "APPROVED", "20240102", (plan_a, ss, _ct()),
                       ("no dose",)),
            Collection(PLAN_B, "LUNG_L_2", "UNAPPROVED", "", (plan_b, ss, _ct())),
        ))


# --- round trips ---------------------------------------------------------------------------

def test_to_json_from_json_round_trip_is_exact() -> None:
    """What rtmove writes, rtmove move must read back unchanged (through JSON text)."""
    manifest = _sample()
    text = json.dumps(manifest.to_json())
    assert Manifest.from_json(json.loads(text)) == manifest


def test_to_json_states_format_level_and_count() -> None:
    """The file says what it is, and per item the C-MOVE level and instance count a reader
    of the file needs (they are derived, not read back)."""
    data = _sample().to_json()
    assert data["format"] == FORMAT
    items = data["collections"][0]["items"]
    assert [(i["role"], i["level"], i["count"]) for i in items] == [
        ("plan", "IMAGE", 1), ("structure-set", "IMAGE", 1), ("image-series", "SERIES", 2)]
    assert items[0]["outcome"] == "incomplete"


def test_save_load_round_trip_leaves_no_temp_file(tmp_path: Path) -> None:
    """save writes through a temp file then renames: only the manifest is left, and a
    previous manifest at that path is replaced whole."""
    path = tmp_path / "sub" / "manifest.json"
    path.parent.mkdir()
    path.write_text("old and longer content that must not survive " * 50, encoding="utf-8")
    manifest = _sample()
    manifest.save(path)
    assert Manifest.load(path) == manifest
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_save_creates_missing_folders(tmp_path: Path) -> None:
    """--write-manifest may point into a folder that does not exist yet."""
    path = tmp_path / "a" / "b" / "m.json"
    _sample().save(path)
    assert Manifest.load(path) == _sample()


def test_save_keeps_non_ascii_names_readable(tmp_path: Path) -> None:
    """Patient names are written as UTF-8 text, not \\u escapes, and read back the same."""
    path = tmp_path / "m.json"
    manifest = Manifest("P", "Müller^Zoë", _sample().collections)
    manifest.save(path)
    assert "Müller^Zoë" in path.read_text(encoding="utf-8")
    assert Manifest.load(path).patient_name == "Müller^Zoë"


# --- hand-written files ----------------------------------------------------------------------

def test_minimal_hand_written_file_is_one_image_series(tmp_path: Path) -> None:
    """Only patient_id, study_uid and series_uid: a whole series, moved at SERIES level."""
    path = tmp_path / "hand.json"
    path.write_text('{"patient_id": "X", "items": [{"study_uid": "1.2", "series_uid": "1.2.3"}]}',
                    encoding="utf-8")
    manifest = Manifest.load(path)
    assert manifest.patient_id == "X"
    assert len(manifest.collections) == 1
    (item,) = manifest.items()
    assert item.role is Role.IMAGES
    assert item.level == "SERIES"
    assert item.outcome is Outcome.PENDING
    assert (item.study_uid, item.series_uid, item.sop_uids) == ("1.2", "1.2.3", ())


@pytest.mark.parametrize("sops", [["1.2.3.4", "1.2.3.5"], "1.2.3.4"])
def test_items_with_sop_uids_are_image_level(sops: list[str] | str) -> None:
    """Instances named by hand are moved one by one (a single UID may be a bare string)."""
    data = {"patient_id": "X", "items": [{"study_uid": "1.2", "series_uid": "1.2.3",
                                          "sop_uids": sops}]}
    (item,) = Manifest.from_json(data).items()
    assert item.level == "IMAGE"
    assert item.role is Role.OTHER
    assert item.sop_uids == ((sops,) if isinstance(sops, str) else tuple(sops))


def test_hand_written_values_are_trimmed() -> None:
    """Spreadsheet exports carry stray spaces around IDs and UIDs."""
    data = {"patient_id": " X ", "items": [{"study_uid": " 1.2", "series_uid": "1.2.3 "}]}
    manifest = Manifest.from_json(data)
    assert manifest.patient_id == "X"
    assert manifest.items()[0].key == ("1.2", "1.2.3", ())


# --- items and outcomes ----------------------------------------------------------------------

def test_items_dedupes_an_image_series_shared_by_two_collections() -> None:
    """A CT shared by two plans is moved once; order follows the collections."""
    items = _sample().items()
    assert [i.role for i in items] == [Role.PLAN, Role.STRUCTURE_SET, Role.IMAGES, Role.PLAN]
    assert sum(i.role is Role.IMAGES for i in items) == 1
    assert items[0].sop_uids == (PLAN_A,)
    assert items[3].sop_uids == (PLAN_B,)


def test_image_series_key_ignores_instance_list() -> None:
    """The same series listed with and without its instances is still one series."""
    a = Item(Role.IMAGES, STUDY, CT_SERIES, ("1.2.3.1",))
    b = Item(Role.IMAGES, STUDY, CT_SERIES)
    manifest = Manifest("P", collections=(Collection("", items=(a,)), Collection("", items=(b,))))
    assert manifest.items() == [a]


def test_with_outcomes_replaces_by_key_in_every_collection() -> None:
    """The verified version of a shared item lands in each collection listing it; items
    without an outcome are kept as they were."""
    manifest = _sample()
    ct = _ct()
    arrived = Item(Role.IMAGES, STUDY, CT_SERIES, ct.sop_uids, outcome=Outcome.ARRIVED)
    updated = manifest.with_outcomes({ct.key: arrived})
    for before, after in zip(manifest.collections, updated.collections, strict=True):
        assert after.items[-1] == arrived
        assert after.items[:-1] == before.items[:-1]
        assert (after.plan_uid, after.warnings) == (before.plan_uid, before.warnings)
    assert manifest.collections[0].items[-1].outcome is Outcome.PENDING  # not mutated
    assert updated.patient_id == manifest.patient_id


def test_warnings_are_gathered_from_every_collection() -> None:
    assert _sample().warnings() == ["no dose"]


# --- malformed files -------------------------------------------------------------------------

def _item(**overrides: Any) -> dict[str, Any]:
    return {"study_uid": "1.2", "series_uid": "1.2.3", **overrides}


def _with_second_item(**overrides: Any) -> dict[str, Any]:
    """A file whose collections[0].items[1] is the bad entry."""
    return {"patient_id": "X", "collections": [{"items": [_item(), _item(**overrides)]}]}


def _load_error(tmp_path: Path, content: bytes | str) -> str:
    path = tmp_path / "bad-manifest.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with pytest.raises(ManifestError) as caught:
        Manifest.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize(("overrides", "words"), [
    ({"study_uid": "1.02.3"}, ["'study_uid'", "'1.02.3'", "is not a DICOM UID"]),
    ({"study_uid": "abc"}, ["'study_uid'", "'abc'", "is not a DICOM UID"]),
    ({"series_uid": "1." + "2" * 63}, ["'series_uid'", "is not a DICOM UID"]),
    ({"series_uid": ""}, ["'series_uid' is required"]),
    ({"study_uid": 12}, ["'study_uid' must be a string, not int"]),
    ({"sop_uids": {"a": "1.2"}}, ["'sop_uids' must be a list of DICOM UIDs"]),
    ({"sop_uids": ["1.2.3.4", "x"]}, ["'sop_uids' must be a list of DICOM UIDs"]),
    ({"sop_class_uid": "1.2.x"}, ["'sop_class_uid'", "is not a DICOM UID"]),
    ({"role": "ct"}, ["role 'ct' is not one of", "image-series"]),
    ({"outcome": "done"}, ["outcome 'done' is not one of", "arrived"]),
    ({"missing": "1.2.3.4"}, ["'missing' must be a list of UIDs"]),
])
def test_bad_item_names_file_entry_and_reason(tmp_path: Path, overrides: dict[str, Any],
                                              words: list[str]) -> None:
    """Each rule's message points at collections[0].items[1] of the named file."""
    message = _load_error(tmp_path, json.dumps(_with_second_item(**overrides)))
    assert "collections[0].items[1]: " in message
    for word in words:
        assert word in message


def test_65_character_uid_is_refused_and_64_accepted() -> None:
    """PS3.5 9.1: at most 64 characters."""
    ok = "1." + "2" * 62
    assert len(ok) == 64
    assert Manifest.from_json(_with_second_item(study_uid=ok)).items()[1].study_uid == ok
    with pytest.raises(ManifestError, match="is not a DICOM UID"):
        Manifest.from_json(_with_second_item(study_uid=ok + "3"))


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", ["not JSON"]),
    ("", ["not JSON"]),
    (b'{"patient_id": "\xff\xfe"}', ["not JSON"]),
    ('[{"patient_id": "X"}]', ["expected a JSON object at the top"]),
    ('{"items": [{"study_uid": "1.2", "series_uid": "1.2.3"}]}', ["'patient_id' is required"]),
    ('{"patient_id": "  ", "items": [{"study_uid": "1.2", "series_uid": "1.2.3"}]}',
     ["'patient_id' is required"]),
    ('{"patient_id": 7, "items": [{"study_uid": "1.2", "series_uid": "1.2.3"}]}',
     ["'patient_id' must be a string, not int"]),
    ('{"patient_id": "X", "items": []}', ["collections[0]: 'items' must be a non-empty list"]),
    ('{"patient_id": "X", "collections": []}',
     ["'collections' (or 'items') must be a non-empty list"]),
    ('{"patient_id": "X"}', ["'collections' (or 'items') must be a non-empty list"]),
    ('{"patient_id": "X", "collections": [{"items": [{"study_uid": "1.2"}]}]}',
     ["collections[0].items[0]: 'series_uid' is required"]),
    ('{"patient_id": "X", "collections": [{"items": ["1.2.3"]}]}',
     ["collections[0].items[0]: expected an object"]),
    ('{"patient_id": "X", "collections": [["1.2"]]}', ["collections[0]: expected an object"]),
    ('{"patient_id": "X", "collections": [{"plan_uid": "1.2.x", "items": [{}]}]}',
     ["collections[0]: 'plan_uid'", "is not a DICOM UID"]),
    ('{"patient_id": "X", "collections": [{"warnings": "w", "items": [{}]}]}',
     ["collections[0]: 'warnings' must be a list of strings"]),
    ('{"format": "rtmove-manifest/2", "patient_id": "X", "items": [{}]}',
     ["format 'rtmove-manifest/2' is not 'rtmove-manifest/1'"]),
])
def test_malformed_file_names_file_and_reason(tmp_path: Path, content: str | bytes,
                                              words: list[str]) -> None:
    """Whole-file problems: the message starts with the path and says what is wrong."""
    message = _load_error(tmp_path, content)
    for word in words:
        assert word in message


def test_non_utf8_bytes_are_a_manifest_error(tmp_path: Path) -> None:
    """A Latin-1 file (a spreadsheet export) is refused as a ManifestError, not a crash."""
    content = '{"patient_id": "Müller", "items": [{}]}'.encode("latin-1")
    assert "not JSON" in _load_error(tmp_path, content)


def test_unreadable_path_names_it(tmp_path: Path) -> None:
    """A directory given as --manifest: 'cannot read', with the path."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ManifestError) as caught:
        Manifest.load(folder)
    assert str(caught.value).startswith(f"{folder}: cannot read (")


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ManifestError, match=r"absent\.json: cannot read \(No such file"):
        Manifest.load(path)


def test_from_json_names_its_source_argument() -> None:
    """Callers passing parsed JSON name where it came from."""
    with pytest.raises(ManifestError, match=r"^stdin: collections\[0\]\.items\[1\]: role"):
        Manifest.from_json(_with_second_item(role="x"), "stdin")


# --- property: valid manifests round-trip ----------------------------------------------------

uids = st.integers(min_value=0, max_value=10**39).map(lambda n: f"2.25.{n}")
# Text fields are trimmed on reading (DICOM pads values with spaces), so generate trimmed text.
texts = st.text(max_size=20).map(str.strip)
items = st.builds(
    Item,
    role=st.sampled_from(Role),
    study_uid=uids,
    series_uid=uids,
    sop_uids=st.lists(uids, max_size=4).map(tuple),
    sop_class_uid=st.one_of(st.just(""), uids),
    modality=texts,
    label=texts,
    found_by=texts,
    outcome=st.sampled_from(Outcome),
    missing=st.lists(uids, max_size=3).map(tuple),
    note=texts,
)
collections = st.builds(
    Collection,
    plan_uid=st.one_of(st.just(""), uids),
    plan_label=texts,
    approval=st.sampled_from(["", "APPROVED", "UNAPPROVED", "REJECTED"]),
    plan_date=st.sampled_from(["", "20240102"]),
    items=st.lists(items, min_size=1, max_size=4).map(tuple),
    warnings=st.lists(st.text(max_size=30), max_size=2).map(tuple),
)
manifests = st.builds(
    Manifest,
    patient_id=texts.filter(bool),
    patient_name=texts,
    collections=st.lists(collections, min_size=1, max_size=3).map(tuple),
    source=texts,
    destination=texts,
    extra=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)


@given(manifests)
def test_any_valid_manifest_round_trips_exactly(manifest: Manifest) -> None:
    """Every manifest rtmove can build survives being written and read back as text."""
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False)
    again = Manifest.from_json(json.loads(text))
    assert again == manifest
    assert again.items() == manifest.items()
