"""What a person sees: progress bars on a terminal, a summary table at the end."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from .manifest import Item, Manifest, Outcome
from .resolve import PlanInfo
from .transfer import ProgressSink

_STYLE = {Outcome.ARRIVED: "green", Outcome.MOVED: "green", Outcome.INCOMPLETE: "yellow",
          Outcome.FAILED: "red", Outcome.PENDING: "dim"}


def _what(item: Item) -> str:
    return f"{item.modality or item.role.value} {item.label}".strip()


class RichProgress(ProgressSink):
    """One bar per object being moved; used only when stderr is a terminal."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), console=console, transient=True)
        self._tasks: dict[tuple[str, str, tuple[str, ...]], TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, item: Item, total: int) -> None:
        self._tasks[item.key] = self._progress.add_task(_what(item), total=total or None)

    def update(self, item: Item, done: int) -> None:
        task = self._tasks.get(item.key)
        if task is not None:
            self._progress.update(task, completed=done)

    def finish(self, item: Item) -> None:
        task = self._tasks.pop(item.key, None)
        if task is not None:
            self._progress.remove_task(task)


def summary(manifest: Manifest) -> Table:
    """One row per object; a CT shared by two plans shows once, under the first."""
    table = Table(title=f"Patient {manifest.patient_id} {manifest.patient_name}".rstrip()
                  + f" -> {manifest.destination or '?'}")
    several = len(manifest.collections) > 1
    columns = ("plan", "role", "what", "level", "n", "outcome", "missing")
    for column in columns[0 if several else 1:]:
        table.add_column(column, justify="right" if column in ("n", "missing") else "left")
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for c in manifest.collections:
        for item in c.items:
            if item.key in seen:
                continue
            seen.add(item.key)
            row = [item.role.value, item.label, item.level, str(len(item.sop_uids)),
                   f"[{_STYLE[item.outcome]}]{item.outcome.value}[/]",
                   str(len(item.missing)) if item.missing else ""]
            table.add_row(*([c.plan_label or c.plan_uid[-12:]] if several else []), *row)
    return table


def plans_table(patient_id: str, name: str, plans: list[PlanInfo],
                doses: dict[str, int]) -> Table:
    table = Table(title=f"Plans of patient {patient_id} {name}".rstrip())
    for column in ("label", "name", "date", "approval", "doses", "structure set",
                   "SOP Instance UID"):
        table.add_column(column)
    for p in plans:
        table.add_row(p.label, p.name, p.date, p.approval or ("?" if not p.readable else ""),
                      str(doses.get(p.instance.uid, 0)), ", ".join(p.structure_set_uids)[-20:],
                      p.instance.uid)
    return table
