"""Shadows that follow the sun (core/shadows.py and its use in the merge): synthetic objects with
known shadow geometry, the direction conventions for several sun azimuths, shadow next to clouds
kept as shadow, the sun angles from the STAC item to the stack's tags and the merge, and the
embedded real scene against its scene classification (SCL 3 = cloud shadow)."""

import math

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException
from rasterio.transform import Affine
from test_core_cloudmask import card_tags
from test_mask_algorithms import Recording, run
from test_mask_rules import iou, labelled_scene, scl_on_grid

from s2masks.core import cloudmask, inference, merge, models, records, shadows
from s2masks.core.cloudmask import ARGMAX, CLEAR, CLOUD, SHADOW, MergeOptions
from s2masks.core.errors import InputError
from s2masks.core.shadows import Sun

PIXEL = 10.0
TRANSFORM = Affine(PIXEL, 0, 500000, 0, -PIXEL, 5900000)
DIAGONAL = 1 / math.sqrt(2)
# Where the shadow lies from its cloud, written out by hand (rows grow southward, columns eastward):
# the sun's azimuth is clockwise from north and the shadow falls on the side away from the sun.
AWAY_FROM_THE_SUN = {
    180: (-1, 0),  # sun in the south: shadow to the north, up
    0: (1, 0),  # sun in the north: shadow down
    90: (0, -1),  # sun in the east: shadow to the west, left
    270: (0, 1),  # sun in the west: shadow right
    135: (-DIAGONAL, -DIAGONAL),  # sun in the south-east: shadow to the north-west
    315: (DIAGONAL, DIAGONAL),  # sun in the north-west: shadow to the south-east
}


def block(shape, centre, half=20):
    out = np.zeros(shape, bool)
    row, col = int(round(centre[0])), int(round(centre[1]))
    out[row - half:row + half, col - half:col + half] = True
    return out


def one_cloud(azimuth, zenith=45.0, height=1000.0, size=300):
    """(cloud, real shadow, dark patch): a 400 m cloud block in the middle, its shadow where a cloud
    `height` m high puts it, and a dark patch as far on the sun's side, where no cloud can cast it."""
    distance = height * math.tan(math.radians(zenith)) / PIXEL  # 100 pixels for 1000 m at 45 degrees
    direction = AWAY_FROM_THE_SUN[azimuth]
    centre = np.array([size / 2, size / 2])
    shape = (size, size)
    return (block(shape, centre), block(shape, centre + distance * np.array(direction)),
            block(shape, centre - distance * np.array(direction)))


@pytest.mark.parametrize("azimuth", sorted(AWAY_FROM_THE_SUN))
def test_the_real_shadow_is_kept_and_the_dark_patch_without_a_cloud_dropped(azimuth):
    cloud, real, patch = one_cloud(azimuth)
    flagged = real | patch
    kept = shadows.plausible_shadow(cloud, flagged, np.ones_like(cloud), Sun(azimuth, 45.0), PIXEL)
    assert kept[real].all()
    assert not kept[patch].any()
    # the sun on the other side: the same flags the other way round
    opposite = shadows.plausible_shadow(cloud, flagged, np.ones_like(cloud), Sun((azimuth + 180) % 360, 45.0), PIXEL)
    assert opposite[patch].all() and not opposite[real].any()


def test_the_shadow_offset_follows_the_compass():
    for azimuth, (down, right) in AWAY_FROM_THE_SUN.items():
        rows, cols = Sun(azimuth, 60.0).shadow_offset(1000.0, PIXEL)
        assert (rows, cols) == pytest.approx((down * 100 * math.sqrt(3), right * 100 * math.sqrt(3)), abs=1e-9)


def test_a_lower_sun_casts_longer_shadows_and_each_cloud_has_one_height():
    """A cloud 2 km high under a sun 60 degrees from the zenith: its shadow 346 px away is found; a
    narrower dark patch further along the same path (another height of the same flat cloud, which
    would cast a shadow of its own shape) is not its shadow."""
    shape = (500, 240)
    cloud = block(shape, (460, 120))
    distance = 2000 * math.tan(math.radians(60)) / PIXEL
    real = block(shape, (460 - distance, 120))
    further = block(shape, (460 - distance - 70, 120), half=10)
    zone = shadows.zone_of(cloud, real | further, np.ones_like(cloud), Sun(180.0, 60.0), PIXEL)
    kept = (real | further) & zone.window(0, 0, *shape)
    assert kept[real].all() and not kept[further].any()
    assert zone.matched == zone.objects == 1
    assert zone.heights[0] <= 2000 <= zone.heights[1] and zone.heights[1] - zone.heights[0] < 200


def test_shadow_whose_cloud_may_lie_outside_is_kept():
    """A shadow patch that reaches the raster's edge (or nodata) on the sun's side is kept: its cloud
    may be out of sight. The same patch on the other edge has no cloud anywhere and is dropped."""
    shape = (300, 300)
    cloud = np.zeros(shape, bool)
    valid = np.ones(shape, bool)
    valid[:, 250:] = False  # nodata east of column 250
    sun_side = np.zeros(shape, bool)
    sun_side[270:, 20:60] = True  # sun in the south: its cloud may be south of the raster
    by_nodata = np.zeros(shape, bool)
    by_nodata[100:140, 200:250] = True  # sun in the east here: its cloud may be under the nodata
    far_side = np.zeros(shape, bool)
    far_side[:30, 100:140] = True
    flagged = sun_side | by_nodata | far_side
    south = shadows.plausible_shadow(cloud, flagged, valid, Sun(180.0, 50.0), PIXEL)
    assert south[sun_side].all() and not south[far_side].any() and not south[by_nodata].any()
    east = shadows.plausible_shadow(cloud, flagged, valid, Sun(90.0, 50.0), PIXEL)
    assert east[by_nodata].all() and not east[far_side].any() and not east[sun_side].any()


def test_shadow_next_to_clouds_stays_shadow_class():
    """tests/test_mask_rules.py's labelled scene: every cloud casts its shadow 9 rows down and 14 columns
    right, touching it: a sun in the north-west (azimuth 302.7) 30 degrees from the zenith, clouds 288 m
    high. The check keeps those shadows, as shadow class, and clears the same shadows under a sun
    from the other side."""
    labels, cloud, shadow = labelled_scene(0)
    product = np.zeros(labels.shape, np.uint8)
    azimuth = math.degrees(math.atan2(-14, 9)) % 360  # the sun opposite the shadow's (east 14, south 9)
    assert azimuth == pytest.approx(302.7, abs=0.1)
    next_to_cloud = (labels == SHADOW) & cloudmask.dilate(labels == CLOUD, 5)
    assert next_to_cloud.sum() > 1000  # the case at stake
    for buffer in (0, 50):
        off = MergeOptions(buffer=buffer, shadow_geometry=False)
        _, unchecked = cloudmask.merge_arrays(product, cloud, shadow, off, rules=ARGMAX)
        options = MergeOptions(buffer=buffer, sun_azimuth=azimuth, sun_zenith=30.0)
        _, checked = cloudmask.merge_arrays(product, cloud, shadow, options, rules=ARGMAX)
        kept = (checked[next_to_cloud] == SHADOW).mean()
        assert kept > 0.85 and kept >= (unchecked[next_to_cloud] == SHADOW).mean() - 0.01
        assert (checked[next_to_cloud] == CLOUD).mean() <= (unchecked[next_to_cloud] == CLOUD).mean()
        assert iou(checked == SHADOW, labels == SHADOW) >= iou(unchecked == SHADOW, labels == SHADOW) - 0.01
        if buffer == 0:
            assert ((checked == CLOUD) == (unchecked == CLOUD)).all()
            assert ((checked == SHADOW) & (unchecked != SHADOW)).sum() == 0  # the check only clears
    _, unchecked = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(shadow_geometry=False), rules=ARGMAX)
    _, wrong_way = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(sun_azimuth=(azimuth + 180) % 360,
                                                                               sun_zenith=30.0), rules=ARGMAX)
    assert iou(wrong_way == SHADOW, labels == SHADOW) < iou(unchecked == SHADOW, labels == SHADOW) - 0.1


def with_dark_fields(seed):
    """The labelled scene plus four dark fields that the model calls shadow, away from the clouds, their
    shadows and the raster's edges."""
    from scipy import ndimage

    labels, cloud, shadow = labelled_scene(seed)
    room = ndimage.binary_erosion(~cloudmask.dilate(labels != CLEAR, 8), np.ones((12, 15)))  # field centres
    room[:20], room[-20:], room[:, :20], room[:, -20:] = False, False, False, False  # off the raster's edges
    fields = np.zeros(labels.shape, bool)
    for row, col in np.argwhere(room)[::max(1, int(room.sum()) // 4)][:4]:
        fields[row - 6:row + 6, col - 7:col + 8] = True
    shadow = np.where(fields, 0.9, shadow).astype(np.float32)
    cloud = np.where(fields, 0.05, cloud).astype(np.float32)
    return labels, cloud, shadow, fields


def write(path, data, **tags):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs="EPSG:32629", transform=TRANSFORM) as dst:
        dst.write(data, 1)
        dst.update_tags(**tags)
    return path


def test_block_wise_merge_with_the_check_equals_the_whole_array(tmp_path):
    labels, cloud, shadow, fields = with_dark_fields(1)
    assert fields.sum() > 300
    product = np.zeros(labels.shape, np.uint8)
    product[:, :5] = 255
    sun = Sun(302.7, 30.0)
    options = MergeOptions(buffer=20)
    expected_mask, expected_classes = cloudmask.merge_arrays(product, cloud, shadow, options, ARGMAX, sun=sun)
    _, unchecked = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=20, shadow_geometry=False),
                                          ARGMAX)
    assert (expected_classes[fields] == CLEAR).mean() > 0.95 and (unchecked[fields] == SHADOW).all()
    card = {"cloud": card_tags("cloud"), "shadow": card_tags("shadow")}  # ukis-csmask: argmax
    paths = [write(tmp_path / "product.tif", product, **shadows.sun_tags(sun)),
             write(tmp_path / "cloud.tif", cloud, **card["cloud"]),
             write(tmp_path / "shadow.tif", shadow, **card["shadow"])]
    lines = []
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif", options,
                                             block_size=37, log=lines.append)
    with rasterio.open(tmp_path / "mask.tif") as m, rasterio.open(tmp_path / "classes.tif") as c:
        assert (m.read(1) == expected_mask).all() and (c.read(1) == expected_classes).all()
    flagged_shadow = cloudmask.classify(product, cloud, shadow, ARGMAX)[1]
    assert 0.95 * fields.sum() <= statistics.shadow_dropped < flagged_shadow.sum()
    log = " ".join(lines)
    assert "Shadow check: sun azimuth 302.7 degrees, zenith 30.0 degrees" in log
    assert "The shadow check cleared" in log


def test_the_log_says_when_the_check_does_not_run(tmp_path):
    labels, cloud, shadow, fields = with_dark_fields(2)
    paths = [write(tmp_path / "p.tif", np.zeros(labels.shape, np.uint8)), write(tmp_path / "c.tif", cloud),
             write(tmp_path / "s.tif", shadow)]
    for options, says in ((MergeOptions(), "Shadow check skipped: the sun position is unknown"),
                          (MergeOptions(shadow_geometry=False, sun_azimuth=300.0, sun_zenith=30.0),
                           "Shadow check off (SHADOW_GEOMETRY)")):
        lines = []
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif", options,
                                    log=lines.append)
        assert [line for line in lines if says in line]
        with rasterio.open(tmp_path / "classes.tif") as src:
            assert (src.read(1)[fields] == SHADOW).all()


@pytest.mark.parametrize("options, says", [
    (MergeOptions(sun_azimuth=120.0), "Give both SUN_AZIMUTH and SUN_ZENITH"),
    (MergeOptions(sun_zenith=40.0), "Give both SUN_AZIMUTH and SUN_ZENITH"),
    (MergeOptions(sun_azimuth=120.0, sun_zenith=95.0), "SUN_ZENITH.*above the horizon"),
    (MergeOptions(sun_azimuth=-5.0, sun_zenith=40.0), "SUN_AZIMUTH.*clockwise from north")])
def test_bad_sun_angles_are_refused_before_writing(tmp_path, options, says):
    paths = [write(tmp_path / f"{name}.tif", np.zeros((9, 9), dtype)) for name, dtype in
             (("p", np.uint8), ("c", np.float32), ("s", np.float32))]
    with pytest.raises(InputError, match=says):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=options)
    assert not (tmp_path / "mask.tif").exists()


def test_mean_sun_of_several_items_averages_the_azimuth_on_the_circle():
    sun = shadows.mean_sun([(350.0, 50.0), (10.0, 60.0), (None, 70.0)])
    assert sun.azimuth == pytest.approx(0.0, abs=1e-9) or sun.azimuth == pytest.approx(360.0)
    assert sun.zenith == pytest.approx(55.0)
    assert shadows.mean_sun([(None, None)]) is None
    assert shadows.sun_from_tags(shadows.sun_tags(Sun(172.840206897213, 57.820574357679))) == Sun(172.840207, 57.820574)


def test_the_sun_goes_from_the_item_to_the_stack_and_the_merged_stack(pc_double, stacked, tmp_path):
    """The fixture item's s2:mean_solar_* (the real product's MTD_TL.xml Mean_Sun_Angle) are tags of the
    stack and its product mask, and of a merge of stacks."""
    from stack_helpers import fixture_item

    item = records.parse_item(fixture_item(pc_double))
    assert (item.sun_azimuth, item.sun_zenith) == (172.840206897213, 57.820574357679)
    for path in (stacked.raster, stacked.mask):
        with rasterio.open(path) as src:
            assert shadows.sun_from_tags(src.tags()) == Sun(172.840207, 57.820574)
    merge.merge_stacks([stacked.raster], [stacked.mask], tmp_path / "merged.tif", tmp_path / "merged_mask.tif")
    with rasterio.open(tmp_path / "merged_mask.tif") as src:
        assert shadows.sun_from_tags(src.tags()) == Sun(172.840207, 57.820574)


def test_on_the_real_scene_the_check_keeps_the_shadow_sen2cor_agrees_with(pc_double, stacked, tmp_path):
    """The embedded scene (8 km, 2022-10-05): its big shadow is cast by clouds partly outside the area and
    reaches the area's southern edge (the sun is in the south). On the model's own flags the check keeps
    the shadow SCL agrees with and clears small dark patches that SCL mostly calls clear; under the sun
    the fixture item carried before (azimuth 245.3, zenith 63.0, another product's) it would clear
    nearly all of the real shadow. The mask as written keeps every product mask flag."""
    card = models.default_card("cloud")
    out = inference.compute_probabilities(stacked.raster, {"cloud": card, "shadow": card},
                                          {"cloud": tmp_path / "cloud.tif", "shadow": tmp_path / "shadow.tif"})
    with rasterio.open(out["cloud"]) as c, rasterio.open(out["shadow"]) as s, rasterio.open(stacked.mask) as m:
        cloud, shadow, product, transform = c.read(1), s.read(1), m.read(1), m.transform
    sen2cor_shadow = scl_on_grid(pc_double, transform, product.shape) == 3

    model_only = np.zeros_like(product)  # the model's flags alone, without the product mask they are compared with

    def model_classes(**sun):
        return cloudmask.merge_arrays(model_only, cloud, shadow, MergeOptions(**sun), ARGMAX, sun=Sun(
            172.840206897213, 57.820574357679))[1]

    before = model_classes(shadow_geometry=False)
    after = model_classes()
    wrong_sun = model_classes(sun_azimuth=245.346023617542, sun_zenith=63.0036756665255)
    agreed = (before == SHADOW) & sen2cor_shadow
    dropped = (before == SHADOW) & (after != SHADOW)
    print(f"model's shadow {100 * (before == SHADOW).mean():.2f}% -> {100 * (after == SHADOW).mean():.2f}% "
          f"(SCL {100 * sen2cor_shadow.mean():.2f}%), dropped {dropped.sum()} px, of which SCL shadow "
          f"{(dropped & sen2cor_shadow).sum()}")
    assert ((after == CLOUD) == (before == CLOUD)).all()
    assert ((after == SHADOW) & (before != SHADOW)).sum() == 0
    assert dropped.sum() > 1000
    assert (after[agreed] == SHADOW).mean() > 0.98
    assert (dropped & sen2cor_shadow).sum() < 0.35 * dropped.sum()
    assert (wrong_sun[agreed] == SHADOW).mean() < 0.3

    lines = []
    statistics = cloudmask.merge_cloud_masks(stacked.mask, out["cloud"], out["shadow"], tmp_path / "mask.tif",
                                             tmp_path / "classes.tif", log=lines.append)
    assert [line for line in lines if line.startswith("Shadow check: sun azimuth 172.8 degrees, zenith 57.8")]
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.read(1)[product != 0].all()  # every product flag stays masked, its shadow included
    unchecked = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(shadow_geometry=False), ARGMAX)[1]
    assert statistics.counts[SHADOW] + statistics.shadow_dropped == (unchecked == SHADOW).sum()
    assert statistics.shadow_dropped > 1000


def test_merge_algorithm_takes_the_shadow_parameters(s2masks_provider, tmp_path):
    labels, cloud, shadow, fields = with_dark_fields(0)
    parameters = {"PRODUCT_MASK": str(write(tmp_path / "p.tif", np.zeros(labels.shape, np.uint8))),
                  "CLOUD_PROBABILITY": str(write(tmp_path / "c.tif", cloud)),
                  "SHADOW_PROBABILITY": str(write(tmp_path / "s.tif", shadow)), "CLOUD_THR": 0.5, "SHADOW_THR": 0.5,
                  "OUTPUT": str(tmp_path / "mask.tif")}
    feedback = Recording()
    checked = run("mergecloudmaskssimple", dict(parameters, SUN_AZIMUTH=302.7, SUN_ZENITH=30.0,
                                                OUTPUT_CLASSES=str(tmp_path / "checked.tif")), feedback)
    assert [line for line in feedback.infos if "Shadow check: sun azimuth 302.7" in line]
    unchecked = run("mergecloudmaskssimple", dict(parameters, SUN_AZIMUTH=302.7, SUN_ZENITH=30.0,
                                                  SHADOW_GEOMETRY=False, OUTPUT_CLASSES=str(tmp_path / "off.tif")))
    with rasterio.open(checked["OUTPUT_CLASSES"]) as on, rasterio.open(unchecked["OUTPUT_CLASSES"]) as off:
        assert (on.read(1)[fields] == CLEAR).mean() > 0.95 and (off.read(1)[fields] == SHADOW).all()
    assert checked["PCT_SHADOW"] < unchecked["PCT_SHADOW"]
    with pytest.raises(QgsProcessingException, match="SUN_AZIMUTH and SUN_ZENITH"):
        run("mergecloudmaskssimple", dict(parameters, SUN_AZIMUTH=302.7, OUTPUT=str(tmp_path / "none.tif")))
    assert not (tmp_path / "none.tif").exists()


def test_the_workflow_over_several_dates_takes_no_fixed_sun(s2masks_provider):
    names = {p.name() for p in s2masks_provider.algorithm("preprocesss2improvedmasks").parameterDefinitions()}
    assert "SHADOW_GEOMETRY" in names and not names & {"SUN_AZIMUTH", "SUN_ZENITH"}
    for single in ("improvecloudmask", "mergecloudmaskssimple"):
        names = {p.name() for p in s2masks_provider.algorithm(single).parameterDefinitions()}
        assert {"SHADOW_GEOMETRY", "SUN_AZIMUTH", "SUN_ZENITH"} <= names
