"""The site: what the daemons and the client are, read from a site file or the default.

Import from here, not from ``site_model`` / ``site_toml``: those are how it is built.
"""

from __future__ import annotations

from pathlib import Path

from client.site_model import (
    ALLOW_ALL,
    DEFAULT_CHARSET,
    DEFAULT_MODELS,
    ClientConfig,
    DBDaemonService,
    FileDaemonService,
    Model,
    Quirks,
    Site,
    Timeouts,
    TrustedAE,
    default_site,
)
from client.site_toml import SiteError, ae_title_problem, load_site, parse_site

__all__ = [
    "ALLOW_ALL",
    "DEFAULT_CHARSET",
    "DEFAULT_MODELS",
    "ClientConfig",
    "DBDaemonService",
    "FileDaemonService",
    "Model",
    "Quirks",
    "Site",
    "SiteError",
    "Timeouts",
    "TrustedAE",
    "ae_title_problem",
    "default_site",
    "load_site",
    "load_site_or_default",
    "parse_site",
]


def load_site_or_default(path: Path | None) -> Site:
    """The site in ``path``; with no ``--site`` option, the embedded default."""
    return default_site() if path is None else load_site(path)
