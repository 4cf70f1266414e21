"""The report's measurements as a DICOM Structured Report (TID 1500 Measurement Report) on the SEG.

A PACS keeps and queries numbers in this form. The numbers are report.json's, copied, never
recomputed: one volume group (TID 1411) per segment of the SEG (whole liver, vessels, tumor burden),
then two groups per lesion that share its tracking identifier ("Lesion 1" is report.json's lesion
1): its volume (TID 1411, on the Tumors segment, of which the lesion is one connected piece) and its
longest axial diameter (TID 1410, SCT "Long axis", on the line between its two end points in the
series' frame of reference: LPS millimetres, DICOM's patient coordinates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lvt.io.dicom_seg import MANUFACTURER, Algorithm, coded
from lvt.labels import STRUCTURES, TUMOR, Structure

if TYPE_CHECKING:
    import highdicom
    from pydicom import Dataset

SR_FILE = "measurements_sr.dcm"
SR_SERIES_NUMBER = 9902
MILLILITRE = ("UCUM", "mL", "milliliter")
MILLIMETRE = ("UCUM", "mm", "millimeter")
VOLUME = ("SCT", "118565006", "Volume")
LONG_AXIS = ("SCT", "103339001", "Long axis")


def _volumes_ml(report: Mapping) -> dict[str, float]:
    """Each class's volume in report.json, by :data:`lvt.labels.STRUCTURES` key (the liver whole)."""
    return {"liver": report["liver"]["whole_volume_ml"], "vessel": report["vessels"]["volume_ml"],
            "tumor": report["tumors"]["total_volume_ml"]}


def build_measurement_report(report: Mapping, segmentation: Dataset, sources: Sequence[Dataset],
                             algorithm: Algorithm) -> highdicom.sr.Comprehensive3DSR:
    """The TID 1500 report of report.json's volumes and lesions, referencing the SEG's segments.

    Args:
        report: report.json's content (:func:`lvt.measure.report.build_report`).
        segmentation: the SEG written for the same labels (:func:`lvt.io.dicom_seg.build_segmentation`).
        sources: the CT series' headers (the SEG's source images).
        algorithm: the model, named as the observing device and in each group.
    """
    import highdicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    numbers = {item.SegmentLabel: int(item.SegmentNumber) for item in segmentation.SegmentSequence}
    device = highdicom.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[MANUFACTURER, algorithm.name, algorithm.version, algorithm.weights_sha256]),
        name=algorithm.name, manufacturer_name=MANUFACTURER, model_name=f"{algorithm.name} {algorithm.version}"[:64])
    context = highdicom.sr.ObservationContext(observer_device_context=highdicom.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    volumes = _volumes_ml(report)
    groups = [_group(segmentation, numbers[s.segment_name], s.segment_name, s, algorithm,
                     [_measurement(VOLUME, volumes[s.key], MILLILITRE)])
              for s in STRUCTURES if s.segment_name in numbers]
    for lesion in report["lesions"]:
        groups += _lesion_groups(lesion, segmentation, numbers[STRUCTURES[TUMOR].segment_name],
                                 sources[0].FrameOfReferenceUID, algorithm)
    content = highdicom.sr.MeasurementReport(
        observation_context=context, procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups)
    return highdicom.sr.Comprehensive3DSR(
        evidence=[segmentation, *sources], content=content, series_instance_uid=highdicom.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=highdicom.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description="LVT measurements")


def _group(segmentation: Dataset, segment_number: int, identifier: str, structure: Structure, algorithm: Algorithm,
           measurements: list[highdicom.sr.Measurement]
           ) -> highdicom.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """One TID 1411 group: what was found (the segment's type, in the liver), where (the segment), how much."""
    import highdicom

    return highdicom.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=highdicom.sr.TrackingIdentifier(uid=highdicom.UID(), identifier=identifier),
        referenced_segment=highdicom.sr.ReferencedSegment.from_segmentation(segmentation, segment_number),
        measurements=measurements, **_finding(structure, algorithm))


def _lesion_groups(lesion: Mapping, segmentation: Dataset, tumor_segment: int, frame_of_reference_uid: str,
                   algorithm: Algorithm) -> list:
    """A lesion's volume group (on the Tumors segment) and its long-axis group (on the line), one tracking id."""
    import highdicom

    tumor = STRUCTURES[TUMOR]
    tracking = highdicom.sr.TrackingIdentifier(uid=highdicom.UID(), identifier=f"Lesion {lesion['id']}")
    line = highdicom.sr.ImageRegion3D(
        graphic_type=highdicom.sr.GraphicTypeValues3D.POLYLINE,
        graphic_data=np.asarray(lesion["long_axis_endpoints_lps_mm"], dtype=float),
        frame_of_reference_uid=frame_of_reference_uid)
    return [
        highdicom.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=highdicom.sr.ReferencedSegment.from_segmentation(segmentation, tumor_segment),
            measurements=[_measurement(VOLUME, lesion["volume_ml"], MILLILITRE)], **_finding(tumor, algorithm)),
        highdicom.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=line,
            measurements=[_measurement(LONG_AXIS, lesion["longest_axial_diameter_mm"], MILLIMETRE)],
            **_finding(tumor, algorithm)),
    ]


def _finding(structure: Structure, algorithm: Algorithm) -> dict:
    """What a group found: the structure's type, in its anatomic region, by the model."""
    import highdicom

    region = structure.anatomic_region
    return {"finding_type": coded(structure.type),
            "finding_sites": [highdicom.sr.FindingSite(coded(region))] if region else None,
            "algorithm_id": highdicom.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)}


def _measurement(name: tuple[str, str, str], value: float, unit: tuple[str, str, str]) -> highdicom.sr.Measurement:
    import highdicom

    return highdicom.sr.Measurement(name=coded(name), value=float(value), unit=coded(unit))
