"""The archive: a SQLite index of patients, studies, series and instances, and their content."""

from .archive import Archive, ArchiveError
from .importer import ImportReport, import_folder, read_checked
from .index import ArchiveIndex, Counts, Location
from .rows import InstanceRow, PatientRow, SeriesRow, StudyRow

__all__ = [
    "Archive",
    "ArchiveError",
    "ArchiveIndex",
    "Counts",
    "ImportReport",
    "InstanceRow",
    "Location",
    "PatientRow",
    "SeriesRow",
    "StudyRow",
    "import_folder",
    "read_checked",
]
