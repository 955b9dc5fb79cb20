"""rtmove with one deliberate defect: ``python broken_rtmove.py BREAK ARGS...``.

The catalog must be able to fail: each scenario names (``catches``) the defects it
is known to catch, and tests/scenarios runs it against this rtmove to prove it.
Every break is a defect a real mover client could have.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import client.collect as collect
import client.commands.check_site as check_site_command
import client.commands.common as common
import client.early_moves as early_moves
import client.errors as errors
import client.session as session
import client.transfer as transfer
import client.verify as verify
from client.check_site import Check
from client.cli import main
from client.manifest import Item, Manifest, Outcome
from client.resolve import Resolver


def _no_retry() -> None:
    """Transient failures end the run at once."""
    load = common.load

    def without_retries(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(load(*args, **kwargs), retries=0)

    common.load = without_retries


def _no_timeout() -> None:
    """No answer is ever given up on (an hour is as good as for ever in a scenario)."""
    load = common.load

    def patient(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(load(*args, **kwargs), timeout=3600.0)

    common.load = patient


def _skip_last() -> None:
    """The last object of the collection is never moved, yet reported as arrived (and
    nothing is moved while resolving, which would move it anyway)."""
    def no_early_move(self: early_moves.EarlyMoves, item: Item) -> None:
        return None

    early_moves.EarlyMoves.start = no_early_move  # type: ignore[method-assign]

    def run(self: transfer.Transfer, manifest: Manifest) -> Manifest:
        items = manifest.items()
        for item in items[:-1]:
            self.done[item.key] = self._move_item(item, manifest.patient_id)
        for item in items[-1:]:
            self.done[item.key] = dataclasses.replace(item, outcome=Outcome.ARRIVED)
        return manifest.with_outcomes(self.done)

    transfer.Transfer.run = run  # type: ignore[method-assign]


def _trust_status() -> None:
    """Whatever the daemon's status says is believed: nothing is checked on disk."""
    def arrived(self: transfer.Transfer, expected: set[str], *_: Any, **__: Any) -> set[str]:
        return set(expected)

    transfer.Transfer._arrived = arrived  # type: ignore[method-assign]


def _no_wait() -> None:
    """The folder is read once, at once, even while the destination is still writing."""
    verify.Folder.settle = lambda self, expected, **_: None  # type: ignore[method-assign]


def _mute_errors() -> None:
    """Every failure is a bare "failed" (exit status 1), and no object says why it failed."""
    def fail(_args: Any, _exc: Exception) -> int:
        print("rtmove: failed", file=sys.stderr)
        return 1

    common.fail = fail
    errors.DicomError.__str__ = lambda self: "failed"  # type: ignore[method-assign]
    kind = collect.RunResult.kind.fget  # type: ignore[attr-defined]
    collect.RunResult.kind = property(  # type: ignore[method-assign,assignment]
        lambda self: errors.Kind.INTERNAL if kind(self) else errors.Kind.OK)
    move_item = transfer.Transfer._move_item

    def unexplained(self: transfer.Transfer, *args: Any) -> Any:
        return dataclasses.replace(move_item(self, *args), note="")

    transfer.Transfer._move_item = unexplained  # type: ignore[method-assign]


def _no_identity_check() -> None:
    """An object that arrives under the asked UID is taken for the one asked for."""
    transfer.identity_problems = lambda *_: {}


def _no_warnings() -> None:
    """Gaps in the archive are not reported."""
    collection = Resolver.collection

    def quiet(self: Resolver, plan: Any) -> Any:
        return dataclasses.replace(collection(self, plan), warnings=())

    Resolver.collection = quiet  # type: ignore[method-assign]


def _blind_check_site() -> None:
    """check-site passes whatever the site file says."""
    def all_pass(checks: list[Check]) -> list[Check]:
        return [dataclasses.replace(c, ok=True, skipped=False) for c in checks]

    static, live = check_site_command.static_checks, check_site_command.live_checks
    check_site_command.static_checks = lambda *a, **k: all_pass(static(*a, **k))
    check_site_command.live_checks = lambda *a, **k: all_pass(live(*a, **k))


def _no_live_checks() -> None:
    """check-site --live quietly skips its live probes."""
    check_site_command.live_checks = lambda *a, **k: []


def _no_match_check() -> None:
    """C-FIND matches are used as they come, even undecodable or for other keys."""
    session.match_problem = lambda *_: None


def _no_stall_watch() -> None:
    """Pending responses are waited through however long they bring nothing new."""
    session._Stall.stuck = lambda self, state: False  # type: ignore[method-assign]


def _believe_counts() -> None:
    """Sub-operation counts are believed even when they add up to more than was asked."""
    transfer.Transfer._check_counts = lambda *_: None  # type: ignore[method-assign]


BREAKS: dict[str, Callable[[], None]] = {
    "no-retry": _no_retry,
    "no-timeout": _no_timeout,
    "skip-last": _skip_last,
    "trust-status": _trust_status,
    "no-wait": _no_wait,
    "mute-errors": _mute_errors,
    "no-identity-check": _no_identity_check,
    "no-warnings": _no_warnings,
    "blind-check-site": _blind_check_site,
    "no-live-checks": _no_live_checks,
    "no-match-check": _no_match_check,
    "no-stall-watch": _no_stall_watch,
    "believe-counts": _believe_counts,
}

if __name__ == "__main__":
    name, *argv = sys.argv[1:]
    BREAKS[name]()
    sys.exit(main(argv))
