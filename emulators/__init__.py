"""dbdsim emulators: a fake DB Daemon and File Daemon over a synthetic or imported archive."""

__version__ = "0.1.0"
