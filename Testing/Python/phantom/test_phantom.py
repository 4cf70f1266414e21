"""Tests of lvt.phantom: determinism, anatomy, HU by phase, grid independence."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rotation
from scipy import ndimage

from lvt.labels import LIVER, TUMOR, VESSEL, exclusive_labels
from lvt.phantom import PhantomConfig, make_phantom

COARSE = (5.0, 5.0, 5.0)


def _liver_stats(phantom) -> tuple[float, np.ndarray]:
    """Liver volume (mL) and centroid (LPS mm)."""
    k, j, i = np.nonzero(phantom.truth[LIVER])
    centroid = phantom.image.ijk_to_lps(np.stack([i, j, k], axis=1).astype(float)).mean(axis=0)
    return float(phantom.truth[LIVER].sum() * phantom.image.voxel_volume_ml), centroid



@pytest.fixture(scope="module")
def portal_phantom():
    """A 3 mm portal-venous phantom with modest noise, shared by the HU tests."""
    return make_phantom(PhantomConfig(seed=2, spacing_mm=(3.0, 3.0, 3.0), noise_hu=10.0, n_tumors=(3, 3)))


def test_same_seed_gives_identical_phantoms_and_other_seeds_differ():
    config = PhantomConfig(seed=3, spacing_mm=COARSE)
    first, second = make_phantom(config), make_phantom(config)
    assert np.array_equal(first.image.array, second.image.array)
    assert np.array_equal(first.truth, second.truth)
    assert [lesion.centre_lps_mm for lesion in first.lesions] == [lesion.centre_lps_mm for lesion in second.lesions]
    other = make_phantom(PhantomConfig(seed=4, spacing_mm=COARSE))
    overlap = (first.truth[LIVER] & other.truth[LIVER]).sum()
    dice = 2 * overlap / (first.truth[LIVER].sum() + other.truth[LIVER].sum())
    assert dice < 0.97
    assert not np.array_equal(first.image.array, other.image.array)


def test_image_and_truth_have_the_documented_types(portal_phantom):
    image, truth = portal_phantom.image, portal_phantom.truth
    assert image.array.dtype == np.float32
    assert truth.dtype == bool and truth.shape == (3, *image.array.shape)
    assert image.array.shape == (83, 100, 120)  # field of view 360 x 300 x 250 mm at 3 mm, as (Z, Y, X)
    assert np.allclose(image.direction, np.eye(3))
    assert np.array_equal(portal_phantom.labels, exclusive_labels(truth))
    assert set(np.unique(portal_phantom.labels)) == {0, 1, 2, 3}


def test_truth_hierarchy_puts_vessels_and_tumors_inside_the_liver(portal_phantom):
    truth = portal_phantom.truth
    assert truth[VESSEL].any() and truth[TUMOR].any()
    assert not (truth[VESSEL] & ~truth[LIVER]).any()
    assert not (truth[TUMOR] & ~truth[LIVER]).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_liver_sits_on_the_patient_right_with_a_realistic_volume(seed):
    phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=COARSE, n_tumors=(0, 0)))
    volume_ml, centroid = _liver_stats(phantom)
    body = phantom.image.array > -300
    k, j, i = np.nonzero(body)
    body_centre = phantom.image.ijk_to_lps(np.stack([i, j, k], axis=1).astype(float)).mean(axis=0)
    assert centroid[0] < body_centre[0] - 20.0  # patient right is -x in LPS
    assert centroid[1] < body_centre[1] + 10.0  # anterior half (y grows posteriorly)
    assert 1200.0 <= volume_ml <= 2500.0


def test_same_seed_on_an_oblique_flipped_anisotropic_grid_is_the_same_patient():
    straight = make_phantom(PhantomConfig(seed=7, spacing_mm=(3.0, 3.0, 3.0), n_tumors=(2, 2)))
    direction = rotation(2, 20.0) @ rotation(0, 12.0) @ np.diag([-1.0, 1.0, -1.0])
    oblique = make_phantom(PhantomConfig(seed=7, spacing_mm=(2.5, 3.0, 5.0), field_of_view_mm=(400, 360, 300),
                                         direction=direction, n_tumors=(2, 2)))
    assert np.allclose(oblique.image.direction, direction)
    volume_a, centroid_a = _liver_stats(straight)
    volume_b, centroid_b = _liver_stats(oblique)
    assert abs(volume_a - volume_b) / volume_a < 0.02
    assert np.linalg.norm(centroid_a - centroid_b) < 2.5  # well within one voxel
    assert [lesion.centre_lps_mm for lesion in straight.lesions] == [lesion.centre_lps_mm for lesion in oblique.lesions]


def test_a_cropped_field_of_view_shows_the_same_voxels():
    full = make_phantom(PhantomConfig(seed=3, spacing_mm=(4.0, 4.0, 4.0), field_of_view_mm=(360, 300, 248)))
    # Centre chosen so the crop's voxel centres fall on the full grid, starting at full index (10, 15, 16).
    crop = make_phantom(PhantomConfig(seed=3, spacing_mm=(4.0, 4.0, 4.0), field_of_view_mm=(160, 160, 120),
                                      center_lps_mm=(-60.0, -10.0, 0.0)))
    assert np.allclose(crop.image.origin_lps_mm, full.image.ijk_to_lps(np.array([10, 15, 16]))[0])
    same = crop.truth == full.truth[:, 16:46, 15:55, 10:50]
    assert crop.truth[LIVER].sum() > 1000 and same.mean() > 0.999


def test_config_round_trips_through_a_dictionary():
    config = PhantomConfig(seed=4, direction=np.diag([-1.0, 1.0, -1.0]), n_tumors=[1, 2], phase="late")
    assert PhantomConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        PhantomConfig.from_dict({"seed": 1, "colour": "red"})


def test_other_phases_and_lesion_counts_keep_the_patient():
    portal = make_phantom(PhantomConfig(seed=8, spacing_mm=COARSE, n_tumors=(2, 2)))
    plain = make_phantom(PhantomConfig(seed=8, spacing_mm=COARSE, n_tumors=(2, 2), phase="unenhanced"))
    more = make_phantom(PhantomConfig(seed=8, spacing_mm=COARSE, n_tumors=(4, 4)))
    assert np.array_equal(portal.truth[LIVER], plain.truth[LIVER])
    assert np.array_equal(portal.truth[LIVER], more.truth[LIVER])
    assert [lesion.centre_lps_mm for lesion in more.lesions[:2]] == [lesion.centre_lps_mm for lesion in portal.lesions]


@pytest.mark.parametrize(("phase", "liver_range"), [
    ("portal_venous", (100, 130)), ("arterial", (80, 100)), ("late", (85, 105)), ("unenhanced", (55, 65)),
])
def test_tissue_hu_follow_the_phase(phase, liver_range):
    phantom = make_phantom(PhantomConfig(seed=1, spacing_mm=(4.0, 4.0, 4.0), phase=phase, noise_hu=10.0,
                                         n_tumors=(0, 0)))
    hu = phantom.tissue_hu
    assert liver_range[0] <= hu["liver"] <= liver_range[1]
    assert -120 <= hu["fat"] <= -80 and 40 <= hu["muscle"] <= 60
    parenchyma = ndimage.binary_erosion(phantom.labels == 1, iterations=1)
    measured = float(np.median(phantom.image.array[parenchyma]))
    assert abs(measured - hu["liver"]) < 6.0
    vessel_hu = float(np.median(phantom.image.array[phantom.truth[VESSEL]]))
    if phase == "portal_venous":
        assert 150 <= hu["portal_vein"] <= 200 and 130 <= hu["hepatic_vein"] <= 180
        assert vessel_hu > measured + 15.0  # vessels brighter than parenchyma
    if phase == "unenhanced":
        assert vessel_hu < measured  # unenhanced blood is darker than liver


def test_measured_hu_of_body_tissues(portal_phantom):
    image, hu = portal_phantom.image.array, portal_phantom.tissue_hu
    outside = image[:, :3, :]  # anterior rows in front of the body: air
    assert abs(float(np.median(outside)) + 1000.0) < 15.0
    subcutaneous = (image > -160) & (image < -40)
    assert subcutaneous.mean() > 0.05  # plenty of fat
    assert hu["bone_cortical"] >= 700 and (image > 500).any()  # the skeleton is there


def test_lesions_lie_inside_the_liver_and_match_their_kind(portal_phantom):
    phantom = portal_phantom
    assert len(phantom.lesions) == 3
    liver_hu = phantom.tissue_hu["liver"]
    for lesion in phantom.lesions:
        i, j, k = np.rint(phantom.image.lps_to_ijk(np.array(lesion.centre_lps_mm))[0]).astype(int)
        assert phantom.truth[LIVER][k, j, i] and phantom.truth[TUMOR][k, j, i]
        assert 5.0 <= lesion.diameter_mm <= 80.0
        if lesion.kind == "metastasis":
            assert 30.0 <= liver_hu - lesion.core_hu <= 60.0
        elif lesion.kind == "cyst":
            assert 0.0 <= lesion.core_hu <= 20.0
        else:
            assert 5.0 <= liver_hu - lesion.core_hu <= 20.0  # HCC washes out in the portal venous phase


@pytest.mark.parametrize(("kind", "phase", "sign"), [("metastasis", "portal_venous", -1), ("cyst", "portal_venous", -1),
                                                     ("hcc", "arterial", 1)])
def test_phantom_lesions_are_darker_or_brighter_as_designed(kind, phase, sign):
    phantom = make_phantom(PhantomConfig(seed=9, spacing_mm=(3.0, 3.0, 3.0), phase=phase, noise_hu=10.0,
                                         n_tumors=(3, 3), tumor_kinds=(kind,), tumor_diameter_mm=(20.0, 40.0)))
    tumor = ndimage.binary_erosion(phantom.truth[TUMOR], iterations=1)
    assert tumor.sum() > 20
    liver = float(np.median(phantom.image.array[phantom.labels == 1]))
    lesion = float(np.median(phantom.image.array[tumor]))
    assert sign * (lesion - liver) > 15.0


def test_noise_has_the_requested_level():
    config = PhantomConfig(seed=5, spacing_mm=COARSE, noise_hu=12.0, noise_correlation_voxels=0.7)
    noisy = make_phantom(config).image.array
    clean = make_phantom(PhantomConfig(seed=5, spacing_mm=COARSE, noise_hu=0.0)).image.array
    inside = np.abs(clean) < 500  # no clipping at -1024 here
    assert abs(float(np.std((noisy - clean)[inside])) - 12.0) < 0.6


@pytest.mark.parametrize("arguments", [
    {"phase": "venous"}, {"n_tumors": (3, 1)}, {"spacing_mm": (1.0, 0.0, 1.0)}, {"seed": -1},
    {"direction": np.diag([1.0, 2.0, 1.0])}, {"tumor_kinds": ("adenoma",)}, {"noise_hu": -1.0},
    {"liver_volume_ml": (100.0, 200.0)},
])
def test_config_rejects_invalid_values(arguments):
    with pytest.raises(ValueError):
        PhantomConfig(**arguments)
