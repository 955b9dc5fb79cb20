"""Start and stop real DICOM peers for tests, on ports picked free at run time.

The code lives in :mod:`emulators.peers` (shared with the benchmarks, which cannot
import from ``tests/``); this module keeps the names tests import from ``peers``.
"""

from __future__ import annotations

from emulators.peers import dcmqrscp_config, free_port, running, wait_for_port

__all__ = ["dcmqrscp_config", "free_port", "running", "wait_for_port"]
