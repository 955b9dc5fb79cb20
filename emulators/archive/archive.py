"""An archive: the index plus where each instance's content comes from."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from ..synthetic import PatientRecipe, Profile, SyntheticConfig, build_instance, make_recipe
from .from_recipe import recipe_rows
from .importer import ImportReport, import_folder, read_checked
from .index import ArchiveIndex

_CONFIG_KEY = "synthetic_config"


class ArchiveError(LookupError):
    """An instance the archive lists but cannot produce, or does not list at all."""


class Archive:
    """What the DB Daemon serves; ``dataset()`` regenerates or reads on demand."""

    def __init__(self, index: ArchiveIndex) -> None:
        self.index = index
        self.config = _config_from_meta(index.get_meta(_CONFIG_KEY))

    @classmethod
    def synthetic(cls, config: SyntheticConfig, patients: int, path: Path | None = None,
                  progress: Callable[[PatientRecipe], None] | None = None) -> Archive:
        """An index of ``patients`` seeded patients; no pixel data is made or stored."""
        index = ArchiveIndex(path, bulk=True)
        index.set_meta(_CONFIG_KEY, dataclasses.asdict(config))
        for i in range(patients):
            recipe = make_recipe(config, i)
            for patient, study, series, instances in recipe_rows(recipe):
                index.add(patient, study, series, instances)
            if progress:
                progress(recipe)
        index.finish_bulk()
        return cls(index)

    @classmethod
    def from_folder(cls, folder: Path, path: Path | None = None,
                    ) -> tuple[Archive, ImportReport]:
        index = ArchiveIndex(path)
        report = import_folder(index, folder)
        return cls(index), report

    def recipe(self, synthetic_index: int) -> PatientRecipe:
        if self.config is None:
            raise ArchiveError("this archive holds no synthetic patients")
        return _cached_recipe(self.config, synthetic_index)

    def dataset(self, sop_uid: str) -> Dataset:
        """The full dataset of one instance (pixel data included)."""
        location = self.index.locate(sop_uid)
        if location is None:
            raise ArchiveError(f"no instance {sop_uid} in the archive")
        if location.path is not None:
            try:
                return read_checked(Path(location.path))
            except ValueError as exc:
                raise ArchiveError(f"{location.path}: {exc}") from exc
        if location.synthetic_index is None:
            raise ArchiveError(f"instance {sop_uid} has neither a file nor a recipe")
        return build_instance(self.recipe(location.synthetic_index), sop_uid)

    def close(self) -> None:
        self.index.close()


def _config_from_meta(stored: object) -> SyntheticConfig | None:
    if stored is None:
        return None
    if not isinstance(stored, dict):
        raise ArchiveError(f"index meta {_CONFIG_KEY!r} is not a mapping: {stored!r}")
    try:
        return SyntheticConfig(**{**stored, "profile": Profile(stored["profile"])})
    except (TypeError, ValueError, KeyError) as exc:
        raise ArchiveError(f"index meta {_CONFIG_KEY!r} is not a synthetic config: {exc}") \
            from exc


@functools.lru_cache(maxsize=64)
def _cached_recipe(config: SyntheticConfig, synthetic_index: int) -> PatientRecipe:
    return make_recipe(config, synthetic_index)
