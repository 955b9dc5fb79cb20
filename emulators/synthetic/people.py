"""Seeded patient and staff names from ``faker``, in several locales.

Each name is written with the Specific Character Set it needs: ISO_IR 100
(Latin-1) when every string of the patient fits it, ISO_IR 192 (UTF-8) otherwise,
which is what a multi-language Aria site exports.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from faker import Faker

# Locale weights: mostly Latin-1 locales, as at a European site, with enough
# non-Latin patients that every archive of a few dozen patients has some.
LOCALES: tuple[tuple[str, int], ...] = (
    ("en_US", 3),
    ("de_DE", 3),
    ("fr_FR", 2),
    ("es_ES", 1),
    ("ja_JP", 2),
    ("el_GR", 2),
    ("ru_RU", 1),
)
LATIN1 = "ISO_IR 100"
UTF8 = "ISO_IR 192"


@dataclass(frozen=True)
class Person:
    """A DICOM PN value (``Family^Given``, with ideographic/phonetic groups for ja_JP)."""

    pn: str


@dataclass(frozen=True)
class Demographics:
    locale: str
    charset: str
    patient_name: Person
    sex: str
    physician: Person
    operator: Person
    reviewer: Person
    institution: str


@functools.cache
def _faker(locale: str) -> Faker:
    return Faker(locale)


def _pn(fake: Faker, locale: str, female: bool) -> Person:
    if locale == "ja_JP":
        family = fake.last_name_pair()  # (kanji, kana, romaji)
        given = fake.first_name_female_pair() if female else fake.first_name_male_pair()
        # PS3.5 6.2.1.2: alphabetic = ideographic = phonetic component groups.
        return Person(f"{family[2]}^{given[2]}={family[0]}^{given[0]}={family[1]}^{given[1]}")
    if female:  # gendered family names where the locale has them (ru_RU, el_GR)
        return Person(f"{fake.last_name_female()}^{fake.first_name_female()}")
    return Person(f"{fake.last_name_male()}^{fake.first_name_male()}")


def _fits_latin1(*texts: str) -> bool:
    try:
        for text in texts:
            text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def make_demographics(rng: random.Random, faker_seed: int) -> Demographics:
    """Names for one patient; ``rng`` picks locale and sex, faker the names."""
    locales = [name for name, _ in LOCALES]
    weights = [w for _, w in LOCALES]
    locale = rng.choices(locales, weights)[0]
    female = rng.random() < 0.5
    fake = _faker(locale)
    fake.seed_instance(faker_seed)
    patient = _pn(fake, locale, female)
    physician = _pn(fake, locale, rng.random() < 0.5)
    operator = _pn(fake, locale, rng.random() < 0.5)
    reviewer = _pn(fake, locale, rng.random() < 0.5)
    institution = fake.city()[:40] + " Cancer Centre"
    texts = (patient.pn, physician.pn, operator.pn, reviewer.pn, institution)
    charset = LATIN1 if _fits_latin1(*texts) else UTF8
    return Demographics(
        locale=locale,
        charset=charset,
        patient_name=patient,
        sex="F" if female else "M",
        physician=physician,
        operator=operator,
        reviewer=reviewer,
        institution=institution,
    )
