"""RT Structure Set Storage: the phantom's organs contoured on every CT slice they cross."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RTStructureSetStorage

from .modules import da, ds_str, new_object, ref, seq
from .phantom import contour_xy
from .recipe import PatientRecipe, StructureSetSpec

# PS3.3 C.8.8.5.3: the retired Detached Study Management class is what the
# RT Referenced Study Sequence has always named; every TPS still writes it.
STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"


def _referenced_frame(ss: StructureSetSpec) -> Dataset:
    ct = ss.ct
    images = [ref(CTImageStorage, uid) for uid in ct.slice_uids]
    series = Dataset()
    series.SeriesInstanceUID = ct.series.uid
    series.ContourImageSequence = seq(images)
    study = ref(STUDY_COMPONENT_CLASS, ct.study.uid)
    study.RTReferencedSeriesSequence = seq([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.frame_of_reference
    frame.RTReferencedStudySequence = seq([study])
    return frame


def structure_set(recipe: PatientRecipe, ss: StructureSetSpec) -> Dataset:
    ds = new_object(recipe, ss.study, ss.series, "RTSTRUCT", RTStructureSetStorage,
                    ss.uid, ss.date, ss.time)
    ds.SeriesDate = da(ss.date)
    ds.SeriesTime = ss.time
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = ss.ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = ss.label
    ds.StructureSetName = ss.label
    ds.StructureSetDate = da(ss.date)
    ds.StructureSetTime = ss.time
    ds.ReferencedFrameOfReferenceSequence = seq([_referenced_frame(ss)])

    geometry = ss.ct.geometry
    rois: list[Dataset] = []
    contours: list[Dataset] = []
    observations: list[Dataset] = []
    for number, organ in enumerate(recipe.anatomy.organs, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = ss.ct.frame_of_reference
        roi.ROIName = organ.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC" if organ.name == "BODY" else "MANUAL"
        rois.append(roi)

        items: list[Dataset] = []
        for k, sop_uid in enumerate(ss.ct.slice_uids):
            z = geometry.z(k)
            section = organ.section(z)
            if section is None:
                continue
            # z written exactly as the slice's ImagePositionPatient z, so every
            # point lies on the plane of the image it references.
            z_text = ds_str(z)
            vertices = contour_xy(section)
            item = Dataset()
            item.ContourImageSequence = seq([ref(CTImageStorage, sop_uid)])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(vertices)
            item.ContourNumber = len(items) + 1
            item.ContourData = [v for x, y in vertices for v in (f"{x:.2f}", f"{y:.2f}", z_text)]
            items.append(item)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(organ.colour)
        roi_contour.ContourSequence = seq(items)
        roi_contour.ReferencedROINumber = number
        contours.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = organ.interpreted_type
        obs.ROIInterpreter = recipe.people.operator.pn
        observations.append(obs)
    ds.StructureSetROISequence = seq(rois)
    ds.ROIContourSequence = seq(contours)
    ds.RTROIObservationsSequence = seq(observations)
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate = da(ss.date)
    ds.ReviewTime = ss.time
    ds.ReviewerName = recipe.people.reviewer.pn
    return ds
