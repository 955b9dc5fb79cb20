"""A peer's A-RELEASE-RQ right behind its C-FIND: answered at once, not aborted later.

pynetdicom's Q/R services look for a release request between matches with a call that
takes the request off the queue, so the association's reactor never saw it: the release
was not answered and the DB Daemon aborted the association at its network timeout.
Found by the long fuzz run (a C-FIND and an A-RELEASE-RQ sent back to back).
"""

from __future__ import annotations

import time
from pathlib import Path

from daemons import running_daemons, small_archive
from hardening import fuzz_pdus as fp
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from client.site import Timeouts

NETWORK = 3.0  # the DB Daemon's network timeout here, seconds
FIND_CONTEXT = 3  # Study Root FIND, Implicit VR Little Endian (fuzz_pdus' contexts)


def _image_query(study: str, series: str) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, ""
    data = encode(ds, True, True)
    assert data is not None
    return data


def test_a_release_behind_a_find_is_answered(tmp_path: Path) -> None:
    """A 100-match C-FIND and an A-RELEASE-RQ in one write, five times: each time the
    release is answered (A-RELEASE-RP) well within the network timeout."""
    archive = small_archive(patients=1, slices=100, size=16)
    try:
        study, series = archive.index.query(
            "SELECT st.study_uid, se.series_uid FROM series se JOIN study st"
            " ON se.study_pk = st.pk WHERE se.modality = 'CT'")[0]
        rq = fp.AssociateRQ(called=b"VMSDBD1", calling=b"DCMTK",
                            contexts=(fp.Context(FIND_CONTEXT, fp.STUDY_FIND, (fp.IMPLICIT,)),))
        find = fp.message(FIND_CONTEXT, fp.command_set(fp.find_rq()),
                          _image_query(study, series))
        with running_daemons(tmp_path, archive,
                             timeouts=Timeouts(acse=NETWORK, dimse=NETWORK,
                                               network=NETWORK)) as (_site, dbd, _fd):
            for _ in range(5):
                with fp.Peer(dbd.port, time.monotonic() + 3 * NETWORK) as peer:
                    accepted = fp.associate(peer, rq, fp.Timing(network=NETWORK, margin=0.0))
                    assert isinstance(accepted, fp.Accepted), accepted
                    sent = time.monotonic()
                    assert peer.send(find + fp.RELEASE_RQ_PDU)
                    answer = peer.read()
                    while answer.kind == fp.P_DATA_TF:  # the matches sent before it looked
                        answer = peer.read()
                    assert answer.kind == fp.RELEASE_RP, answer
                    assert answer.at - sent < NETWORK / 2
    finally:
        archive.close()
