"""rtmove's fast reading of a stored file's head, against pydicom's reading of it.

``client.verify._read`` answers from the raw head (:mod:`client.part10_head`) when the
file is plain and hands the file to pydicom otherwise. Whatever the file (whole, cut
short while being written, encoded oddly by a peer), the fast answer must be exactly
the one pydicom's reading gives, references included; and the fast path must be taken
for the files that matter (CT slices in the three uncompressed syntaxes), or the
speed-up is void. The files here are packed by hand, so that they can be anything.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)
from syntaxes import EBE, ELE, ENCODINGS, ILE, Encoding

from client.part10_head import meta_syntax, read_head
from client.raw_elements import LONG_VRS
from client.verify import _FIRST_READ, Found, _read, _read_plain, _read_with_pydicom
from emulators.db_daemon.export import charset_of
from emulators.files import write_patient
from emulators.synthetic import SyntheticConfig, make_recipe

# pydicom warns about the odd values and encodings made here as it reads them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CT_CLASS = b"1.2.840.10008.5.1.4.1.1.2\x00"




# -- packing by hand -----------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """A sequence item; ``undefined``: closed by an item delimiter, not by its length."""

    elements: tuple[Element, ...]
    undefined: bool = False


@dataclass(frozen=True)
class Element:
    """One element as it will be packed: exactly one of the value fields is used."""

    tag: int
    vr: str  # ignored in Implicit VR, and for (FFFE,eeee) items and delimiters
    raw: bytes = b""
    numbers: tuple[int, ...] | None = None  # US/SS values, in the data set's byte order
    items: tuple[Item | Element, ...] | None = None  # a sequence (an Element: a stray)
    fragments: tuple[bytes, ...] | None = None  # encapsulated pixel data
    undefined: bool = False  # a sequence or encapsulated data of undefined length
    closed: bool = True  # its sequence delimiter written (when undefined)
    length: int | None = None  # the length to declare, if not the value's


def _pack(element: Element, enc: Encoding) -> bytes:
    order = "<" if enc.little else ">"
    group, number = element.tag >> 16, element.tag & 0xFFFF
    value = _value(element, enc)
    length = _UNDEFINED if element.undefined else \
        len(value) if element.length is None else element.length
    if enc.implicit or group == 0xFFFE:
        head = struct.pack(order + "HHI", group, number, length)
    elif element.vr.encode() in LONG_VRS:
        head = struct.pack(order + "HH2sHI", group, number, element.vr.encode(), 0, length)
    else:
        head = struct.pack(order + "HH2sH", group, number, element.vr.encode(),
                           length & 0xFFFF)
    tail = _delimiter(_SEQUENCE_END, enc) if element.undefined and element.closed else b""
    return head + value + tail


def _value(element: Element, enc: Encoding) -> bytes:
    order = "<" if enc.little else ">"
    if element.numbers is not None:
        code = "h" if element.vr == "SS" else "H"
        return struct.pack(f"{order}{len(element.numbers)}{code}", *element.numbers)
    if element.items is not None:
        return b"".join(_pack(i, enc) if isinstance(i, Element) else _pack_item(i, enc)
                        for i in element.items)
    if element.fragments is not None:
        return b"".join(struct.pack(order + "HHI", 0xFFFE, 0xE000, len(f)) + f
                        for f in element.fragments)
    return element.raw


def _pack_item(item: Item, enc: Encoding) -> bytes:
    order = "<" if enc.little else ">"
    body = b"".join(_pack(e, enc) for e in item.elements)
    if item.undefined:
        return struct.pack(order + "HHI", 0xFFFE, 0xE000, _UNDEFINED) + body \
            + _delimiter(_ITEM_END, enc)
    return struct.pack(order + "HHI", 0xFFFE, 0xE000, len(body)) + body


def _delimiter(tag: int, enc: Encoding) -> bytes:
    return struct.pack("<HHI" if enc.little else ">HHI", tag >> 16, tag & 0xFFFF, 0)


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", 2, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, tag & 0xFFFF, vr, len(value)) + value


def _meta(syntax: bytes | None, *, extra: bytes = b"", group_length_fudge: int = 0,
          syntax_vr: bytes = b"UI", preamble: bytes = b"\x00" * 128 + b"DICM") -> bytes:
    """A File Meta group (preamble and "DICM" first) declaring ``syntax`` (a raw value;
    None: no Transfer Syntax UID), ``extra`` elements at its end."""
    body = b"".join([
        _meta_element(0x00020001, b"OB", b"\x00\x01"),
        _meta_element(0x00020002, b"UI", _CT_CLASS),
        _meta_element(0x00020003, b"UI", b"1.2.3.4\x00"),
        b"" if syntax is None else _meta_element(0x00020010, syntax_vr, syntax),
        _meta_element(0x00020012, b"UI", b"1.2.3.5\x00"),
        extra,
    ])
    length = _meta_element(0x00020000, b"UL",
                           struct.pack("<I", max(0, len(body) + group_length_fudge)))
    return preamble + length + body


def _uid_value(uid: str) -> bytes:
    return uid.encode() + b"\x00" * (len(uid) % 2)


def _part10(elements: list[Element], enc: Encoding, declared: str | None = None) -> bytes:
    meta = _meta(_uid_value(declared or enc.syntax))
    return meta + b"".join(_pack(e, enc) for e in elements)


def _text(tag: int, value: str, vr: str = "LO") -> Element:
    raw = value.encode("utf-8")
    return Element(tag, vr, raw + b" " * (len(raw) % 2))


def _plain_image(pixels: bytes | None = None) -> list[Element]:
    """A small plain CT slice (16x16, 16 bits)."""
    return [
        Element(0x00080005, "CS", b"ISO_IR 192"),
        Element(0x00080016, "UI", _CT_CLASS),
        Element(0x00080018, "UI", b"1.2.3.4\x00"),
        _text(0x00100010, "Ünal^Ayşe", "PN"),
        _text(0x00100020, "PAT-1"),
        Element(0x0020000D, "UI", b"1.2.3\x00"),
        Element(0x0020000E, "UI", b"1.2.3.1\x00"),
        Element(0x00280002, "US", numbers=(1,)),
        Element(0x00280010, "US", numbers=(16,)),
        Element(0x00280011, "US", numbers=(16,)),
        Element(0x00280100, "US", numbers=(16,)),
        Element(0x7FE00010, "OW", bytes(512) if pixels is None else pixels),
    ]


# -- the two readings -----------------------------------------------------------------
def _fast(path: Path) -> Found | str | None:
    with path.open("rb") as fh:
        return _read_plain(path, fh, os.fstat(fh.fileno()).st_size)


def _same(ours: Found | str | None, theirs: Found | str) -> None:
    assert ours == theirs
    if isinstance(ours, Found) and isinstance(theirs, Found):
        assert ours.references == theirs.references


def _agree(path: Path) -> Found | str | None:
    """Both readings of ``path`` give the same answer; the fast path's (None: not taken)."""
    theirs = _read_with_pydicom(path)
    fast = _fast(path)
    if fast is not None:
        _same(fast, theirs)
    _same(_read(path), theirs)
    return fast


def _agree_on(data: bytes, path: Path) -> Found | str | None:
    path.write_bytes(data)
    return _agree(path)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file to write each example to (module scope: hypothesis reuses it)."""
    return tmp_path_factory.mktemp("head") / "object.dcm"


# -- 1. the fast path is taken for CT slices ------------------------------------------
def _resaved(path: Path, out: Path, enc: Encoding) -> Path:
    ds = pydicom.dcmread(path)
    for _ in ds:  # decode every element: pydicom then writes them in the new encoding
        pass
    ds.set_original_encoding(None, None, None)
    ds.file_meta.TransferSyntaxUID = UID(enc.syntax)
    ds.save_as(out, implicit_vr=enc.implicit, little_endian=enc.little,
               enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def ct_slices(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], Path]:
    """A CT slice of each synthetic patient (seed 0: Latin-1 names, 1: ASCII, 2: UTF-8),
    in each syntax, by (seed, syntax)."""
    folder = tmp_path_factory.mktemp("ct")
    out: dict[tuple[int, str], Path] = {}
    for seed in (0, 1, 2):
        recipe = make_recipe(SyntheticConfig(seed=seed, slices=2, rows=16, columns=16), 0)
        paths = write_patient(recipe, folder / str(seed))
        ct = next(p for p in paths if p.name.startswith("CT."))
        for enc in ENCODINGS:
            out[seed, enc.syntax] = _resaved(ct, folder / f"{seed}-{enc.syntax}.dcm", enc)
    return out


@pytest.mark.parametrize("syntax", [e.syntax for e in ENCODINGS],
                         ids=lambda s: UID(s).name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ct_slice_is_read_on_the_fast_path(ct_slices: dict[tuple[int, str], Path],
                                             seed: int, syntax: str) -> None:
    path = ct_slices[seed, syntax]
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    fast = _agree(path)
    assert isinstance(fast, Found)
    assert fast.charset_problem is None
    if seed != 1:  # names in Latin-1 (ISO_IR 100) or UTF-8 (ISO_IR 192)
        assert not path.read_bytes().isascii()


@pytest.mark.parametrize("declared, problem", [
    (b"ISO_IR 100", "looks like UTF-8 text but the object declares ISO_IR 100"),
    (b"          ", "declares no Specific Character Set"),
])
@pytest.mark.parametrize("syntax", [e.syntax for e in ENCODINGS],
                         ids=lambda s: UID(s).name)
def test_a_ct_slice_with_a_wrong_character_set_is_read_on_the_fast_path(
        ct_slices: dict[tuple[int, str], Path], scratch: Path, syntax: str,
        declared: bytes, problem: str) -> None:
    data = ct_slices[2, syntax].read_bytes()
    assert data.count(b"ISO_IR 192") == 1
    fast = _agree_on(data.replace(b"ISO_IR 192", declared), scratch)
    assert isinstance(fast, Found) and fast.charset_problem is not None
    assert problem in fast.charset_problem


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: UID(e.syntax).name)
def test_an_image_whose_pixels_are_cut_short_is_found_so_on_the_fast_path(
        enc: Encoding, scratch: Path) -> None:
    assert isinstance(_agree_on(_part10(_plain_image(), enc), scratch), Found)
    assert _agree_on(_part10(_plain_image(bytes(510)), enc), scratch) \
        == "pixel data has 510 of 512 bytes"
    assert _agree_on(_part10(_plain_image()[:-1], enc), scratch) == "no pixel data"


# -- 2. any data set --------------------------------------------------------------------
_UID_TEXT = st.from_regex(r"\A(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,6}\Z")
_UID_RAW = st.one_of(
    _UID_TEXT.map(_uid_value),  # valid, padded
    _UID_TEXT.map(str.encode),  # valid, odd lengths left so
    _UID_TEXT.map(lambda u: u.encode() + b" "),
    _UID_TEXT.map(lambda u: u.encode() + b"\x00\x00"),
    st.sampled_from([b"", b"\x00", b" ", b"1.02.3\x00", b"1.2.3\\1.2.4", b"1.2.\xc3\xa9",
                     b" 1.2.3", b"1." + b"2" * 70, b"1.2.3\x00 ", b"1..2"]),
)
_CHARSETS = [b"", b"ISO_IR 100", b"ISO_IR 192", b"\\ISO 2022 IR 87",
             b"ISO_IR 100\\ISO 2022 IR 87", b" ISO_IR 192", b"ISO_IR 192 ", b"ISO_IR 100\x00",
             b"ISO_IR 100 \\ ISO 2022 IR 100", b"ISO_IR 6", b"GB18030", b"FOO", b"\\",
             b"ISO_IR\t192", b"ISO_IR 19\xc2", b"ISO 2022 IR 6"]
_CHARACTERS = st.one_of(st.sampled_from(list("AZaz09 ^=\\.-éÉüßСяΩ中\x00\t\x1b")),
                        st.characters(codec="utf-8"))


def _encoded(text: str, codec: str) -> bytes:
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _texts(max_size: int = 16) -> st.SearchStrategy[bytes]:
    return st.builds(_encoded, st.text(_CHARACTERS, max_size=max_size),
                     st.sampled_from(["ascii", "latin-1", "utf-8"]))


@st.composite
def _padded(draw: st.DrawFn, values: st.SearchStrategy[bytes], pad: bytes) -> bytes:
    value = draw(values)
    return value + pad if len(value) % 2 and draw(st.booleans()) else value


def _pick(draw: st.DrawFn, odd: bool, plain: st.SearchStrategy[Element | None],
          oddly: st.SearchStrategy[Element | None]) -> list[Element]:
    """An element drawn from ``plain``, or from ``oddly`` if ``odd``; none if the draw is
    None (the element absent)."""
    element = draw(oddly if odd else plain)
    return [] if element is None else [element]


def _one_in(draw: st.DrawFn, n: int) -> bool:
    return draw(st.integers(1, n)) == 1


def _elements(tag: int, vrs: st.SearchStrategy[str], values: st.SearchStrategy[bytes],
              ) -> st.SearchStrategy[Element]:
    return st.builds(Element, st.just(tag), vrs, values)


def _sometimes(element: st.SearchStrategy[Element], absent: int = 1, present: int = 3,
               ) -> st.SearchStrategy[Element | None]:
    """``element``, or absent (``absent`` times in ``absent + present``)."""
    return st.integers(1, absent + present).flatmap(
        lambda n: st.none() if n <= absent else element)


_ABSENT: st.SearchStrategy[Element | None] = st.none()
_PLAIN_UIDS = _UID_TEXT.map(_uid_value)
_IDENTIFIERS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                     exclude_characters="\\"), max_size=16).map(
    lambda text: text.lstrip().encode())


def _uid_element(tag: int) -> st.SearchStrategy[Element]:
    """An odd UID element: an odd value, or a plain one under another VR."""
    return st.one_of(_elements(tag, st.just("UI"), _UID_RAW),
                     _elements(tag, st.sampled_from(["OB", "UN", "LO", "SH"]), _PLAIN_UIDS))


def _us_element(tag: int, values: list[int]) -> st.SearchStrategy[Element]:
    """An odd US element: two values, another VR, or a value that is not two bytes."""
    number = st.sampled_from(values)
    return st.one_of(
        st.builds(Element, st.just(tag), st.sampled_from(["US", "SS", "OW"]),
                  numbers=st.lists(number, min_size=1, max_size=2).map(tuple)),
        _elements(tag, st.sampled_from(["US", "IS"]),
                  st.sampled_from([b"", b"1", b"16", b"\x10\x00\x00"])),
    )


def _plain_us(tag: int, values: list[int]) -> st.SearchStrategy[Element]:
    return st.builds(Element, st.just(tag), st.just("US"),
                     numbers=st.sampled_from(values).map(lambda n: (n,)))


def _reference_item(uid: str = "1.2.3.9") -> Item:
    return Item((Element(0x00081150, "UI", _CT_CLASS),
                 Element(0x00081155, "UI", _uid_value(uid))))


_STRAYS = [Element(_ITEM_END, ""), Element(_SEQUENCE_END, ""),
           Element(_SEQUENCE_END, "", b"\x00" * 4), Element(_ITEM, "", b"\x00" * 8)]


@st.composite
def _sequences(draw: st.DrawFn, tag: int, odd: bool = False) -> Element:
    """A sequence of reference items, of defined or undefined length, its items too;
    if ``odd``, with something that does not belong in it, or not closed."""
    items: list[Item | Element] = [replace(_reference_item(draw(_UID_TEXT)),
                                           undefined=draw(st.booleans()))
                                   for _ in range(draw(st.integers(0, 2)))]
    undefined, closed = draw(st.booleans()), True
    if odd and draw(st.booleans()):
        stray = draw(st.sampled_from([*_STRAYS, Element(0x00100020, "LO", b"INSIDE"),
                                      Element(_ITEM, "", length=_UNDEFINED)]))
        items.insert(draw(st.integers(0, len(items))), stray)
    elif odd:
        undefined, closed = True, False
    return Element(tag, "SQ", items=tuple(items), undefined=undefined, closed=closed)


def _nested(tag: int, inner: Element) -> Element:
    return Element(tag, "SQ", items=(Item((inner,)),), undefined=True)


def _contours(uid: str) -> Element:
    contour = Element(0x30060016, "SQ", items=(_reference_item(uid),))
    return _nested(0x30060010, _nested(0x30060012, _nested(0x30060014, contour)))


@st.composite
def _pixel_data(draw: st.DrawFn) -> list[Element]:
    kind = draw(st.sampled_from(["none", "native", "native", "short", "encapsulated",
                                 "float"]))
    if kind == "none":
        return []
    if kind == "native":  # lengths about those the pixel module values may expect
        length = st.one_of(st.integers(0, 1600), st.sampled_from(
            [0, 1, 2, 4, 31, 32, 255, 256, 511, 512, 767, 768, 1023, 1024, 1535, 1536, 3072]))
        return [Element(0x7FE00010, draw(st.sampled_from(["OW", "OB"])), bytes(draw(length)))]
    if kind == "short":  # the file ends before the declared length
        size = draw(st.integers(0, 600))
        return [Element(0x7FE00010, "OW", bytes(size), length=size + draw(st.integers(1, 99)))]
    if kind == "float":
        return [Element(0x7FE00008, "OF", bytes(16))]
    fragments = (b"", bytes(draw(st.integers(0, 40))))
    return [Element(0x7FE00010, "OB", fragments=fragments, undefined=True,
                    closed=draw(st.booleans()))]


_ODDITIES = ("charset", "sop class", "sop uid", "institution", "description", "images",
             "name", "patient id", "private", "study", "series", "samples", "frames", "rows",
             "columns", "bits", "plan", "structure set", "contours", "again", "stray",
             "command")


@st.composite
def _data_sets(draw: st.DrawFn) -> list[Element]:
    """A data set such as a peer may send: plain but for up to two odd elements (so
    that the fast path is taken often), each odd in one of many ways."""
    odd = draw(st.sets(st.sampled_from(_ODDITIES), max_size=2))
    out: list[Element] = []
    out += _pick(draw, "charset" in odd, _sometimes(_elements(
        0x00080005, st.just("CS"), st.sampled_from([b"ISO_IR 100", b"ISO_IR 192", b"",
                                                     b"ISO_IR 192 "]))),
        _elements(0x00080005, st.sampled_from(["CS", "CS", "OB", "UN", "SH"]),
                  st.sampled_from(_CHARSETS)))
    out += _pick(draw, "sop class" in odd, st.just(Element(0x00080016, "UI", _CT_CLASS)),
                 st.one_of(_ABSENT, _uid_element(0x00080016)))
    out += _pick(draw, "sop uid" in odd, _elements(0x00080018, st.just("UI"), _PLAIN_UIDS),
                 st.one_of(_ABSENT, _uid_element(0x00080018)))
    out += _pick(draw, "institution" in odd, _sometimes(_elements(
        0x00080080, st.just("LO"), _padded(_texts(), b" "))),
        _elements(0x00080080, st.sampled_from(["UN", "SH", "OB", "UT"]), _texts()))
    out += _pick(draw, "description" in odd, _sometimes(_elements(
        0x00081030, st.just("LO"), _padded(_IDENTIFIERS, b" "))),
        _elements(0x00081030, st.just("UN"), _texts()))
    out += _pick(draw, "images" in odd, _sometimes(_sequences(0x00081140), 3, 1),
                 _sequences(0x00081140, odd=True))
    out += _pick(draw, "name" in odd, _sometimes(_elements(
        0x00100010, st.just("PN"), _padded(_texts(), b" "))),
        _elements(0x00100010, st.sampled_from(["OB", "UN", "LO", "UT"]), _texts()))
    out += _pick(draw, "patient id" in odd,
                 _elements(0x00100020, st.just("LO"), _padded(_IDENTIFIERS, b" ")),
                 st.one_of(_ABSENT, _elements(0x00100020, st.just("LO"), _texts()),
                           _elements(0x00100020,
                                     st.sampled_from(["OB", "UN", "SH", "LT", "US", "PN"]),
                                     _padded(_IDENTIFIERS, b" "))))
    if "private" in odd or _one_in(draw, 4):
        plain = _elements(0x00091001, st.sampled_from(["LO", "OB", "SH"]), _IDENTIFIERS)
        oddly = _elements(0x00091001, st.sampled_from(["LO", "UN", "OB", "UT", "SH"]),
                          st.binary(max_size=12))
        out += [Element(0x00090010, "LO", b"ACME"), *_pick(draw, "private" in odd, plain,
                                                           oddly)]
    for tag, name in ((0x0020000D, "study"), (0x0020000E, "series")):
        out += _pick(draw, name in odd, _sometimes(_elements(tag, st.just("UI"), _PLAIN_UIDS),
                                                   1, 5), _uid_element(tag))
    if _one_in(draw, 6):
        size = draw(st.sampled_from([0, 1, 300, 16000, 16290, 16400]))
        out.append(Element(0x00204000, "LT", b"x" * size + b" " * (size % 2)))
    out += _pick(draw, "samples" in odd, _sometimes(_plain_us(0x00280002, [1, 3])),
                 _us_element(0x00280002, [0, 1, 3]))
    frames = st.sampled_from([b"", b"0", b"1", b"3", b"3 ", b"03"])
    out += _pick(draw, "frames" in odd, _sometimes(_elements(0x00280008, st.just("IS"),
                                                             frames), 3, 1),
                 st.one_of(_elements(0x00280008, st.sampled_from(["DS", "OB", "LO", "US"]),
                                     frames),
                           _elements(0x00280008, st.just("IS"), st.sampled_from(
                               [b" 3", b"3.0", b"+3", b"3\x00", b"3\\4", b"x", b"-1"]))))
    for tag, name in ((0x00280010, "rows"), (0x00280011, "columns")):
        out += _pick(draw, name in odd, _sometimes(_plain_us(tag, [0, 1, 2, 16]), 1, 8),
                     _us_element(tag, [0, 1, 2, 16]))
    out += _pick(draw, "bits" in odd, _sometimes(_plain_us(0x00280100, [1, 8, 16, 32])),
                 _us_element(0x00280100, [0, 1, 8, 16, 32]))
    for tag, name in ((0x300C0002, "plan"), (0x300C0060, "structure set")):
        if name in odd:
            out.append(Element(tag, "SQ", items=(_reference_item(),),
                               undefined=draw(st.booleans())))
    if "contours" in odd:
        out.append(_contours(draw(_UID_TEXT)))
    if "again" in odd:  # the same tag again, later
        out.append(_text(0x00100020, draw(st.sampled_from(["AGAIN", "", "É"]))))
    if "stray" in odd:  # an item or delimiter where no sequence is open
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(_STRAYS)))
    if "command" in odd:  # a command element, as pydicom reads at the start
        out.insert(0, Element(0x00000902, "LO", b"HELLO "))
    return out + draw(_pixel_data())


def _encodings() -> st.SearchStrategy[tuple[Encoding, str]]:
    """The data set's encoding and the syntax declared (now and then another one)."""
    return st.tuples(st.sampled_from(ENCODINGS),
                     st.sampled_from([None] * 9 + [e.syntax for e in ENCODINGS])).map(
        lambda pair: (pair[0], pair[1] or pair[0].syntax))


@_SETTINGS
@given(_data_sets(), _encodings())
def test_any_data_set_reads_as_pydicom_reads_it(
        scratch: Path, elements: list[Element], encoding: tuple[Encoding, str]) -> None:
    enc, declared = encoding
    fast = _agree_on(_part10(elements, enc, declared), scratch)
    event("fast path: " + ("not taken" if fast is None else type(fast).__name__))


@st.composite
def _plain_data_sets(draw: st.DrawFn) -> list[Element]:
    """Data sets the fast path must read itself: plain values, ASCII or declared text."""
    charset = draw(st.sampled_from([None, b"ISO_IR 100", b"ISO_IR 192", b"", b"ISO_IR 192 "]))
    identifier = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                       exclude_characters="\\"), max_size=16)
    out = [] if charset is None else [Element(0x00080005, "CS", charset)]
    out += [Element(0x00080018, "UI", _uid_value(draw(_UID_TEXT))),
            Element(0x00100010, "PN", draw(_padded(_texts(), b" "))),
            Element(0x00100020, "LO", draw(_padded(identifier.map(str.encode), b" ")))]
    out += [Element(tag, "UI", _uid_value(draw(_UID_TEXT)))
            for tag in (0x0020000D, 0x0020000E) if draw(st.booleans())]
    if draw(st.booleans()):
        out.append(draw(_sequences(0x00081140)))
    if draw(st.booleans()):
        out += [Element(0x00280010, "US", numbers=(draw(st.integers(0, 8)),)),
                Element(0x00280011, "US", numbers=(draw(st.integers(0, 8)),)),
                Element(0x00280100, "US", numbers=(16,))]
        out += draw(_pixel_data())
    return out


@_SETTINGS
@given(_plain_data_sets(), st.sampled_from(ENCODINGS))
def test_a_plain_data_set_is_read_on_the_fast_path(
        scratch: Path, elements: list[Element], enc: Encoding) -> None:
    assert _agree_on(_part10(elements, enc), scratch) is not None


# -- 2b. oddities met, each once -----------------------------------------------------------
def _with(index: int, element: Element) -> list[Element]:
    """:func:`_plain_image` with its element at ``index`` replaced."""
    out = _plain_image()
    out[index] = element
    return out


def _inserted(index: int, *elements: Element) -> list[Element]:
    out = _plain_image()
    out[index:index] = elements
    return out


def _images_sequence(*items: Item | Element, undefined: bool = True) -> Element:
    return Element(0x00081140, "SQ", items=items, undefined=undefined)


_UT_HOLDING_A_SEQUENCE = Element(0x00081030, "UT", undefined=True, items=(
    Item((_images_sequence(_reference_item()),), undefined=True),))
_ODD_DATA_SETS = {
    # pydicom reads a value under the VR it is given: str() of bytes, of numbers
    "patient id as OB": _with(4, Element(0x00100020, "OB", b"PAT-1 ")),
    "patient id as US": _with(4, Element(0x00100020, "US", b"PAT-1 ")),
    "patient id as UN": _with(4, Element(0x00100020, "UN", b"PAT-1 ")),
    "patient id as SH": _with(4, Element(0x00100020, "SH", b"PAT-1 ")),
    "SOP instance UID as OB": _with(2, Element(0x00080018, "OB", b"1.2.3.4\x00")),
    "series UID as LO": _with(6, Element(0x0020000E, "LO", b"1.2.3.1\x00")),
    "character set as OB": _with(0, Element(0x00080005, "OB", b"ISO_IR 100")),
    "number of frames as OB": _inserted(8, Element(0x00280008, "OB", b"2 ")),
    "number of frames as DS": _inserted(8, Element(0x00280008, "DS", b"2 ")),
    "rows as SS": _with(8, Element(0x00280010, "SS", numbers=(16,))),
    "rows as IS": _with(8, Element(0x00280010, "IS", b"16")),
    "rows as OW": _with(8, Element(0x00280010, "OW", numbers=(16,))),
    "rows twice": _with(8, Element(0x00280010, "US", numbers=(16, 16))),
    "patient id with a leading space": _with(4, Element(0x00100020, "LO", b" PAT-1")),
    "character set with a leading space": _with(0, Element(0x00080005, "CS", b" ISO_IR 100")),
    "no samples per pixel, the pixels cut short": [
        e for e in _plain_image(bytes(510)) if e.tag != 0x00280002],
    # pydicom stops at an item delimiter, and reads other items and delimiters as elements
    "an item delimiter between elements": _inserted(4, Element(_ITEM_END, "")),
    "a sequence delimiter between elements": _inserted(4, Element(_SEQUENCE_END, "")),
    "a sequence delimiter with a length": _inserted(4, Element(_SEQUENCE_END, "", bytes(4))),
    "an item between elements": _inserted(4, Element(_ITEM, "", bytes(8))),
    # pydicom reads an undefined-length sequence's items: anything is an item header
    "an element right in a sequence": _inserted(
        3, _images_sequence(Element(0x00100020, "LO", b"INSIDE"))),
    "an empty element right in a sequence": _inserted(
        3, _images_sequence(Element(0x00100020, "LO", b""))),
    "an item delimiter right in a sequence": _inserted(
        3, _images_sequence(Element(_ITEM_END, ""), _reference_item())),
    "a sequence delimiter in a defined-length item": _inserted(
        3, _images_sequence(Item((Element(_SEQUENCE_END, ""), *_reference_item().elements)))),
    "an item delimiter in a defined-length item": _inserted(
        3, _images_sequence(Item((Element(_ITEM_END, ""), *_reference_item().elements)))),
    "an undefined-length item not closed": _inserted(
        3, _images_sequence(replace(_reference_item(), undefined=True), undefined=False)),
    "a sequence not closed": _inserted(
        3, replace(_images_sequence(_reference_item()), closed=False)),
    "an undefined-length private OB holding a delimiter's bytes": _inserted(
        3, Element(0x00091001, "OB", fragments=(_delimiter(_SEQUENCE_END, ELE),),
                   undefined=True)),
    "an undefined-length private UN": _inserted(
        3, Element(0x00091001, "UN", items=(_reference_item(),), undefined=True)),
    "an undefined-length text": _inserted(
        3, Element(0x00081030, "UT", raw=b"TEXT", undefined=True)),
    # pydicom reads an undefined-length value that is no sequence up to the first bytes of
    # a sequence delimiter: here the inner sequence's
    "an undefined-length text holding a sequence": _inserted(3, _UT_HOLDING_A_SEQUENCE),
    "an undefined-length text in an item, holding a sequence": _inserted(
        3, _images_sequence(Item((_UT_HOLDING_A_SEQUENCE,), undefined=True))),
    "nested undefined-length sequences": _inserted(3, _images_sequence(Item((
        _images_sequence(replace(_reference_item(), undefined=True)),), undefined=True))),
    # pydicom reads a command set first, in Implicit VR Little Endian
    "a command element first": _inserted(0, Element(0x00000902, "LO", b"HELLO ")),
    # references are taken by pydicom (the fast path leaves such files to it)
    "an image referencing a plan": _inserted(11, Element(0x300C0002, "SQ",
                                                         items=(_reference_item(),))),
    "a plan referencing a structure set": [*_plain_image()[:7], Element(
        0x300C0060, "SQ", items=(_reference_item(),), undefined=True)],
    "a dose referencing a plan": [*_plain_image()[:7], Element(
        0x300C0002, "SQ", items=(_reference_item(),))],
    "a structure set referencing images": [*_plain_image()[:7], _contours("1.2.3.9")],
}


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: UID(e.syntax).name)
@pytest.mark.parametrize("elements", list(_ODD_DATA_SETS.values()), ids=list(_ODD_DATA_SETS))
def test_an_odd_data_set_reads_as_pydicom_reads_it(
        elements: list[Element], enc: Encoding, scratch: Path) -> None:
    _agree_on(_part10(elements, enc), scratch)


def test_an_implicit_item_in_an_explicit_sequence_reads_as_pydicom_reads_it(
        scratch: Path) -> None:
    implicit_item = _pack_item(replace(_reference_item(), undefined=True), ILE)
    for elements in (_inserted(3, _images_sequence()), _inserted(3, _images_sequence(
            _reference_item()))):
        elements[3] = replace(elements[3], items=None,
                              raw=implicit_item + _value(elements[3], ELE))
        _agree_on(_part10(elements, ELE), scratch)


def test_explicit_data_the_implicit_walk_reads_too_reads_as_pydicom_reads_it(
        scratch: Path) -> None:
    """Explicit VR data under the Implicit VR syntax, packed so that an Implicit VR walk
    reads it too (other elements): pydicom reads it as its first element's VR says."""
    first = struct.pack("<HH2sHI", 0x0009, 0x1001, b"OB", 0, 0)  # Implicit: 0x424F bytes
    explicit = b"".join(_pack(e, ELE) for e in _plain_image()[1:7])
    implicit = b"".join(_pack(e, ILE) for e in [Element(0x00080018, "UI", b"9.9.9\x00"),
                                                 _text(0x00100020, "OTHER")])
    gap = 8 + 0x424F - len(first) - len(explicit) - 12
    last = struct.pack("<HH2sHI", 0x0009, 0x1002, b"OB", 0, gap + len(implicit))
    data = _meta(_uid_value(ImplicitVRLittleEndian)) + first + explicit + last + bytes(gap) \
        + implicit
    assert _agree_on(data, scratch) is None
    theirs = _read_with_pydicom(scratch)
    assert isinstance(theirs, Found) and theirs.patient_id == "PAT-1"


def test_a_plain_sequence_is_read_on_the_fast_path(scratch: Path) -> None:
    nested = _inserted(3, _images_sequence(
        replace(_reference_item(), undefined=True), _reference_item(),
        Item((_images_sequence(_reference_item()),), undefined=True)))
    for enc in ENCODINGS:
        for elements in (nested, _inserted(3, _images_sequence(undefined=True)),
                         _inserted(3, _images_sequence(_reference_item(), undefined=False))):
            assert isinstance(_agree_on(_part10(elements, enc), scratch), Found)


# -- 3. files cut short -----------------------------------------------------------------
def _cuts(data: bytes, step: int = 1, around: Iterator[int] | None = None) -> list[int]:
    lengths = set(range(0, len(data) + 1, step)) | {len(data)}
    return sorted(lengths | set(around or ()))


def _agree_on_every_cut(data: bytes, path: Path, lengths: list[int]) -> set[str]:
    kinds: set[str] = set()
    for length in lengths:
        fast = _agree_on(data[:length], path)
        kinds.add("None" if fast is None else type(fast).__name__)
    return kinds


@pytest.mark.parametrize("syntax", [e.syntax for e in ENCODINGS],
                         ids=lambda s: UID(s).name)
def test_a_ct_slice_cut_anywhere_reads_as_pydicom_reads_it(
        ct_slices: dict[tuple[int, str], Path], scratch: Path, syntax: str) -> None:
    data = ct_slices[2, syntax].read_bytes()
    assert _agree_on_every_cut(data, scratch, _cuts(data)) == {"None", "str", "Found"}


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: UID(e.syntax).name)
def test_a_data_set_with_sequences_cut_anywhere_reads_as_pydicom_reads_it(
        enc: Encoding, scratch: Path) -> None:
    sequences = [Element(0x00081140, "SQ", items=(replace(_reference_item(), undefined=True),
                                                  _reference_item()), undefined=True),
                 Element(0x00081150, "UI", _CT_CLASS),  # not a sequence: between them
                 Element(0x00082112, "SQ", items=(_reference_item(),))]
    elements = _plain_image(bytes(512))
    data = _part10(elements[:5] + sequences + elements[5:], enc)
    assert _agree_on_every_cut(data, scratch, _cuts(data)) == {"None", "str", "Found"}


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: UID(e.syntax).name)
def test_a_head_longer_than_the_first_read_cut_anywhere_reads_as_pydicom_reads_it(
        enc: Encoding, scratch: Path) -> None:
    for comment in (15800, 16100):  # the pixel data's header just before, across 16384
        elements = _plain_image(bytes(512))
        elements.insert(-1, Element(0x00204000, "LT", b"c" * comment))
        data = _part10(elements, enc)
        head = len(data) - 512 - 12
        assert abs(head - _FIRST_READ) < 400
        lengths = _cuts(data, 97, iter(range(_FIRST_READ - 30, _FIRST_READ + 30)))
        lengths += list(range(head - 20, len(data) + 1))
        assert "Found" in _agree_on_every_cut(data, scratch, sorted(set(lengths)))


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: UID(e.syntax).name)
def test_a_head_with_an_element_across_or_at_the_first_read_s_end_is_read_on(
        enc: Encoding, scratch: Path) -> None:
    """The first read ends inside an element, or between two, or in the pixel data's
    header, the head going on: the fast path reads on (it once took the data set as
    ending there: "no pixel data")."""
    def image(comment: int) -> bytes:
        elements = _plain_image()
        elements.insert(7, Element(0x00204000, "LT", b"c" * comment))
        return _part10(elements, enc)

    after_comment = image(0).find(_pack(Element(0x00280002, "US", numbers=(1,)), enc))
    for shift in range(-50, 14):  # the pixel data's header starts at shift -40
        data = image(_FIRST_READ - after_comment + shift)
        assert len(data) > _FIRST_READ
        assert isinstance(_agree_on(data, scratch), Found), shift


def test_a_file_meta_group_longer_than_the_first_read_cut_anywhere_reads_as_pydicom(
        scratch: Path) -> None:
    extra = _meta_element(0x00020102, b"OB", b"p" * 16500)
    data = _meta(_uid_value(ExplicitVRLittleEndian), extra=extra) \
        + b"".join(_pack(e, ELE) for e in _plain_image())
    lengths = _cuts(data, 251, iter(range(16500, len(data) + 1)))
    assert "Found" in _agree_on_every_cut(data, scratch, lengths)


# -- 4. File Meta groups out of the ordinary ---------------------------------------------
def _body(enc: Encoding = ELE) -> bytes:
    return b"".join(_pack(e, enc) for e in _plain_image())


_BROKEN_META = {
    "group length too long": _meta(_uid_value(ExplicitVRLittleEndian), group_length_fudge=8)
    + _body(),
    "group length too short": _meta(_uid_value(ExplicitVRLittleEndian), group_length_fudge=-8)
    + _body(),
    "group length off by two": _meta(_uid_value(ExplicitVRLittleEndian), group_length_fudge=2)
    + _body(),
    "group length 0": _meta(_uid_value(ExplicitVRLittleEndian),
                            group_length_fudge=-10_000) + _body(),
    "a group-2 element after the group": _meta(_uid_value(ExplicitVRLittleEndian))
    + _meta_element(0x00020016, b"AE", b"PEER") + _body(),
    "the transfer syntax after the group": _meta(None)
    + _meta_element(0x00020010, b"UI", _uid_value(ImplicitVRLittleEndian)) + _body(ILE),
    "no transfer syntax, explicit data": _meta(None) + _body(),
    "no transfer syntax, implicit data": _meta(None) + _body(ILE),
    "no transfer syntax, big endian data": _meta(None) + _body(EBE),
    "deflated": _meta(_uid_value(DeflatedExplicitVRLittleEndian)) + _body(),
    "private syntax": _meta(_uid_value("1.2.826.0.1.3680043.2.1143.1")) + _body(),
    "unknown syntax": _meta(_uid_value("1.2.3.4.5.6")) + _body(),
    "an encapsulated syntax": _meta(_uid_value(JPEGBaseline8Bit)) + _body(),
    "syntax padded with a space": _meta(b"1.2.840.10008.1.2.1 ") + _body(),
    "syntax padded with two NULs": _meta(b"1.2.840.10008.1.2\x00\x00") + _body(ILE),
    "syntax not padded": _meta(b"1.2.840.10008.1.2") + _body(ILE),
    "syntax as LO": _meta(_uid_value(ExplicitVRLittleEndian), syntax_vr=b"LO") + _body(),
    "syntax as UN": _meta(_uid_value(ExplicitVRLittleEndian), syntax_vr=b"UN") + _body(),
    "two syntaxes": _meta(_uid_value(ExplicitVRLittleEndian), extra=_meta_element(
        0x00020010, b"UI", _uid_value(ImplicitVRLittleEndian))) + _body(ILE),
    # pydicom reads an OD's 4-byte length, and takes an invalid VR for Implicit VR: each
    # then reads the Transfer Syntax UID that follows as the value
    "a meta element with an OD VR": _meta(None, extra=struct.pack("<HH2sHI", 2, 0x100, b"OD",
                                                                  4, 28)
                                          + _meta_element(0x00020010, b"UI",
                                                          _uid_value(ExplicitVRLittleEndian)))
    + _body(),
    "a meta element with no valid VR": _meta(None, extra=struct.pack("<HH2sH", 2, 0x100,
                                                                     b"\x1c\x00", 0)
                                             + _meta_element(0x00020010, b"UI",
                                                             _uid_value(ExplicitVRLittleEndian)))
    + _body(),
    "a meta element with undefined length": _meta(
        _uid_value(ExplicitVRLittleEndian),
        extra=struct.pack("<HH2sHI", 2, 0x102, b"OB", 0, _UNDEFINED)) + _body(),
    "explicit data under the implicit syntax": _meta(_uid_value(ImplicitVRLittleEndian)) + _body(),
    "implicit data under an explicit syntax": _meta(_uid_value(ExplicitVRLittleEndian))
    + _body(ILE),
    "big endian data under little endian": _meta(_uid_value(ExplicitVRLittleEndian))
    + _body(EBE),
    "little endian data under big endian": _meta(_uid_value(ExplicitVRBigEndian)) + _body(),
    "RLE (encapsulated) syntax, native pixels": _meta(_uid_value(RLELossless)) + _body(),
    "no preamble": _meta(_uid_value(ExplicitVRLittleEndian), preamble=b"DICM") + _body(),
    "no DICM": _meta(_uid_value(ExplicitVRLittleEndian), preamble=b"\x00" * 132) + _body(),
    "nothing after the meta group": _meta(_uid_value(ExplicitVRLittleEndian)),
    "the group length's length is 2": _meta(_uid_value(ExplicitVRLittleEndian))[:138]
    + b"\x02\x00" + _meta(_uid_value(ExplicitVRLittleEndian))[140:] + _body(),
    "a command element first": _meta(_uid_value(ExplicitVRBigEndian))
    + _pack(Element(0x00000902, "LO", b"HELLO "), EBE) + _body(EBE),
}


@pytest.mark.parametrize("data", list(_BROKEN_META.values()), ids=list(_BROKEN_META))
def test_a_file_meta_group_out_of_the_ordinary_reads_as_pydicom_reads_it(
        data: bytes, scratch: Path) -> None:
    _agree_on(data, scratch)


def test_the_ordinary_file_meta_group_is_read_on_the_fast_path(scratch: Path) -> None:
    for enc in ENCODINGS:
        assert isinstance(_agree_on(_meta(_uid_value(enc.syntax)) + _body(enc), scratch), Found)


# -- 5. the File Meta group and the character set, against pydicom ----------------------
@settings(max_examples=100, deadline=None)
@given(st.sampled_from([*(e.syntax for e in ENCODINGS), JPEGBaseline8Bit, RLELossless,
                        DeflatedExplicitVRLittleEndian, "1.2.3.4"]),
       st.lists(st.tuples(st.sampled_from([0x0013, 0x0016, 0x0100, 0x0102]),
                          st.sampled_from([b"SH", b"AE", b"OB", b"UN", b"UI"]),
                          st.binary(max_size=20)), max_size=3))
def test_the_transfer_syntax_is_read_as_pydicom_reads_it(
        scratch: Path, syntax: str, extra: list[tuple[int, bytes, bytes]]) -> None:
    meta = _meta(_uid_value(syntax), extra=b"".join(
        _meta_element(0x00020000 | tag, vr, value + b"\x00" * (len(value) % 2))
        for tag, vr, value in sorted(extra)))
    scratch.write_bytes(meta + _body())
    ours = meta_syntax(scratch.read_bytes())
    assert ours is not None
    theirs = read_file_meta_info(scratch)
    assert ours == (theirs.TransferSyntaxUID, len(meta))


@_SETTINGS
@given(st.builds(Element, st.just(0x00080005), st.sampled_from(["CS"] * 6 + ["OB", "UN"]),
                 st.one_of(st.sampled_from(_CHARSETS),
                           st.lists(st.sampled_from([b"", b" ", b"ISO_IR 100", b" ISO_IR 192",
                                                     b"ISO 2022 IR 87 ", b"\x00"]),
                                    min_size=1, max_size=3).map(b"\\".join))),
       st.sampled_from(ENCODINGS))
def test_the_character_set_is_read_as_the_db_daemon_reads_it(
        scratch: Path, charset: Element, enc: Encoding) -> None:
    data = _part10([charset, *_plain_image()[1:]], enc)
    head = read_head(data, whole=True)
    assert head is not None
    ours = head.charset()
    scratch.write_bytes(data)
    if ours is not None:
        assert ours == charset_of(pydicom.dcmread(scratch))
    event("charset(): " + ("None" if ours is None else "read"))


def test_a_charset_read_on_the_fast_path_is_read_as_the_db_daemon_reads_it(
        ct_slices: dict[tuple[int, str], Path]) -> None:
    for path in ct_slices.values():
        head = read_head(path.read_bytes(), whole=True)
        assert head is not None
        assert head.charset() == charset_of(pydicom.dcmread(path)) != ()

