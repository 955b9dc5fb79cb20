"""The archive index: patient / study / series / instance rows in SQLite.

C-FIND becomes SQL over these tables; instance content lives elsewhere (a file, or
the seeded generator), so an index of 10,000 synthetic patients costs rows, not disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .rows import InstanceRow, PatientRow, SeriesRow, StudyRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patient (
    pk INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL UNIQUE,
    patient_name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    charset TEXT NOT NULL,
    synthetic_index INTEGER
);
CREATE TABLE IF NOT EXISTS study (
    pk INTEGER PRIMARY KEY,
    patient_pk INTEGER NOT NULL REFERENCES patient(pk),
    study_uid TEXT NOT NULL UNIQUE,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession TEXT NOT NULL,
    study_id TEXT NOT NULL,
    description TEXT NOT NULL,
    referring_physician TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    pk INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES study(pk),
    series_uid TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    series_number INTEGER,
    description TEXT NOT NULL,
    frame_of_reference TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sop_class (code INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS instance (
    pk INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    series_pk INTEGER NOT NULL REFERENCES series(pk),
    class_code INTEGER NOT NULL REFERENCES sop_class(code),
    instance_number INTEGER,
    label TEXT,
    name TEXT,
    rt_date TEXT,
    rt_time TEXT,
    approval TEXT,
    summation TEXT,
    referenced_uid TEXT,
    path TEXT
);
-- SOP Class UIDs are stored once (1.8 M rows of a 10,000-patient archive share a
-- handful); queries read instances through this view.
CREATE VIEW IF NOT EXISTS instance_v AS
    SELECT i.sop_uid, i.series_pk, c.uid AS sop_class, i.instance_number, i.label, i.name,
           i.rt_date, i.rt_time, i.approval, i.summation, i.referenced_uid, i.path
    FROM instance i JOIN sop_class c ON c.code = i.class_code;
"""
# Built after a bulk load rather than row by row: sorting 1.8 M random UIDs once is
# several times faster than inserting them one at a time into a B-tree.
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS instance_sop ON instance(sop_uid);
CREATE INDEX IF NOT EXISTS instance_series ON instance(series_pk);
CREATE INDEX IF NOT EXISTS study_patient ON study(patient_pk);
CREATE INDEX IF NOT EXISTS series_study ON series(study_pk);
"""


@dataclass(frozen=True)
class Location:
    """Where one instance's content comes from."""

    sop_uid: str
    sop_class: str
    patient_id: str
    study_uid: str
    series_uid: str
    path: str | None
    synthetic_index: int | None


@dataclass(frozen=True)
class Counts:
    patients: int
    studies: int
    series: int
    instances: int


class ArchiveIndex:
    """A SQLite index, in memory unless a path is given; safe to share between threads.

    One connection guarded by a lock: the daemons' handlers run on pynetdicom's
    threads, and SQLite's in-memory databases are per connection.
    """

    def __init__(self, path: Path | str | None = None, *, bulk: bool = False) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self._db = sqlite3.connect(self.path, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            # WAL + NORMAL: a crash loses at most the last few commits, never the
            # index; one fsync per imported file would make big imports crawl.
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)
        self._pk_cache: dict[tuple[str, str], int] = {}
        # In bulk mode the index starts empty and every key passes through the cache,
        # so a cache miss means a new row: no lookup, and no secondary index yet.
        self._bulk = bulk and self.counts().instances == 0
        if not self._bulk:
            self._db.executescript(INDEXES)

    def finish_bulk(self) -> None:
        """Build the secondary indexes after a bulk load; duplicates fail here."""
        if not self._bulk:
            return
        with self._lock:
            try:
                self._db.executescript(INDEXES)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"duplicate SOP Instance UIDs in the bulk load: {exc}") \
                    from exc
            self._bulk = False

    # -- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ArchiveIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta --------------------------------------------------------------------
    def set_meta(self, key: str, value: object) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             (key, json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str) -> object | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    # -- writing -----------------------------------------------------------------
    def add(self, patient: PatientRow, study: StudyRow, series: SeriesRow,
            instances: Iterable[InstanceRow]) -> int:
        """Add (or replace) instances of one series; returns how many were written.

        Patient, study and series rows are inserted the first time they are seen
        and kept as they are after: the first object of a study defines it, as
        in an archive that imports objects one by one.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                patient_pk = self._upsert(
                    "patient", patient.patient_id,
                    "INSERT INTO patient (patient_id, patient_name, birth_date, sex, charset,"
                    " synthetic_index) VALUES (?, ?, ?, ?, ?, ?)",
                    (patient.patient_id, patient.name, patient.birth_date, patient.sex,
                     patient.charset, patient.synthetic_index))
                study_pk = self._upsert(
                    "study", study.uid,
                    "INSERT INTO study (patient_pk, study_uid, study_date, study_time,"
                    " accession, study_id, description, referring_physician)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (patient_pk, study.uid, study.date, study.time, study.accession,
                     study.study_id, study.description, study.referring_physician))
                series_pk = self._upsert(
                    "series", series.uid,
                    "INSERT INTO series (study_pk, series_uid, modality, series_number,"
                    " description, frame_of_reference) VALUES (?, ?, ?, ?, ?, ?)",
                    (study_pk, series.uid, series.modality, series.number,
                     series.description, series.frame_of_reference))
                rows = [(series_pk, i.sop_uid, self._class_code(i.sop_class), i.number,
                         i.label, i.name, i.rt_date, i.rt_time, i.approval, i.summation,
                         i.referenced_uid, i.path) for i in instances]
                cursor = self._db.executemany(
                    "INSERT OR REPLACE INTO instance (series_pk, sop_uid, class_code,"
                    " instance_number, label, name, rt_date, rt_time, approval, summation,"
                    " referenced_uid, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows)
                written = cursor.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pk_cache.clear()
                raise
        return written

    _UNIQUE_COLUMN: ClassVar[dict[str, str]] = {
        "patient": "patient_id", "study": "study_uid", "series": "series_uid",
        "sop_class": "uid"}

    def _upsert(self, table: str, key: str, insert: str, values: tuple[object, ...]) -> int:
        cached = self._pk_cache.get((table, key))
        if cached is not None:
            return cached
        if self._bulk:
            pk = int(self._db.execute(insert, values).lastrowid or 0)
            self._pk_cache[(table, key)] = pk
            return pk
        column = self._UNIQUE_COLUMN[table]
        pk_column = "code" if table == "sop_class" else "pk"
        row = self._db.execute(f"SELECT {pk_column} FROM {table} WHERE {column} = ?",
                               (key,)).fetchone()
        if row is not None:
            pk = int(row[0])
        else:
            pk = int(self._db.execute(insert, values).lastrowid or 0)
        self._pk_cache[(table, key)] = pk
        return pk

    def _class_code(self, uid: str) -> int:
        return self._upsert("sop_class", uid,
                            "INSERT INTO sop_class (uid) VALUES (?)", (uid,))

    # -- breaking (emulators.faults: data faults) -------------------------------------
    def remove_instances(self, sop_uids: Iterable[str]) -> int:
        """Forget instances (and any series left empty): the archive lacks what an object
        references. Returns how many instances were removed."""
        uids = list(sop_uids)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                removed = self._db.executemany("DELETE FROM instance WHERE sop_uid = ?",
                                               [(u,) for u in uids]).rowcount
                self._db.execute("DELETE FROM series WHERE pk NOT IN"
                                 " (SELECT DISTINCT series_pk FROM instance)")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pk_cache.clear()
        return removed

    def duplicate_uid(self, sop_uid: str, as_uid: str) -> None:
        """Give instance ``sop_uid`` the UID of another, as a botched import does.

        SOP Instance UIDs stop being unique in this index: a lookup by UID alone then
        finds the older row, as a UID-keyed store would.
        """
        with self._lock:
            self._db.execute("DROP INDEX IF EXISTS instance_sop")
            self._db.execute("CREATE INDEX IF NOT EXISTS instance_sop_any ON instance(sop_uid)")
            changed = self._db.execute("UPDATE instance SET sop_uid = ? WHERE sop_uid = ?",
                                       (as_uid, sop_uid)).rowcount
        if changed != 1:
            raise KeyError(f"no instance {sop_uid} in the index")

    # -- reading -----------------------------------------------------------------
    def counts(self) -> Counts:
        with self._lock:
            values = [self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("patient", "study", "series", "instance")]
        return Counts(*values)

    def locate(self, sop_uid: str) -> Location | None:
        with self._lock:
            row = self._db.execute(
                "SELECT i.sop_uid, i.sop_class, p.patient_id, st.study_uid, se.series_uid,"
                " i.path, p.synthetic_index FROM instance_v i"
                " JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk"
                " JOIN patient p ON p.pk = st.patient_pk WHERE i.sop_uid = ?"
                " ORDER BY i.series_pk LIMIT 1",
                (sop_uid,)).fetchone()
        return None if row is None else Location(*row)

    def create_function(self, name: str, arity: int,
                        function: Callable[..., str | bytes | int | float | None]) -> None:
        """Register a deterministic SQL function (e.g. the C-FIND person-name matcher)."""
        with self._lock:
            self._db.create_function(name, arity, function, deterministic=True)

    def query(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        """Run a read-only SELECT over the schema above (the C-FIND engine's way in)."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError("only SELECT statements may query the archive index")
        with self._lock:
            cursor = self._db.execute(sql, tuple(params))
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())
