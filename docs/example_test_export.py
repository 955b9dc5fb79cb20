"""Testing an export against dbdsim's emulated Aria daemons: no Aria, no conftest.

The "export tool" here is DCMTK's movescu; put your own command (Python, C#, a shell
script) in its place. dbdsim's pytest plugin gives the fixtures and markers.
"""

import subprocess

import pytest

from emulators.faults import AssociationFaults, DBDaemonFaults, Faults


def dcmtk(*argv, site):
    """Run a DCMTK tool; its output (stdout and stderr together) in ``.stdout``."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=site.env, timeout=60, check=False)


def echo(site):
    return dcmtk("echoscu", "-aet", site.client_aet, "-aec", site.db_aet,
                 site.db_host, str(site.db_port), site=site)


def export_plan(site, plan):
    """The export under test: one C-MOVE of the plan's collection to the File Daemon."""
    return dcmtk("movescu", "-S", "-aet", site.client_aet, "-aec", site.db_aet,
                 "-aem", site.fd_aet, "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", "SOPInstanceUID=" + "\\".join(sorted(plan.uids)),
                 site.db_host, str(site.db_port), site=site)


@pytest.mark.dbd_archive(seed=7, patients=2, profile="messy")
def test_movescu_delivers_the_whole_collection(dbd_site, synthetic_archive):
    plan = synthetic_archive.collection(patient=1, plan=0)

    done = export_plan(dbd_site, plan)

    assert done.returncode == 0, done.stdout
    # What a correct export delivers, e.g. {"CT": 8, "RTDOSE": 1, "RTPLAN": 1, "RTSTRUCT": 1}
    assert dbd_site.files(plan.patient_id) == plan.files_by_modality()


@pytest.mark.dbd_scenario("happy-one-plan")
def test_a_catalog_scenario_sets_the_stage(db_daemon, dbd_site, synthetic_archive):
    plan = synthetic_archive.collection()
    assert dbd_site.db_aet == db_daemon.ae_title == "VMSDBD1"

    export_plan(dbd_site, plan)

    assert dbd_site.files(plan.patient_id) == plan.files_by_modality()


def test_a_rejected_association_is_reported(db_daemon, dbd_site, dbd_faults):
    # Rejected (permanent, service user, called AE title not recognized), once.
    dbd_faults(Faults(db_daemon=DBDaemonFaults(
        association=AssociationFaults(reject=(1, 1, 7), times=1))))

    first, second = echo(dbd_site), echo(dbd_site)

    assert first.returncode != 0 and "Association Rejected" in first.stdout
    assert second.returncode == 0, second.stdout
    # The daemons are yours: fault them (or heal them) directly, too.
    db_daemon.inject(DBDaemonFaults())
