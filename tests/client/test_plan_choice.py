"""``--plan``: one word that is a UID, a keyword or an RT Plan Label.

Misreading it moves the wrong plans (or all of them), so each form is pinned, and so is
the phrase used in "no such plan" errors.
"""

from __future__ import annotations

import pytest

from client.cli import main
from client.resolve import PlanChoice

PLAN_UID = "1.2.826.0.1.3680043.8.498.12345.6"


@pytest.mark.parametrize("text", [PLAN_UID, f"  {PLAN_UID}\n", "2.25.1234567890"])
def test_a_uid_chooses_that_plan(text: str) -> None:
    choice = PlanChoice.parse(text)
    assert choice == PlanChoice(uid=text.strip())
    assert choice.describe() == f"plan {text.strip()}"


@pytest.mark.parametrize("text", ["all", "ALL", "All", " all "])
def test_all_in_any_case(text: str) -> None:
    choice = PlanChoice.parse(text)
    assert choice == PlanChoice()
    assert not choice.approved_only
    assert choice.describe() == "all plans"


@pytest.mark.parametrize("text", ["approved", "APPROVED", " Approved"])
def test_approved_chooses_approved_plans_only(text: str) -> None:
    choice = PlanChoice.parse(text)
    assert choice == PlanChoice(approved_only=True)
    assert choice.describe() == "approved plans"


@pytest.mark.parametrize("text", [
    "LUNG_L_1",
    "1.5Gy x 30",
    "Prostate 78Gy",
    "1.2.03",        # not a UID (leading zero): a label
    "12345",          # digits without a dot: a label, not a one-component UID
    "1." + "2" * 63,  # 65 characters: too long for a UID
    "alls",
])
def test_anything_else_is_a_label(text: str) -> None:
    choice = PlanChoice.parse(text)
    assert choice == PlanChoice(label=text)
    assert choice.describe() == f"plans labelled {text!r}"


def test_label_is_trimmed_but_keeps_inner_spaces() -> None:
    """Labels are compared with the stripped RT Plan Label of the archive."""
    assert PlanChoice.parse("  1.5Gy x 30 ") == PlanChoice(label="1.5Gy x 30")


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_plan_is_refused_not_widened_to_all(text: str) -> None:
    with pytest.raises(ValueError, match="--plan needs"):
        PlanChoice.parse(text)


@pytest.mark.parametrize("text", ["2.0", "1.5"])
def test_a_short_dotted_number_is_a_label(text: str) -> None:
    """SOP Instance UIDs have many components; "2.0" is a plan called 2.0."""
    assert PlanChoice.parse(text) == PlanChoice(label=text)


def test_an_empty_plan_on_the_command_line_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:


    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--patient", "X", "--plan", ""])
    assert exit_info.value.code == 2
    assert "--plan needs a UID" in capsys.readouterr().err

