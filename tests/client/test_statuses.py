"""Status codes as sentences: the kind (exit code), whether a retry may help, and the fix.

A wrong kind sends a site engineer to the wrong place (network instead of trust list), a
wrong ``transient`` retries a permanent refusal for minutes, so each branch is pinned.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from client.errors import DicomError, Kind
from client.settings import Settings, from_site
from client.site import default_site
from client.statuses import (
    MoveResult,
    aborted_before_sending,
    find_failure,
    move_failure,
    move_result,
)

DEST = "VMSFD"


@pytest.fixture(name="settings")
def _settings() -> Settings:
    return from_site(default_site())


def _result(status: int, *, completed: int = 0, failed: int = 0, warning: int = 0,
            comment: str = "") -> MoveResult:
    return MoveResult(status, completed, failed, warning, 0, comment=comment)


def _failure(settings: Settings, status: int, destination: str = DEST, *,
             completed: int = 0, failed: int = 0) -> DicomError:
    error = move_failure(settings, destination,
                         _result(status, completed=completed, failed=failed))
    assert error is not None, f"0x{status:04X} should be a failure"
    return error


# --- move_result -----------------------------------------------------------------------------

def _status(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_move_result_reads_counts_and_comment() -> None:
    ds = _status(Status=0xB000, NumberOfCompletedSuboperations=5,
                 NumberOfFailedSuboperations=2, NumberOfWarningSuboperations=1,
                 NumberOfRemainingSuboperations=3, ErrorComment="disk full",
                 FailedSOPInstanceUIDList=["1.2.3.4", "1.2.3.5"])
    result = move_result(ds)
    assert result == MoveResult(0xB000, 5, 2, 1, 3, ("1.2.3.4", "1.2.3.5"), "disk full")
    assert result.counted and not result.uncounted_success
    assert result.sent == 6  # warnings arrived too


def test_move_result_reads_one_failed_uid_given_as_a_string() -> None:
    """A single UID is a str in pydicom, which must not be split into characters."""
    result = move_result(_status(Status=0xB000, FailedSOPInstanceUIDList="1.2.3.4"))
    assert result.failed_uids == ("1.2.3.4",)


def test_move_result_defaults_absent_or_empty_values_to_zero() -> None:
    """Servers leave out counts (or send them empty) on the final response."""
    ds = _status(Status=0x0000, NumberOfCompletedSuboperations=None,
                 FailedSOPInstanceUIDList="")
    result = move_result(ds)
    assert result == MoveResult(0, 0, 0, 0, 0, (), "", counted=False)
    assert result.uncounted_success  # nothing says how many: trust, or look in a folder
    assert all(isinstance(u, str) for u in move_result(
        _status(Status=0, FailedSOPInstanceUIDList=["1.2"])).failed_uids)


# --- move_failure ----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB006, 0xB007])
def test_success_and_warning_are_not_failures(settings: Settings, status: int) -> None:
    """Warnings (sub-operations failed) are judged by the caller from the counts."""
    assert move_failure(settings, DEST, _result(status, completed=3, failed=1)) is None


def test_a801_is_the_unknown_destination_with_the_fix(settings: Settings) -> None:
    error = _failure(settings, 0xA801)
    text = str(error)
    assert error.kind is Kind.DESTINATION
    assert not error.transient
    assert "VMSDBD1 does not know the move destination VMSFD (status 0xA801)" in text
    assert "add VMSFD with its host and port to VMSDBD1's trusted application entities" in text
    assert "--dest" in text


def test_a702_cannot_reach_the_destination_and_may_be_retried(settings: Settings) -> None:
    error = _failure(settings, 0xA702)
    text = str(error)
    assert error.kind is Kind.DESTINATION
    assert error.transient
    assert "VMSDBD1 at 127.0.0.1:5678 could not deliver any object to VMSFD" in text
    assert "(status 0xA702)" in text
    assert "Check that VMSFD is running" in text
    assert "this client listens" not in text


def test_a702_to_this_client_names_its_receive_port(settings: Settings) -> None:
    """--dest self: the server must reach our own Storage SCP, on recv_port."""
    text = str(_failure(settings, 0xA702, destination=settings.aet))
    assert "could not deliver any object to this client" in text
    assert f"(this client listens on port {settings.recv_port})." in text


@pytest.mark.parametrize("status", [0xA700, 0xA701, 0xA7FF])
def test_other_a7xx_is_transient_out_of_resources(settings: Settings, status: int) -> None:
    error = _failure(settings, status, completed=2, failed=1)
    assert error.kind is Kind.UNREACHABLE
    assert error.transient
    assert f"out of resources for the move (status 0x{status:04X})" in str(error)


def test_a7xx_with_only_failures_points_at_the_destination(settings: Settings) -> None:
    """Out of resources with every sub-operation failed: the C-STORE side is the suspect."""
    error = _failure(settings, 0xA701, failed=4)
    assert error.kind is Kind.DESTINATION
    assert error.transient
    assert "could not deliver any object to VMSFD (status 0xA701)" in str(error)


def test_a900_is_a_refused_identifier(settings: Settings) -> None:
    error = _failure(settings, 0xA900)
    assert error.kind is Kind.REFUSED
    assert not error.transient
    assert "refused the move's identifier (status 0xA900, identifier does not match" in str(error)


def test_c000_with_nothing_sent_is_an_unknown_destination_orthanc_style(
        settings: Settings) -> None:
    error = _failure(settings, 0xC000)
    text = str(error)
    assert error.kind is Kind.DESTINATION
    assert not error.transient
    assert "refused the move to VMSFD (status 0xC000, unable to process)" in text
    assert "Orthanc" in text
    assert "check that VMSFD is configured on the server as a move destination" in text


def test_c001_with_zero_suboperations_is_the_daemon_quirk(settings: Settings) -> None:
    """Real DB Daemons answer 0xC001 and send nothing for some objects: the daemon's log,
    not the destination, is where to look."""
    error = _failure(settings, 0xC001)
    text = str(error)
    assert error.kind is Kind.REFUSED
    assert not error.transient
    assert "answered the move with 0xC001 and sent nothing (0 sub-operations)" in text
    assert "daemon's log" in text


def test_c001_after_sub_operations_is_the_generic_c0xx(settings: Settings) -> None:
    error = _failure(settings, 0xC001, failed=2)
    assert error.kind is Kind.DESTINATION
    assert "(status 0xC001, unable to process)" in str(error)


def test_fe00_cancelled_is_transient(settings: Settings) -> None:
    error = _failure(settings, 0xFE00)
    assert error.kind is Kind.UNREACHABLE
    assert error.transient
    assert "cancelled the move (status 0xFE00)" in str(error)


def test_unknown_status_is_a_refusal_with_its_code(settings: Settings) -> None:
    error = _failure(settings, 0x0122)
    assert error.kind is Kind.REFUSED
    assert not error.transient
    assert str(error) == "VMSDBD1 at 127.0.0.1:5678 failed the move with status 0x0122."


@pytest.mark.parametrize("status", [0xA801, 0xA702, 0xA701, 0xA900, 0xC000, 0xC001, 0xFE00,
                                    0x0122])
def test_error_comment_is_quoted(settings: Settings, status: int) -> None:
    """What the server said is kept, word for word, in every failure."""
    result = _result(status, comment="no route to VMSFD")
    error = move_failure(settings, DEST, result)
    assert error is not None
    assert '(the server says: "no route to VMSFD")' in str(error)


def test_no_comment_means_no_quote(settings: Settings) -> None:
    assert "the server says" not in str(_failure(settings, 0xA801))


# --- find_failure ----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "kind", "transient", "words"), [
    (0xA900, Kind.REFUSED, False, "refused the C-FIND at STUDY level (status 0xA900)"),
    (0xC000, Kind.REFUSED, False, "refused the C-FIND at STUDY level (status 0xC000)"),
    (0xCFFF, Kind.REFUSED, False, "does not accept this query"),
    (0xA700, Kind.UNREACHABLE, True, "out of resources for the C-FIND (status 0xA700)"),
    (0xFE00, Kind.UNREACHABLE, True, "cancelled the C-FIND (status 0xFE00)"),
    (0x0122, Kind.REFUSED, False, "failed the C-FIND at STUDY level with status 0x0122"),
])
def test_find_failure_kinds(settings: Settings, status: int, kind: Kind, transient: bool,
                            words: str) -> None:
    error = find_failure(settings, status, Dataset(), "STUDY")
    assert error.kind is kind
    assert error.transient is transient
    assert words in str(error)
    assert str(error).startswith("VMSDBD1 at 127.0.0.1:5678 ")


def test_find_failure_quotes_the_error_comment(settings: Settings) -> None:
    ds = _status(Status=0xC000, ErrorComment="unsupported key")
    assert '(the server says: "unsupported key")' in str(
        find_failure(settings, 0xC000, ds, "SERIES"))


# --- aborts ----------------------------------------------------------------------------------

def test_aborted_before_sending_suspects_the_destination(settings: Settings) -> None:
    error = aborted_before_sending(settings, DEST, 3)
    text = str(error)
    assert error.kind is Kind.DESTINATION
    assert error.transient
    assert "aborted the association 3 time(s) before sending any object to VMSFD" in text
    assert "instead of answering 0xA801" in text
    assert "check that VMSFD is on VMSDBD1's list of move destinations" in text
