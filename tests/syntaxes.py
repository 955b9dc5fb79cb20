"""The three uncompressed transfer syntaxes the raw readers' tests write each case in."""

from __future__ import annotations

from typing import NamedTuple

from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian


class Encoding(NamedTuple):
    syntax: UID
    implicit: bool
    little: bool


ELE = Encoding(ExplicitVRLittleEndian, False, True)
ILE = Encoding(ImplicitVRLittleEndian, True, True)
EBE = Encoding(ExplicitVRBigEndian, False, False)
ENCODINGS = (ELE, ILE, EBE)
