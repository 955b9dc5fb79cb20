"""The SOP classes the daemons serve, from the real DB Daemon's conformance statement."""

from __future__ import annotations

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, register_uid
from pynetdicom.service_class import StorageServiceClass

from client.site import Model

# Varian's private treatment record class; a real archive may hand it out.
LTARCHIVE_RT_TREATMENT_RECORD = UID("1.2.246.352.70.1.10")

# Storage SOP classes the DB Daemon imports and the File Daemon writes.
STORAGE: dict[str, UID] = {
    "CT Image": UID("1.2.840.10008.5.1.4.1.1.2"),
    "Enhanced CT Image": UID("1.2.840.10008.5.1.4.1.1.2.1"),
    "MR Image": UID("1.2.840.10008.5.1.4.1.1.4"),
    "Enhanced MR Image": UID("1.2.840.10008.5.1.4.1.1.4.1"),
    "PET Image": UID("1.2.840.10008.5.1.4.1.1.128"),
    "Enhanced PET Image": UID("1.2.840.10008.5.1.4.1.1.130"),
    "CR Image": UID("1.2.840.10008.5.1.4.1.1.1"),
    "Secondary Capture Image": UID("1.2.840.10008.5.1.4.1.1.7"),
    "RT Image": UID("1.2.840.10008.5.1.4.1.1.481.1"),
    "RT Dose": UID("1.2.840.10008.5.1.4.1.1.481.2"),
    "RT Structure Set": UID("1.2.840.10008.5.1.4.1.1.481.3"),
    "RT Beams Treatment Record": UID("1.2.840.10008.5.1.4.1.1.481.4"),
    "RT Plan": UID("1.2.840.10008.5.1.4.1.1.481.5"),
    "RT Brachy Treatment Record": UID("1.2.840.10008.5.1.4.1.1.481.6"),
    "RT Treatment Summary Record": UID("1.2.840.10008.5.1.4.1.1.481.7"),
    "RT Ion Plan": UID("1.2.840.10008.5.1.4.1.1.481.8"),
    "RT Ion Beams Treatment Record": UID("1.2.840.10008.5.1.4.1.1.481.9"),
    "Spatial Registration": UID("1.2.840.10008.5.1.4.1.1.66.1"),
    "Deformable Spatial Registration": UID("1.2.840.10008.5.1.4.1.1.66.3"),
    "LTArchive RT Treatment Record": LTARCHIVE_RT_TREATMENT_RECORD,
}

VERIFICATION = UID("1.2.840.10008.1.1")

QUERY_RETRIEVE: dict[Model, UID] = {
    Model.STUDY_FIND: UID("1.2.840.10008.5.1.4.1.2.2.1"),
    Model.STUDY_MOVE: UID("1.2.840.10008.5.1.4.1.2.2.2"),
    Model.STUDY_GET: UID("1.2.840.10008.5.1.4.1.2.2.3"),
    Model.PATIENT_FIND: UID("1.2.840.10008.5.1.4.1.2.1.1"),
    Model.PATIENT_MOVE: UID("1.2.840.10008.5.1.4.1.2.1.2"),
    Model.PATIENT_GET: UID("1.2.840.10008.5.1.4.1.2.1.3"),
}
MODEL_OF_UID: dict[str, Model] = {str(uid): model for model, uid in QUERY_RETRIEVE.items()}

# Storage SCP transfer syntaxes, in the order an acceptor picks from what is proposed
# (pynetdicom takes the first of *its* list the requestor offers). Explicit VR LE
# first, as DCMTK's storescp does; Implicit VR LE last, since a sender offering it
# besides another syntax nearly always holds the object in that other one.
STORAGE_TRANSFER_SYNTAXES: list[str] = [
    str(ExplicitVRLittleEndian),
    *(str(ts) for ts in ALL_TRANSFER_SYNTAXES
      if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    str(ImplicitVRLittleEndian),
]

_registered = False


def register_private_classes() -> None:
    """Teach pynetdicom the private storage class, once per process."""
    global _registered
    if not _registered:
        register_uid(LTARCHIVE_RT_TREATMENT_RECORD, "LTArchiveRTTreatmentRecordStorage",
                     StorageServiceClass)
        _registered = True
