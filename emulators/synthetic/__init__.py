"""The seeded synthetic RT archive: coherent CT, structure set, plan and dose per patient.

The same ``(SyntheticConfig, patient index)`` gives byte-identical datasets and UIDs
on every machine (for the pinned pydicom/faker majors).
"""

from .objects import ObjectRef, build_instance, object_refs
from .recipe import Mess, PatientRecipe, PlanKind, Profile, SyntheticConfig, make_recipe

__all__ = [
    "Mess",
    "ObjectRef",
    "PatientRecipe",
    "PlanKind",
    "Profile",
    "SyntheticConfig",
    "build_instance",
    "make_recipe",
    "object_refs",
]
