"""What the ``dbdsim`` subcommands share: argument types, the synthetic archive options, errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .synthetic import Profile, SyntheticConfig

MAX_PATIENTS = 10_000_000  # patient IDs are unique per seed up to this many

Runner = Callable[[argparse.Namespace, argparse.ArgumentParser], int]
SubParsers = argparse._SubParsersAction  # the type argparse gives add_subparsers()


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def add_archive_options(parser: argparse.ArgumentParser, seed_default: int | None = None,
                        ) -> argparse._ArgumentGroup:
    """The options fixing a synthetic archive; every command that builds one shares them.

    ``seed_default`` None makes ``--seed`` required (``generate``: bytes on disk
    should never depend on a default someone may change).
    """
    defaults = SyntheticConfig()
    group = parser.add_argument_group("synthetic archive")
    group.add_argument("--seed", type=int_at_least(0), required=seed_default is None,
                       default=seed_default,
                       help="archive seed: the same seed and options give the same bytes"
                            + ("" if seed_default is None else " (default: %(default)s)"))
    group.add_argument("--profile", choices=[p.value for p in Profile],
                       default=defaults.profile.value,
                       help="clean: one plan per patient; messy: real archives' complications "
                            "(default: %(default)s)")
    group.add_argument("--slices", type=int_at_least(2), default=defaults.slices,
                       help="CT slices per series (default: %(default)s)")
    group.add_argument("--rows", type=int_at_least(16), default=defaults.rows,
                       help="CT rows (default: %(default)s)")
    group.add_argument("--columns", type=int_at_least(16), default=defaults.columns,
                       help="CT columns (default: %(default)s)")
    return group


def synthetic_config(args: argparse.Namespace, parser: argparse.ArgumentParser,
                     ) -> SyntheticConfig:
    try:
        return SyntheticConfig(seed=args.seed, profile=Profile(args.profile), slices=args.slices,
                               rows=args.rows, columns=args.columns)
    except ValueError as exc:
        parser.error(str(exc))


def interactive() -> bool:
    """Progress bars only for a person watching a terminal, never into pipes or logs."""
    return sys.stdout.isatty() and sys.stderr.isatty()
