"""The emulated DB Daemon: a Query/Retrieve SCP (C-ECHO, C-FIND, C-MOVE) over the archive."""

from .daemon import DBDaemon

__all__ = ["DBDaemon"]
