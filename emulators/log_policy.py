"""What the daemons' logs may say about patients: the log policy of ``dbdsim serve``.

The emulators serve real exported data at some sites, and a daemon's log ends up in
terminals, CI artefacts and log collectors that are no place for patient data. So, by
the level the log is configured at (``dbdsim serve --log-level``):

* **warning, info, error**: no patient name and no birth date (shown as
  ``<patient name>``, ``<birth date>``); a patient ID only as a pseudonym,
  ``patient-3f2a9c1e``: an HMAC-SHA256 of the ID under a key drawn per process (set
  ``DBDSIM_LOG_KEY`` to keep pseudonyms stable across runs), so lines about one patient
  can be matched up while the ID cannot be found by hashing candidate IDs. A File
  Daemon path names its patient folder by that pseudonym.
* **debug**: identifiers in full (pynetdicom dumps every query and response there).
* **every level**: no pixel data, and at most 16 bytes of any other binary value
  (:mod:`client.log_limits`).

No log call has to remember this. The identifiers are learned from what peers send
(:data:`HANDLERS`: each C-STORE data set and C-FIND / C-MOVE / C-GET identifier, read up
to the Patient module) and replaced wherever they appear in a record (message,
exception, stack) by :class:`PolicyFilter`, which :func:`protect` puts on the daemons'
own loggers and :func:`emulators.serve.configure_logging` on its stderr handler.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Final, cast

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_messages import C_FIND_RQ, C_GET_RQ, C_MOVE_RQ, C_STORE_RQ
from pynetdicom.events import Event, EventHandlerType

from client.files import safe_name
from client.log_limits import limit_binary, rewrite_record

NAME_SHOWN: Final = "<patient name>"
BIRTH_DATE_SHOWN: Final = "<birth date>"
PSEUDONYM_PREFIX: Final = "patient-"
KEY_VARIABLE: Final = "DBDSIM_LOG_KEY"
DAEMON_LOGGERS: Final = ("dbdsim.db_daemon", "dbdsim.file_daemon", "dbdsim.trust")

_ID_KEYWORDS = ("PatientID", "OtherPatientIDs")
_NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName",
                  "PatientMotherBirthName")
_DATE_KEYWORDS = ("PatientBirthDate",)
_ID_TAGS, _NAME_TAGS, _DATE_TAGS = (tuple(cast(int, tag_for_keyword(k)) for k in keywords)
                                     for keywords in (_ID_KEYWORDS, _NAME_KEYWORDS,
                                                      _DATE_KEYWORDS))
_LAST_PATIENT_TAG = 0x0010FFFF  # the Patient module's group ends the read
_MAX_KNOWN = 100_000  # identifiers remembered (the oldest are forgotten first)
_SHORT = 3  # shorter values are replaced only as a whole path component ("/7/")
_WORD = re.compile(r"\w+")
_SEPARATORS = "/\\"
_MESSAGES = (C_STORE_RQ, C_FIND_RQ, C_MOVE_RQ, C_GET_RQ)


def _key() -> bytes:
    configured = os.environ.get(KEY_VARIABLE)
    return configured.encode("utf-8") if configured else secrets.token_bytes(32)


_PSEUDONYM_KEY = _key()


@functools.lru_cache(maxsize=4096)  # every C-STORE notes its patient's ID (and folder)
def pseudonym(patient_id: str) -> str:
    """``patient-`` and 8 hex digits of a keyed hash: stable for the key, not reversible."""
    digest = hmac.new(_PSEUDONYM_KEY, patient_id.encode("utf-8", "surrogatepass"),
                      hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:8]


class _Known:
    """The identifiers seen so far and what each is shown as, found by their first word.

    Looking up the words of a message costs the same whatever the number of patients
    seen, where one regular expression of every identifier would not.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: OrderedDict[str, str] = OrderedDict()
        self._by_word: dict[str, set[str]] = {}

    def add(self, value: str, shown: str) -> None:
        value = value.strip(" \\")
        first = _WORD.search(value)
        if first is None or value == shown:
            return
        with self._lock:
            if value in self._shown:
                self._shown.move_to_end(value)
                return
            self._shown[value] = shown
            self._by_word.setdefault(first.group(0), set()).add(value)
            while len(self._shown) > _MAX_KNOWN:
                old, _ = self._shown.popitem(last=False)
                word = cast(re.Match[str], _WORD.search(old)).group(0)
                self._by_word[word].discard(old)
                if not self._by_word[word]:
                    del self._by_word[word]

    def shown(self, value: str) -> str | None:
        """What ``value`` is shown as, if it is a known identifier."""
        with self._lock:
            return self._shown.get(value)

    def clear(self) -> None:
        with self._lock:
            self._shown.clear()
            self._by_word.clear()

    def replace(self, text: str) -> str:
        """``text`` with every known identifier standing alone replaced by its stand-in."""
        if not self._shown:
            return text
        out: list[str] = []
        done = 0
        with self._lock:
            for match in _WORD.finditer(text):
                word, start = match.group(0), match.start()
                candidates = self._by_word.get(word)
                if start < done or not candidates:
                    continue
                for value in sorted(candidates, key=len, reverse=True):
                    # The value starts at its first word: step back over what precedes it.
                    begin = start - value.index(word)
                    end = begin + len(value)
                    if begin >= done and text.startswith(value, begin) \
                            and _stands_alone(text, begin, end, len(value) < _SHORT):
                        out += (text[done:begin], self._shown[value])
                        done = end
                        break
        out.append(text[done:])
        return "".join(out)


def _stands_alone(text: str, begin: int, end: int, short: bool) -> bool:
    """Not part of a longer word, number or UID (``1.2.12345.6`` holds no ID ``12345``);
    a short value only as a path component."""
    before = text[begin - 1] if begin > 0 else ""
    after = text[end] if end < len(text) else ""
    if short:
        return bool(before) and bool(after) and before in _SEPARATORS \
            and after in _SEPARATORS
    if any(ch.isalnum() or ch == "_" for ch in (before, after) if ch):
        return False
    uid_before = before == "." and begin > 1 and text[begin - 2].isdigit()
    uid_after = after == "." and end + 1 < len(text) and text[end + 1].isdigit()
    return not (uid_before or uid_after)


KNOWN = _Known()


class _Folders:
    """Output folders whose subfolders are patient folders (``<output>/<patient id>/``).

    Their names are pseudonymised in any path below such a folder, whether or not the
    ID came over the network: an ID from an earlier run is on disk only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, root: Path) -> None:
        forms = {str(root), str(root.absolute())}
        with contextlib.suppress(OSError, RuntimeError):
            forms.add(str(root.resolve()))
        with self._lock:
            if forms <= self._roots:
                return
            self._roots |= forms
            alternatives = "|".join(re.escape(r.rstrip("/\\")) for r in
                                    sorted(self._roots, key=len, reverse=True))
            # Any name up to the next separator, spaces included (a patient ID may hold
            # them): a path below such a folder always goes on into a patient folder.
            self._pattern = re.compile(rf"(?:{alternatives})[/\\]([^/\\'\"\n]+)(?=[/\\])")

    def replace(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text

        def folder(match: re.Match[str]) -> str:
            name = match.group(1)
            shown = KNOWN.shown(name) or pseudonym(name)
            return match.group(0)[:match.start(1) - match.start(0)] + shown

        return pattern.sub(folder, text)


FOLDERS = _Folders()


def note_output_folder(root: Path) -> None:
    """Pseudonymise the patient folders under ``root`` in every record (below debug)."""
    FOLDERS.add(root)


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        items = [str(item) for item in value]
        return [*items, "\\".join(items)] if len(items) > 1 else items
    return [str(value)]


def note_patient(ids: Iterable[str] = (), names: Iterable[str] = (),
                 birth_dates: Iterable[str] = ()) -> None:
    """Remember identifiers, so no later record shows them (below debug)."""
    for patient_id in ids:
        if patient_id.strip(" "):
            shown = pseudonym(patient_id)
            KNOWN.add(patient_id, shown)
            KNOWN.add(safe_name(patient_id), shown)  # its File Daemon folder
    for name in names:
        KNOWN.add(name, NAME_SHOWN)
        for part in re.split(r"[\^=]", name):  # PN components and groups
            part = part.strip(" *?")
            if len(part) >= _SHORT:
                KNOWN.add(part, NAME_SHOWN)
    for date in birth_dates:
        for part in {date, *date.split("-")}:
            part = part.strip(" ")
            if len(part) == 8 and part.isdigit():
                KNOWN.add(part, BIRTH_DATE_SHOWN)
                KNOWN.add(f"{part[:4]}-{part[4:6]}-{part[6:]}", BIRTH_DATE_SHOWN)
            elif part and part == date.strip(" "):
                KNOWN.add(part, BIRTH_DATE_SHOWN)


def note_dataset(ds: Dataset) -> None:
    """Remember the Patient module identifiers of ``ds``.

    Raw values are decoded here, not by pydicom: its validation would log a malformed
    value (a birth date such as ``1942-08-17x``) before it is remembered.
    """
    def values(keywords: tuple[str, ...]) -> list[str]:
        found: list[str] = []
        for keyword in keywords:
            try:
                element = ds.get_item(keyword)
                if element is None:
                    continue
                if isinstance(element, RawDataElement):
                    charset = ds._character_set  # a str when the data set names none
                    encodings = [charset] if isinstance(charset, str) else list(charset)
                    found += _decoded(element.value or b"", encodings)
                else:
                    found += _strings(element.value)
            except Exception:  # a value that cannot be decoded: nothing to remember
                continue
        return found

    note_patient(values(_ID_KEYWORDS), values(_NAME_KEYWORDS), values(_DATE_KEYWORDS))


def note_raw(head: Mapping[int, bytes], charset: str) -> None:
    """:func:`note_dataset` for raw top-level values by tag (see
    :mod:`emulators.dataset_head`), in the one character set ``charset`` names."""
    encodings = convert_encodings(charset or None)

    def values(tags: tuple[int, ...]) -> list[str]:
        found: list[str] = []
        for tag in tags:
            try:
                found += _decoded(head.get(tag, b""), encodings)
            except Exception:  # a value that cannot be decoded: nothing to remember
                continue
        return found

    note_patient(values(_ID_TAGS), values(_NAME_TAGS), values(_DATE_TAGS))


def _decoded(value: bytes, encodings: list[str]) -> list[str]:
    """A raw text value's strings, as :func:`_strings` gives a decoded value's."""
    if not value:
        return []
    text = decode_bytes(value, encodings, {0x5C, 0x5E, 0x3D})
    return _strings(text.rstrip("\x00 ").split("\\"))


def _stop_after_patient(tag: object, vr: object, length: object) -> bool:
    return int(cast(int, tag)) > _LAST_PATIENT_TAG


def _observe(event: Event) -> None:
    """EVT_DIMSE_RECV: note the identifiers a request carries, before any handler (and
    its log lines) sees it."""
    message = event.message
    if not isinstance(message, _MESSAGES) or not isinstance(message.data_set, BytesIO):
        return
    try:
        syntax = next(UID(str(cx.transfer_syntax[0])) for cx in event.assoc.accepted_contexts
                      if cx.context_id == message.context_id)
        stream = message.data_set
        if syntax.is_deflated:
            stream = BytesIO(zlib.decompressobj(-zlib.MAX_WBITS).decompress(stream.getvalue()))
        # Read in place, not from a copy: this runs for every C-STORE (a CT slice is
        # 0.5 MB), and only the Patient module at its start is read.
        position = stream.tell()
        try:
            stream.seek(0)
            ds = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian,
                              stop_when=_stop_after_patient)
        finally:
            stream.seek(position)
        note_dataset(ds)
    except Exception:  # the peer's bytes: a handler will refuse what cannot be read
        return


HANDLERS: Final[list[EventHandlerType]] = [(evt.EVT_DIMSE_RECV, _observe)]


def redact(text: str) -> str:
    """``text`` as a warning or info line may show it: identifiers replaced, binary cut."""
    return limit_binary(KNOWN.replace(FOLDERS.replace(text)))


class PolicyFilter(logging.Filter):
    """Applies the policy to every record; drops none.

    ``identifiers``: True shows them (debug), False hides them, None decides per record
    by the level its logger is configured at (debug or below shows them).
    """

    def __init__(self, identifiers: bool | None = None) -> None:
        super().__init__()
        self.identifiers = identifiers

    def filter(self, record: logging.LogRecord) -> bool:
        shown = self.identifiers
        if shown is None:
            shown = logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG
        done = getattr(record, "_dbdsim_policy", None)
        if done is not None and (done == "redacted" or shown):
            return True  # another filter on its way already applied as much
        rewrite_record(record, limit_binary if shown else redact)
        setattr(record, "_dbdsim_policy", "limited" if shown else "redacted")  # noqa: B010
        return True


def protect(logger: logging.Logger) -> logging.Logger:
    """Put the policy on ``logger`` (once), deciding by its level; returns it."""
    if not any(isinstance(f, PolicyFilter) for f in logger.filters):
        logger.addFilter(PolicyFilter())
    return logger


def protect_daemons() -> None:
    """The policy on every logger the daemons write to."""
    for name in DAEMON_LOGGERS:
        protect(logging.getLogger(name))


class PolicyFormatter(logging.Formatter):
    """A handler's formatter, its output passed through the policy.

    On a handler the policy rewrites the formatted text, never the record: records are
    shared by every handler, and one handler's level (a stderr at info) must not decide
    what another one (a debug file) gets.
    """

    def __init__(self, inner: logging.Formatter | None, identifiers: bool) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.identifiers = identifiers

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        return limit_binary(text) if self.identifiers else redact(text)


def install(handler: logging.Handler, level: str) -> None:
    """Put the policy for ``level`` (a ``--log-level`` choice) on ``handler`` (once)."""
    if not isinstance(handler.formatter, PolicyFormatter):
        handler.setFormatter(PolicyFormatter(handler.formatter,
                                             identifiers=level.lower() == "debug"))
