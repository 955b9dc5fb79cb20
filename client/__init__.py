"""rtmove: the mover client for a radiotherapy archive's DICOM daemons.

This package ships to hospitals; it must never import ``emulators``.
"""

__version__ = "0.1.0"
