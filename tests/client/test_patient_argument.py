"""``--patient``: an ID matched exactly, never a C-FIND pattern."""

from __future__ import annotations

import pytest

from client.cli import main


@pytest.mark.parametrize("bad", ["RT*", "RT?1", "A\\B", "", "x\ny", "9" * 65])
def test_a_patient_id_c_find_would_read_as_a_pattern_is_refused(
        bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """rtmove matches IDs exactly: '*' would fetch other patients' plans."""
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--patient", bad, "--plan", "all"])
    assert exit_info.value.code == 2
    assert "--patient" in capsys.readouterr().err
