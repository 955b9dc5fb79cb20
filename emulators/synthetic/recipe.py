"""The recipe of one synthetic patient: every UID, date, label and reference, no pixels.

A recipe is a pure function of ``(config, patient index)`` and costs well under a
millisecond, so the archive index can hold 10,000 patients while any instance's
full dataset is rebuilt from the recipe only when somebody asks for it.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from enum import StrEnum

from client.uids import derive_uid

from .people import Demographics, make_demographics
from .phantom import Anatomy, make_anatomy


class Profile(StrEnum):
    CLEAN = "clean"
    MESSY = "messy"


class Mess(StrEnum):
    """The realities of real archives a ``messy`` patient may carry."""

    SECOND_PLAN = "second-plan"  # two plans on one structure set
    PLAN_WITHOUT_DOSE = "plan-without-dose"
    UNAPPROVED_PLAN = "unapproved-plan"
    SECOND_STRUCTURE_SET = "second-structure-set"  # two structure sets on one CT
    SECOND_CT_STUDY = "second-ct-study"
    BEAM_DOSES = "beam-doses"  # per-beam doses besides the plan dose


class PlanKind(StrEnum):
    STATIC = "static"  # multi-beam static (step-and-shoot style) plan
    VMAT = "vmat"  # dynamic arcs


@dataclass(frozen=True)
class SyntheticConfig:
    """What fixes an archive: same config, same bytes."""

    seed: int = 0
    profile: Profile = Profile.CLEAN
    slices: int = 120
    rows: int = 512
    columns: int = 512
    slice_thickness: float = 2.5
    field_of_view: float = 500.0  # mm across the columns

    def __post_init__(self) -> None:
        if self.slices < 2 or self.rows < 16 or self.columns < 16:
            raise ValueError("a CT needs at least 2 slices of 16x16 pixels")
        if self.slice_thickness <= 0 or self.field_of_view <= 0:
            raise ValueError("slice thickness and field of view must be positive")

    @property
    def pixel_spacing(self) -> float:
        return self.field_of_view / self.columns


@dataclass(frozen=True)
class CTGeometry:
    rows: int
    columns: int
    spacing: float
    thickness: float
    slices: int

    @property
    def origin_x(self) -> float:
        return -(self.columns - 1) / 2.0 * self.spacing

    @property
    def origin_y(self) -> float:
        return -(self.rows - 1) / 2.0 * self.spacing

    def z(self, k: int) -> float:
        """Slice ``k``'s position; slice 0 is the most inferior."""
        return round((k - (self.slices - 1) / 2.0) * self.thickness, 3)

    @property
    def z_half(self) -> float:
        return (self.slices - 1) / 2.0 * self.thickness


@dataclass(frozen=True)
class StudySpec:
    uid: str
    study_id: str
    accession: str
    date: dt.date
    time: str
    description: str


@dataclass(frozen=True)
class SeriesSpec:
    uid: str
    number: int
    description: str


@dataclass(frozen=True)
class CTSpec:
    study: StudySpec
    series: SeriesSpec
    frame_of_reference: str
    slice_uids: tuple[str, ...]
    geometry: CTGeometry


@dataclass(frozen=True)
class StructureSetSpec:
    uid: str
    study: StudySpec
    series: SeriesSpec
    ct: CTSpec
    label: str
    date: dt.date
    time: str


@dataclass(frozen=True)
class BeamSpec:
    number: int
    name: str
    gantry_start: float
    gantry_stop: float  # equal to start for a static beam
    meterset: float
    rotation: str = "NONE"  # GantryRotationDirection of an arc: CW or CC

    @property
    def is_arc(self) -> bool:
        return self.rotation != "NONE"


@dataclass(frozen=True)
class PlanSpec:
    uid: str
    study: StudySpec
    series: SeriesSpec
    structure_set: StructureSetSpec
    label: str
    name: str
    kind: PlanKind
    approved: bool
    date: dt.date
    time: str
    fractions: int
    dose_per_fraction: float  # Gy
    beams: tuple[BeamSpec, ...]
    machine: str
    energy: float

    @property
    def prescription(self) -> float:
        return round(self.fractions * self.dose_per_fraction, 2)


@dataclass(frozen=True)
class DoseSpec:
    uid: str
    study: StudySpec
    series: SeriesSpec
    plan: PlanSpec
    summation: str  # PLAN or BEAM
    beam: BeamSpec | None
    instance_number: int


@dataclass(frozen=True)
class PatientRecipe:
    config: SyntheticConfig
    index: int
    patient_id: str
    birth_date: dt.date
    people: Demographics
    anatomy: Anatomy
    mess: frozenset[Mess]
    studies: tuple[StudySpec, ...]
    cts: tuple[CTSpec, ...]
    structure_sets: tuple[StructureSetSpec, ...]
    plans: tuple[PlanSpec, ...]
    doses: tuple[DoseSpec, ...]
    equipment_serial: str


_EPOCH = dt.date(2016, 1, 4)
_ID_MULTIPLIER = 7_654_321  # coprime with 10**7: index -> patient ID is a bijection
_MACHINES = ("TrueBeam1", "TrueBeam2", "Halcyon1", "Clinac_iX")


def patient_id(seed: int, index: int) -> str:
    """A 9-character patient ID, unique per index within one seed (up to 10**7)."""
    if not 0 <= index < 10_000_000:
        raise ValueError("patient index must be in [0, 10**7)")
    offset = int(derive_uid("pid-offset", seed)[5:]) % 10_000_000
    return f"RT{(index * _ID_MULTIPLIER + offset) % 10_000_000:07d}"


def _time(rng: random.Random, start_hour: int = 7, end_hour: int = 18) -> str:
    seconds = rng.randrange(start_hour * 3600, end_hour * 3600)
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def _mess(rng: random.Random, profile: Profile, index: int) -> frozenset[Mess]:
    if profile is Profile.CLEAN:
        return frozenset()
    kinds = list(Mess)
    # Every run of five consecutive patients shows each of the first five kinds;
    # beyond that, each kind is drawn with a fair chance.
    chosen = {kinds[index % 5]}
    chosen.update(k for k in kinds if rng.random() < 0.3)
    return frozenset(chosen)


class _Builder:
    """Accumulates one patient's objects while handing out UIDs and numbers."""

    def __init__(self, config: SyntheticConfig, index: int, rng: random.Random) -> None:
        self.config = config
        self.index = index
        self.rng = rng
        self.series_numbers: dict[str, int] = {}

    def uid(self, *parts: object) -> str:
        return derive_uid("dbdsim", self.config.seed, self.index, *parts)

    def series(self, study: StudySpec, key: str, description: str) -> SeriesSpec:
        number = self.series_numbers.get(study.uid, 0) + 1
        self.series_numbers[study.uid] = number
        return SeriesSpec(self.uid("series", key), number, description)

    def study(self, key: str, date: dt.date, description: str) -> StudySpec:
        digits = int(self.uid("study-id", key)[5:]) % 10**8
        return StudySpec(
            uid=self.uid("study", key),
            study_id=f"S{digits % 10**6:06d}",
            accession=f"A{digits:08d}",
            date=date,
            time=_time(self.rng),
            description=description,
        )

    def ct(self, study: StudySpec, key: str) -> CTSpec:
        c = self.config
        geometry = CTGeometry(c.rows, c.columns, c.pixel_spacing, c.slice_thickness, c.slices)
        return CTSpec(
            study=study,
            series=self.series(study, f"ct{key}", f"Thorax {c.slice_thickness:g}mm RT"),
            frame_of_reference=self.uid("for", key),
            slice_uids=tuple(self.uid("ct", key, k) for k in range(c.slices)),
            geometry=geometry,
        )

    def structure_set(self, ct: CTSpec, key: str, label: str, days: int) -> StructureSetSpec:
        return StructureSetSpec(
            uid=self.uid("rtstruct", key),
            study=ct.study,
            series=self.series(ct.study, f"rtstruct{key}", "Structure set"),
            ct=ct,
            label=label,
            date=ct.study.date + dt.timedelta(days=days),
            time=_time(self.rng),
        )

    def plan(self, ss: StructureSetSpec, key: str, label: str, *, approved: bool,
             kind: PlanKind | None = None) -> PlanSpec:
        rng = self.rng
        kind = kind or rng.choice((PlanKind.STATIC, PlanKind.VMAT))
        if kind is PlanKind.STATIC:
            count = rng.choice((5, 7))
            start = rng.choice((0.0, 10.0, 20.0))
            beams = tuple(
                BeamSpec(i + 1, f"F{i + 1} G{(start + i * 360 / count) % 360:.0f}",
                         round((start + i * 360 / count) % 360, 1),
                         round((start + i * 360 / count) % 360, 1),
                         round(rng.uniform(40.0, 90.0), 2))
                for i in range(count))
            fractions, per_fraction = rng.choice(((30, 2.0), (20, 2.75), (33, 2.0)))
        else:
            beams = (BeamSpec(1, "Arc CW", 181.0, 179.0, round(rng.uniform(220, 320), 2), "CW"),
                     BeamSpec(2, "Arc CCW", 179.0, 181.0, round(rng.uniform(220, 320), 2), "CC"))
            fractions, per_fraction = rng.choice(((8, 7.5), (5, 11.0), (3, 18.0)))
        return PlanSpec(
            uid=self.uid("rtplan", key),
            study=ss.study,
            series=self.series(ss.study, f"rtplan{key}", "Treatment plan"),
            structure_set=ss,
            label=label,
            name=f"{'VMAT' if kind is PlanKind.VMAT else 'Static'} thorax",
            kind=kind,
            approved=approved,
            date=ss.date + dt.timedelta(days=rng.randint(1, 4)),
            time=_time(rng),
            fractions=fractions,
            dose_per_fraction=per_fraction,
            beams=beams,
            machine=rng.choice(_MACHINES),
            energy=rng.choice((6.0, 6.0, 10.0)),
        )

    def doses(self, plan: PlanSpec, key: str, per_beam: bool) -> list[DoseSpec]:
        series = self.series(plan.study, f"rtdose{key}", "Dose")
        out = [DoseSpec(self.uid("rtdose", key), plan.study, series, plan, "PLAN", None, 1)]
        if per_beam:
            out.extend(
                DoseSpec(self.uid("rtdose", key, beam.number), plan.study, series, plan,
                         "BEAM", beam, beam.number + 1)
                for beam in plan.beams)
        return out


def make_recipe(config: SyntheticConfig, index: int) -> PatientRecipe:
    """The recipe of patient ``index`` of the archive ``config`` describes."""
    pid = patient_id(config.seed, index)
    # Separate streams: the person, their anatomy and the first collection do not
    # depend on the profile, so patient k of a messy archive is patient k of the
    # clean one with more objects, not somebody else under the same ID.
    person_seed = int(derive_uid("person", config.seed, index)[5:])
    rng = random.Random(person_seed)
    people = make_demographics(rng, person_seed % 2**32)
    builder = _Builder(config, index, random.Random(derive_uid("objects", config.seed, index)))
    mess = _mess(random.Random(derive_uid("mess", config.seed, index, config.profile)),
                 config.profile, index)

    first_day = _EPOCH + dt.timedelta(days=rng.randrange(0, 3650))
    age_days = rng.randrange(35 * 365, 88 * 365)
    birth = first_day - dt.timedelta(days=age_days)
    geometry_half = (config.slices - 1) / 2.0 * config.slice_thickness
    anatomy = make_anatomy(rng, geometry_half)
    side = "L" if anatomy.target.cx > 0 else "R"

    study = builder.study("0", first_day, "CT Thorax RT planning")
    ct = builder.ct(study, "0")
    ss = builder.structure_set(ct, "0", "RT_Struct1", builder.rng.randint(1, 3))
    plans = [builder.plan(ss, "0", f"LUNG_{side}_1", approved=True)]
    structure_sets = [ss]
    studies = [study]
    cts = [ct]
    doses = builder.doses(plans[0], "0", Mess.BEAM_DOSES in mess)

    if Mess.SECOND_PLAN in mess:
        plans.append(builder.plan(ss, "1", f"LUNG_{side}_2", approved=True))
        doses += builder.doses(plans[-1], "1", per_beam=False)
    if Mess.UNAPPROVED_PLAN in mess:
        plans.append(builder.plan(ss, "u", f"LUNG_{side}_TRY", approved=False))
        doses += builder.doses(plans[-1], "u", per_beam=False)
    if Mess.PLAN_WITHOUT_DOSE in mess:
        plans.append(builder.plan(ss, "n", f"LUNG_{side}_NODOSE", approved=True))
    if Mess.SECOND_STRUCTURE_SET in mess:
        structure_sets.append(builder.structure_set(ct, "1", "RT_Struct2", 5))
    if Mess.SECOND_CT_STUDY in mess:
        later = first_day + dt.timedelta(days=builder.rng.randint(20, 60))
        study2 = builder.study("1", later, "CT Thorax re-planning")
        ct2 = builder.ct(study2, "1")
        ss2 = builder.structure_set(ct2, "2", "RT_Struct_RP", 1)
        studies.append(study2)
        cts.append(ct2)
        structure_sets.append(ss2)
        plans.append(builder.plan(ss2, "2", f"LUNG_{side}_RP", approved=True))
        doses += builder.doses(plans[-1], "2", per_beam=False)

    return PatientRecipe(
        config=config,
        index=index,
        patient_id=pid,
        birth_date=birth,
        people=people,
        anatomy=anatomy,
        mess=mess,
        studies=tuple(studies),
        cts=tuple(cts),
        structure_sets=tuple(structure_sets),
        plans=tuple(plans),
        doses=tuple(doses),
        equipment_serial=f"{int(builder.uid('serial')[5:]) % 10**6:06d}",
    )

