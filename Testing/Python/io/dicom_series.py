"""DICOM series written with pydicom for the DICOM output tests, so they run without the shared data too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import rotation

from lvt.image import Image
from lvt.labels import exclusive_labels
from lvt.phantom import PhantomConfig, make_phantom


def write_ct_series(folder: Path, ct: Image, *, tilt_mm_per_slice: float = 0.0) -> list[str]:
    """Write ``ct`` as single-frame CT Image Storage files (int16 HU); their SOPInstanceUIDs in slice order.

    File names are the UIDs, so their alphabetical order is not the slice order. ``tilt_mm_per_slice``
    moves each slice along the column direction, as a gantry tilt does (a sheared grid).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    matrix = ct.ijk_to_lps_matrix()
    uids = []
    for k, plane in enumerate(ct.array):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        uid = generate_uid()
        ds.update({"SOPClassUID": CTImageStorage, "SOPInstanceUID": uid, "StudyInstanceUID": study,
                   "SeriesInstanceUID": series, "FrameOfReferenceUID": frame_of_reference, "Modality": "CT",
                   "PatientName": "Phantom^LVT", "PatientID": "LVT-1", "PatientBirthDate": "", "PatientSex": "O",
                   "StudyDate": "20260101", "StudyTime": "120000", "StudyID": "1", "AccessionNumber": "A1",
                   "ReferringPhysicianName": "", "SeriesNumber": 3, "InstanceNumber": k + 1,
                   "Manufacturer": "test", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]})
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        position = matrix[:3, 3] + matrix[:3, 2] * k + ct.direction[:, 1] * tilt_mm_per_slice * k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*ct.direction[:, 0], *ct.direction[:, 1])]
        ds.PixelSpacing = [f"{ct.spacing_mm[1]:g}", f"{ct.spacing_mm[0]:g}"]
        ds.SliceThickness = f"{ct.spacing_mm[2]:g}"
        ds.update({"Rows": plane.shape[0], "Columns": plane.shape[1], "SamplesPerPixel": 1,
                   "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16, "BitsStored": 16,
                   "HighBit": 15, "PixelRepresentation": 1, "RescaleIntercept": "0", "RescaleSlope": "1"})
        ds.PixelData = np.round(plane).astype(np.int16).tobytes()
        ds.save_as(folder / f"{uid}.dcm", enforce_file_format=True)
        uids.append(uid)
    return uids


def write_phantom_series(folder: Path) -> tuple[Image, list[str]]:
    """A coarse phantom (liver, vessels, two lesions) on an oblique grid, written as a DICOM series.

    Returns:
        The exact label map on the phantom's grid, and the slices' SOPInstanceUIDs in slice order.
    """
    config = PhantomConfig(seed=7, spacing_mm=(5.0, 5.0, 6.0), field_of_view_mm=(320.0, 260.0, 200.0),
                           direction=tuple(map(tuple, rotation(2, 20.0))), n_tumors=(2, 2),
                           tumor_diameter_mm=(20.0, 45.0), noise_hu=5.0)
    phantom = make_phantom(config)
    uids = write_ct_series(folder, phantom.image)
    return phantom.image.with_array(exclusive_labels(phantom.truth)), uids
