"""Tests for lvt.followup: lesion follow-up on phantom pairs with known changes, RECIST 1.1, and `lvt compare`.

The two studies' segmentations are ground-truth label maps of one phantom patient (no model is
run) with spherical lesions painted in at known places and radii. The follow-up is rendered on
another grid (other spacing, flipped axes) and moved by a known rigid or affine motion (see
test_registration.py), so matching must go through the registration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import rotation
from scipy import ndimage

from lvt.cli.main import run
from lvt.followup.compare import CompareConfig, follow_up
from lvt.followup.document import followup_document
from lvt.followup.recist import RecistConfig, recist_category, select_targets
from lvt.followup.studies import Study
from lvt.image import Image
from lvt.io import write_image
from lvt.measure.volumes_and_lesions import AxialDiameters, Lesion
from lvt.phantom import PhantomConfig, make_phantom

FIELD_OF_VIEW_MM = (240.0, 200.0, 190.0)
CENTRE_LPS_MM = (0.0, -8.0, -12.0)
FLIPPED_LR_AP = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
LESION_HU = 35.0




MOTION_ROTATION = rotation(2, 8.0) @ rotation(0, -5.0)
MOTION_TRANSLATION_MM = np.array([12.0, -7.0, 9.0])


def _patient(spacing_mm, direction=None) -> tuple[Image, Image]:
    """(CT, exclusive labels) of the tumor-free phantom patient 3 on a coarse grid."""
    phantom = make_phantom(PhantomConfig(seed=3, spacing_mm=spacing_mm, field_of_view_mm=FIELD_OF_VIEW_MM,
                                         center_lps_mm=CENTRE_LPS_MM, direction=direction, n_tumors=(0, 0),
                                         noise_hu=12.0))
    return phantom.image, phantom.image.with_array(phantom.labels)


def _centres(grid: Image) -> np.ndarray:
    k, j, i = np.indices(grid.array.shape)
    return grid.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.array.shape, 3)


def _with_spheres(study: tuple[Image, Image], spheres) -> tuple[Image, Image]:
    """Paint lesions (centre LPS mm, radius mm) into CT and labels, inside the liver."""
    ct, labels = study
    ct_array, label_array = ct.array.copy(), labels.array.copy()
    points = _centres(labels)
    for centre, radius in (sphere for sphere in spheres if sphere[1] > 0):
        inside = (np.linalg.norm(points - np.asarray(centre), axis=-1) <= radius) & (label_array > 0)
        label_array[inside], ct_array[inside] = 3, LESION_HU
    return ct.with_array(ct_array), labels.with_array(label_array)


def _moved(image: Image, scale=(1.0, 1.0, 1.0)) -> Image:
    """The same voxels with the patient moved by the known motion (and scaled along the grid axes)."""
    return Image(image.array, tuple(np.asarray(image.spacing_mm) * scale),
                 tuple(MOTION_ROTATION @ np.asarray(image.origin_lps_mm) + MOTION_TRANSLATION_MM),
                 MOTION_ROTATION @ image.direction)


def _study(name: str, study: tuple[Image, Image]) -> Study:
    return Study.of(name, Path(name), study[1], study[0])


@pytest.fixture(scope="module")
def baseline_patient() -> tuple[Image, Image]:
    return _patient((3.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def sites(baseline_patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three far-apart LPS points at least 24 mm deep inside the liver."""
    labels = baseline_patient[1]
    depth = ndimage.distance_transform_edt(labels.array > 0, sampling=labels.spacing_mm[::-1])
    deep = _centres(labels)[depth > 24.0]
    chosen = [deep[len(deep) // 2]]
    for _ in range(2):
        distance = np.min([np.linalg.norm(deep - point, axis=1) for point in chosen], axis=0)
        chosen.append(deep[np.argmax(distance)])
    return tuple(chosen)  # type: ignore[return-value]


def _in_plane_diagonal_mm(grid: Image) -> float:
    axis = grid.axial_axis()
    return float(np.hypot(*[s for n, s in enumerate(grid.spacing_mm) if n != axis]))


def _assert_sphere_measured(study: Study, lesion_id: int, radius_mm: float) -> None:
    """Diameter within one in-plane voxel diagonal, volume within half a voxel layer of the sphere."""
    lesion = next(lesion for lesion in study.measurements.lesions if lesion.id == lesion_id)
    assert lesion.diameters.longest_mm == pytest.approx(2 * radius_mm, abs=_in_plane_diagonal_mm(study.labels))
    half_layer_ml = 4 * np.pi * radius_mm**2 * max(study.labels.spacing_mm) / 2 / 1000.0
    assert lesion.volume_ml == pytest.approx(4 / 3 * np.pi * radius_mm**3 / 1000.0, abs=half_layer_ml)


def test_grown_vanished_and_new_lesions_through_a_rigid_motion_and_another_grid(baseline_patient, sites) -> None:
    a, b, c = sites
    baseline = _study("baseline", _with_spheres(baseline_patient, [(a, 10.0), (b, 7.0)]))
    moved = _with_spheres(_patient((3.5, 3.5, 5.0), FLIPPED_LR_AP), [(a, 14.0), (c, 8.0)])
    followup = _study("follow-up", (_moved(moved[0]), _moved(moved[1])))
    document = followup_document(follow_up([baseline, followup]))
    assert document["registrations"][1]["accepted"]
    comparison = document["comparisons"][0]
    (grown,) = comparison["matched"]
    (vanished,) = comparison["vanished"]
    (new,) = comparison["new"]
    assert (grown["track"], vanished["track"], new["track"]) == (1, 2, 3)
    _assert_sphere_measured(baseline, 1, 10.0)
    _assert_sphere_measured(baseline, 2, 7.0)
    _assert_sphere_measured(followup, grown["lesion_ids"][1][0], 14.0)
    _assert_sphere_measured(followup, new["lesion_ids"][0], 8.0)
    coarser_voxel = max(_in_plane_diagonal_mm(baseline.labels), _in_plane_diagonal_mm(followup.labels))
    assert grown["diameter_change_mm"] == pytest.approx(8.0, abs=coarser_voxel)
    true_growth_ml = 4 / 3 * np.pi * (14.0**3 - 10.0**3) / 1000.0
    assert grown["volume_change_ml"] == pytest.approx(true_growth_ml, rel=0.15)
    assert abs(document["liver_volume"][1]["change_from_baseline_percent"]) < 2.0  # the same liver
    recist = comparison["recist"]
    assert recist["category"] == "PD" and recist["new_lesion_tracks"] == [3]
    assert recist["target_tracks"] == [1, 2]
    assert recist["sum_of_longest_diameters_mm"]["current"] == pytest.approx(grown["longest_axial_diameter_mm"][1])
    json.dumps(document, allow_nan=False)


def test_lesions_are_matched_through_an_affine_motion(baseline_patient, sites) -> None:
    a, b, _ = sites
    baseline = _study("baseline", _with_spheres(baseline_patient, [(a, 10.0), (b, 7.0)]))
    rendered = _with_spheres(_patient((3.5, 3.5, 5.0), FLIPPED_LR_AP), [(a, 10.0), (b, 7.0)])
    scale = (1.06, 0.95, 1.03)
    followup = _study("follow-up", (_moved(rendered[0], scale), _moved(rendered[1], scale)))
    result = follow_up([baseline, followup])
    comparison = followup_document(result)["comparisons"][0]
    assert [m["track"] for m in comparison["matched"]] == [1, 2]
    assert comparison["new"] == comparison["vanished"] == []
    # Each follow-up lesion's centre maps back onto its baseline lesion's centre, within a voxel.
    for track in result.tracks:
        (before,), (after,) = result.lesions_of(track, 0), result.lesions_of(track, 1)
        mapped = result.map_point(after.centroid_lps_mm, 1, 0)
        assert np.linalg.norm(mapped - before.centroid_lps_mm) < 3.5


def test_split_and_coalesced_lesions_follow_the_recist_rules(baseline_patient, sites) -> None:
    a, b, _ = sites
    across, up = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    pair = [(a - 10 * across, 6.0), (a + 10 * across, 6.0)]  # 8 mm apart: two lesions
    baseline = _study("baseline", _with_spheres(baseline_patient, [*pair, (b, 10.0)]))
    merged = [(a - 10 * across, 10.0), (a + 10 * across, 10.0)]  # grown into one
    fragments = [(b - 8 * up, 4.5), (b + 8 * up, 4.5)]  # split in two, 7 mm apart
    followup = _study("follow-up", _with_spheres(baseline_patient, merged + fragments))
    assert len(baseline.measurements.lesions) == 3 and len(followup.measurements.lesions) == 3
    result = follow_up([baseline, followup])
    by_id = {track.id: track for track in result.tracks}
    assert len(result.tracks) == 3  # nothing new, nothing lost
    split = by_id[1]  # the 20 mm lesion is the largest at baseline
    assert len(split.lesion_ids[1]) == 2
    volume, diameter = result.size(split, 1)
    fragments_measured = result.lesions_of(split, 1)
    assert diameter == pytest.approx(sum(f.diameters.longest_mm for f in fragments_measured))
    assert volume == pytest.approx(sum(f.volume_ml for f in fragments_measured))
    survivor, absorbed = sorted((by_id[2], by_id[3]), key=lambda t: -len(t.lesion_ids[1]))
    assert len(survivor.lesion_ids[1]) == 1
    assert absorbed.lesion_ids[1] == () and absorbed.coalesced_into[1] == survivor.id
    assert result.targets == (1, 2)  # the two longest; target 2 keeps the merged lesion's diameter
    assert survivor.id == 2


def _lesion(lesion_id: int, diameter_mm: float) -> Lesion:
    ends = ((0.0, 0.0, 0.0), (diameter_mm, 0.0, 0.0))
    diameters = AxialDiameters(diameter_mm, 0, ends, 1.0, ends)
    return Lesion(lesion_id, 1.0, (0.0, 0.0, 0.0), diameters, (0, 0, 0), (1, 1, 1))


def test_at_most_two_measurable_liver_target_lesions() -> None:
    lesions = [_lesion(1, 25.0), _lesion(2, 8.0), _lesion(3, 15.0), _lesion(4, 30.0), _lesion(5, 10.0)]
    assert select_targets(lesions) == (4, 1)  # RECIST 1.1: at most 2 per organ, all are liver
    assert select_targets([_lesion(1, 9.9), _lesion(2, 4.0)]) == ()  # none measurable (< 10 mm)
    assert select_targets([_lesion(1, 12.0), _lesion(2, 9.0)]) == (1,)
    assert RecistConfig().max_liver_targets == 2


@pytest.mark.parametrize(
    ("baseline", "nadir", "current", "category"),
    [
        (50.0, 50.0, 35.0, "PR"),  # exactly -30 %
        (50.0, 50.0, 35.5, "SD"),  # -29 %
        (50.0, 50.0, 34.9, "PR"),
        (25.0, 25.0, 30.0, "PD"),  # exactly +20 % and +5 mm
        (25.0, 25.0, 29.9, "SD"),  # +19.6 %, +4.9 mm
        (20.0, 20.0, 24.0, "SD"),  # +20 % but only +4 mm
        (20.0, 20.0, 25.0, "PD"),  # +25 %, +5 mm
        (50.0, 40.0, 47.0, "SD"),  # +17.5 % over the nadir
        (50.0, 40.0, 48.0, "PD"),  # +20 % and +8 mm over the nadir, though below baseline
        (60.0, 60.0, 62.0, "SD"),
        (40.0, 40.0, 0.0, "CR"),  # every lesion gone
    ],
)
def test_recist_category_at_and_around_the_thresholds(baseline: float, nadir: float, current: float,
                                                      category: str) -> None:
    assessment = recist_category(baseline, nadir, current, new_lesions=False, non_targets_present=False,
                                 had_non_targets=False)
    assert assessment.category == category
    assert assessment.reason


def test_recist_new_lesions_and_non_target_rules() -> None:
    def category(**kwargs) -> str:
        return recist_category(**kwargs).category

    kwargs = {"non_targets_present": False, "had_non_targets": False}
    assert category(baseline_sld_mm=50.0, nadir_sld_mm=50.0, current_sld_mm=10.0, new_lesions=True, **kwargs) == "PD"
    assert category(baseline_sld_mm=40.0, nadir_sld_mm=40.0, current_sld_mm=0.0, new_lesions=False,
                    non_targets_present=True, had_non_targets=True) == "PR"
    none = {"baseline_sld_mm": 0.0, "nadir_sld_mm": 0.0, "current_sld_mm": 0.0, "new_lesions": False}
    assert category(**none, non_targets_present=True, had_non_targets=True) == "non-CR/non-PD"
    assert category(**none, non_targets_present=False, had_non_targets=True) == "CR"
    assert category(**none, non_targets_present=False, had_non_targets=False) == "NED"


def _result_folder(folder: Path, study: tuple[Image, Image], *, with_ct: bool = True) -> Path:
    """What `lvt segment` leaves behind (labels, report.json naming the CT), without running a model."""
    folder.mkdir(parents=True)
    ct, labels = study
    write_image(labels.with_array(labels.array.astype(np.uint8)), folder / "labels.nii.gz")
    document = {"model": None, "input": {"path": str(folder / "labels.nii.gz")}}
    if with_ct:
        write_image(ct, folder / "ct.nii.gz")
        document = {"model": {"name": "test", "version": "0"}, "input": {"path": str(folder / "ct.nii.gz")}}
    (folder / "report.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def test_lvt_compare_follows_a_series_of_three_studies(tmp_path: Path, baseline_patient, sites,
                                                       capsys: pytest.CaptureFixture) -> None:
    a, b, _ = sites
    radii = [(12.0, 9.0), (10.0, 0.0), (6.0, 0.0)]  # shrinking; lesion 2 is gone after the first
    folders = [_result_folder(tmp_path / f"s{n}", _with_spheres(baseline_patient, [(a, ra), (b, rb)]))
               for n, (ra, rb) in enumerate(radii)]
    out = tmp_path / "compare"
    code = run(["compare", *map(str, folders), "-o", str(out), "--progress", "json", "--names", "jan", "apr", "sep"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1] == {"event": "done", "output": str(out)}
    document = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in document["studies"]] == ["jan", "apr", "sep"]
    assert [c["status"] for c in document["comparisons"]] == ["compared", "compared"]
    categories = [c["recist"]["category"] for c in document["comparisons"]]
    assert categories[1] == "PR"  # 42 -> 12 mm
    for comparison in document["comparisons"]:
        sums = comparison["recist"]["sum_of_longest_diameters_mm"]
        expected = recist_category(sums["baseline"], sums["nadir"], sums["current"], new_lesions=False,
                                   non_targets_present=False, had_non_targets=False)
        assert comparison["recist"]["category"] == expected.category
    (track_2,) = [t for t in document["tracks"] if t["id"] == 2]
    assert [s["status"] for s in track_2["per_study"]] == ["present", "absent", "absent"]
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "RECIST 1.1" in html and "at most 2 target lesions" in html and "radiologist" in html
    assert (out / "views" / "sizes_over_time.png").stat().st_size > 10_000
    assert len(list((out / "views").glob("study1_lesion*_*.png"))) == 4  # 1 matched, 2 vanished; both sides
    assert len(list((out / "views").glob("study2_lesion*_*.png"))) == 2


def test_lvt_compare_refuses_to_match_through_a_poor_alignment(tmp_path: Path, baseline_patient,
                                                               capsys: pytest.CaptureFixture) -> None:
    ct, labels = baseline_patient
    liver = labels.array > 0
    half = labels.with_array((liver & (np.indices(liver.shape)[2] < np.argwhere(liver)[:, 2].mean())).astype(np.uint8))
    first = _result_folder(tmp_path / "a", (ct, labels), with_ct=False)
    second = _result_folder(tmp_path / "b", (ct, half), with_ct=False)
    out = tmp_path / "compare"
    assert run(["compare", str(first), str(second), "-o", str(out), "--progress", "none"]) == 1
    assert "registration refused" in capsys.readouterr().err
    document = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    comparison = document["comparisons"][0]
    assert comparison["status"] == "refused" and comparison["recist"] is None
    assert comparison["refusal_reasons"]
    assert document["liver_volume"][1]["change_from_baseline_percent"] < -30.0  # still reported
    assert "no CT" in document["warnings"][0]


def test_compare_config_defaults_follow_recist() -> None:
    config = CompareConfig()
    assert (config.recist.partial_response_percent, config.recist.progression_percent,
            config.recist.progression_mm, config.recist.min_measurable_mm) == (-30.0, 20.0, 5.0, 10.0)
