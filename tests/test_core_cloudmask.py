"""The improved cloud mask (merge_cloud_masks_simple): the rules on hand-made arrays, block-wise
streaming equal to the whole-array result, and every refusal."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from scipy import ndimage

from s2masks.core import cloudmask, models
from s2masks.core import grid as grids
from s2masks.core.cloudmask import ARGMAX, CLEAR, CLOUD, NODATA, SHADOW, MergeOptions, Rule
from s2masks.core.errors import Cancelled, InputError

NO_DILATION = MergeOptions()  # no buffer, closing or minimum area: the default
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5900000)


def arrays(height=9, width=9):
    return (np.zeros((height, width), np.uint8), np.zeros((height, width), np.float32),
            np.zeros((height, width), np.float32))


def write(path, data, crs="EPSG:32629", transform=TRANSFORM, **tags):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform) as dst:
        dst.write(data, 1)
        dst.update_tags(**tags)
    return path


def card_tags(target, model="ukis-csmask-6b-l2a", rule="argmax", threshold=None):
    """The tags inference writes into a probability raster."""
    tags = {models.TAG_TARGET: target, models.TAG_MODEL: model, models.TAG_RULE: rule}
    if threshold is not None:
        tags[models.TAG_THRESHOLD] = repr(threshold)
    return tags


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_thresholds_are_strict_and_each_source_flags():
    product, cloud, shadow = arrays(1, 8)
    cloud[0, :3] = [0.3, 0.3001, 1.0]
    shadow[0, 3:5] = [0.2, 0.2001]
    product[0, 5:8] = [2, 4, 0]
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, NO_DILATION)
    assert mask.tolist() == [[0, 1, 1, 0, 1, 1, 1, 0]]
    assert classes.tolist() == [[CLEAR, CLOUD, CLOUD, CLEAR, SHADOW, CLOUD, SHADOW, CLEAR]]


@pytest.mark.parametrize("code", [1, 2, 3, 4, 255])
def test_every_product_flag_and_nodata_is_masked(code):
    product, cloud, shadow = arrays(1, 2)
    product[0, 0] = code
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, NO_DILATION)
    assert mask.tolist() == [[1, 0]]
    assert classes[0, 0] == {1: CLOUD, 2: CLOUD, 3: CLOUD, 4: SHADOW, 255: NODATA}[code]


def test_buffer_is_a_disk_in_metres():
    product, cloud, shadow = arrays(15, 15)
    cloud[7, 7] = 0.9
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=50))  # 5 pixels of 10 m
    assert mask.sum() == 81  # skimage disk(5): 11 x 11 footprint of 81 pixels
    assert (mask[2:13, 2:13] == cloudmask.disk(5)).all()
    assert mask[7, 1] == 0 and mask[7, 2] == 1 and mask[3, 3] == 0  # (4, 4) away: 32 > 25
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=50), pixel_size=20)
    assert (mask[5:10, 5:10] == cloudmask.disk(2.5)).all() and mask.sum() == 21  # 2.5 pixels of 20 m
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=9))  # less than a pixel
    assert mask.sum() == 1


def test_row_dilation_equals_scipy_binary_dilation():
    rng = np.random.default_rng(1)
    flagged = rng.random((120, 97)) > 0.995
    for radius in (1, 1.5, 2, 2.5, 3.7, 5, 9):
        expected = ndimage.binary_dilation(flagged, structure=cloudmask.disk(radius))
        assert (cloudmask.dilate(flagged, radius) == expected).all(), radius


def test_closing_joins_near_patches_without_growing_them():
    product, cloud, shadow = arrays(13, 20)
    cloud[2:11, 2:7] = cloud[2:11, 10:15] = 0.9  # two patches 3 pixels apart
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(closing=30))  # 3 pixels
    assert mask[5:8, 2:15].all()  # the gap is filled (where a disk of 3 pixels fits)
    assert mask[2:11, 2:15].sum() == mask.sum() > 90  # and nothing grows outwards
    assert (classes[5:8, 7:10] == CLOUD).all()
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(closing=10))  # 1 pixel: too small
    assert mask.sum() == 90
    rng = np.random.default_rng(3)
    flagged = np.zeros((80, 80), bool)
    flagged[10:70, 10:70] = rng.random((60, 60)) > 0.9
    for radius in (1, 2, 3.5):  # away from the edges: scipy's closing
        expected = ndimage.binary_closing(flagged, structure=cloudmask.disk(radius))
        assert (cloudmask.close(flagged, radius) == expected).all()
    edge = np.zeros((10, 10), bool)
    edge[0, 0:10:2] = True
    assert (cloudmask.close(edge, 1) >= edge).all()  # never clears, at the edge neither


def test_min_area_in_square_metres_removes_small_components_and_fills_small_holes():
    product, cloud, shadow = arrays(12, 12)
    cloud[1, 1:4] = 0.9  # 3-pixel cloud, 300 m2
    cloud[6:11, 6:11] = 0.9  # 25-pixel cloud with a 2-pixel hole
    cloud[8, 8:10] = 0.0
    cloud[0, 11] = cloud[1, 10] = 0.9  # 2 pixels touching by a corner: one 8-connected component
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(min_area=300))
    assert mask[1, 1:4].all() and mask[0, 11] == 0 and mask[1, 10] == 0
    assert mask[8, 8:10].all()  # hole filled
    assert classes[8, 8] == CLOUD
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(min_area=400))
    assert not mask[1, 1:4].any()
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(min_area=1200), pixel_size=20)
    assert mask[1, 1:4].all()  # 3 pixels of 400 m2 = 1200 m2: not smaller than 1200 m2
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(min_area=1201), pixel_size=20)
    assert not mask[1, 1:4].any()


def test_flagged_shadow_next_to_a_cloud_keeps_its_class():
    """FarmVibes-era classes relabelled shadow within the grown ring of a cloud as cloud; now a
    flagged pixel keeps its class, and only the added ring takes the class of its nearest flagged pixel."""
    product, cloud, shadow = arrays(1, 24)
    cloud[0, 2:5] = 0.9
    shadow[0, 5:9] = 0.9  # touching the cloud
    shadow[0, 18] = 0.9  # alone
    _, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=30))
    assert classes[0].tolist() == [CLOUD] * 5 + [SHADOW] * 4 + [SHADOW] * 3 + [CLEAR] * 3 + [SHADOW] * 7 + [CLEAR] * 2


def test_ring_pixels_take_the_class_of_the_nearest_flagged_pixel():
    product, cloud, shadow = arrays(21, 21)
    cloud[10, 3] = 0.9
    shadow[10, 15] = 0.9
    product[2, 10] = 4  # product shadow
    _, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=60))
    rows, cols = np.mgrid[0:21, 0:21]
    d_cloud = np.hypot(rows - 10, cols - 3)
    d_shadow = np.minimum(np.hypot(rows - 10, cols - 15), np.hypot(rows - 2, cols - 10))
    grown = np.minimum(d_cloud, d_shadow) <= 6
    expected = np.where(grown, np.where(d_shadow < d_cloud, SHADOW, CLOUD), CLEAR)
    assert (classes == expected).all()
    assert classes[10, 9] == CLOUD  # 6 from both: a tie goes to cloud


def test_argmax_rule():
    """cloud where P(cloud) >= max(P(shadow), P(clear)), shadow where P(shadow) > max(P(cloud), P(clear)),
    with P(clear) = 1 - P(cloud) - P(shadow)."""
    product = np.zeros((1, 7), np.uint8)
    cloud = np.array([[0.34, 0.30, 0.45, 0.40, 0.20, 0.5, 0.25]], np.float32)
    shadow = np.array([[0.33, 0.36, 0.45, 0.10, 0.25, 0.5, 0.25]], np.float32)
    _, classes = cloudmask.merge_arrays(product, cloud, shadow, rules=ARGMAX)
    assert classes[0].tolist() == [CLOUD, SHADOW, CLOUD, CLEAR, CLEAR, CLOUD, CLEAR]  # ties go to cloud
    # the FarmVibes thresholds flag every one of them
    _, classes = cloudmask.merge_arrays(product, cloud, shadow)
    assert (classes != CLEAR).all()
    # a threshold given overrides the argmax of its target only
    cloud_given = (Rule("threshold", 0.44), ARGMAX[1])
    _, classes = cloudmask.merge_arrays(product, cloud, shadow, rules=cloud_given)
    assert classes[0].tolist() == [CLEAR, SHADOW, CLOUD, CLEAR, CLEAR, CLOUD, CLEAR]


@pytest.mark.parametrize("value", [np.nan, np.inf, -0.2, 1.3])
def test_invalid_probabilities_are_nodata_not_clear(value):
    product, cloud, shadow = arrays(1, 4)
    cloud[0, 1] = value
    shadow[0, 2] = value
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=20), rules=ARGMAX)
    assert classes[0].tolist() == [CLEAR, NODATA, NODATA, CLEAR]  # nodata does not grow
    assert mask[0].tolist() == [0, 1, 1, 0]  # masked, never clear


def blobs(shape, seed):
    """Clouds, shadows, nodata and product flags of varied sizes, some across block edges."""
    rng = np.random.default_rng(seed)
    cloud = ndimage.gaussian_filter(rng.random(shape), 2)
    shadow = ndimage.gaussian_filter(rng.random(shape), 1.5)
    cloud_prob = np.where(cloud > np.quantile(cloud, 0.85), 0.9, 0.1).astype(np.float32)
    shadow_prob = np.where(shadow > np.quantile(shadow, 0.9), 0.5, 0.05).astype(np.float32)
    product = np.where(rng.random(shape) > 0.999, rng.choice([1, 2, 3, 4], size=shape), 0).astype(np.uint8)
    product[:, :4] = 255
    return product, cloud_prob, shadow_prob


@pytest.mark.parametrize("options, rules", [
    (MergeOptions(), ARGMAX), (MergeOptions(buffer=50), None), (MergeOptions(buffer=20, min_area=3000), ARGMAX),
    (MergeOptions(min_area=1200), None), (MergeOptions(0.5, 0.1, buffer=30, min_area=5000), None),
    (MergeOptions(buffer=25, closing=30), ARGMAX), (MergeOptions(buffer=15, closing=20, min_area=4000), ARGMAX)],
    ids=["argmax", "buffer", "buffer+area", "area", "thresholds", "closing", "all"])
def test_block_wise_equals_whole_array(tmp_path, options, rules):
    product, cloud, shadow = blobs((230, 190), seed=int(options.min_area + options.closing))
    if rules:  # softmax-like: P(cloud) + P(shadow) <= 1, cloud and shadow side by side
        shadow = np.minimum(shadow, 1 - cloud)
    cloud[100:104, 50:56] = np.nan  # a model without an answer there
    expected_mask, expected_classes = cloudmask.merge_arrays(product, cloud, shadow, options, rules)
    assert 0.2 < expected_mask.mean() < 0.97  # something to get wrong at every block edge
    if options.min_area:  # and components the halo must see whole
        unfiltered, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(
            options.cloud_thr, options.shadow_thr, options.buffer, options.closing), rules)
        assert (unfiltered != expected_mask).sum() > 500
    if options.buffer or options.closing:  # and rings whose nearest flagged pixel lies in another block
        assert ((expected_classes == SHADOW) & (shadow <= 0.1)).sum() > 100
    tags = {"cloud": card_tags("cloud"), "shadow": card_tags("shadow")} if rules else {"cloud": {}, "shadow": {}}
    paths = [write(tmp_path / "product.tif", product), write(tmp_path / "cloud.tif", cloud, **tags["cloud"]),
             write(tmp_path / "shadow.tif", shadow, **tags["shadow"])]
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif", options,
                                             block_size=37)
    assert (read(tmp_path / "mask.tif") == expected_mask).all()
    assert (read(tmp_path / "classes.tif") == expected_classes).all()
    assert statistics.counts[CLOUD] == int((expected_classes == CLOUD).sum())
    assert statistics.counts[NODATA] == int((expected_classes == NODATA).sum())
    assert statistics.invalid == 24 and statistics.pixels == product.size


def test_outputs_are_described(tmp_path):
    product, cloud, shadow = arrays(20, 20)
    product[3, 3] = 1
    product[0, :] = 255
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in (("p", product), ("c", cloud), ("s", shadow))]
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.dtypes[0] == "uint8" and src.descriptions == ("cloud_mask",) and src.crs.to_epsg() == 32629
        assert src.nodata is None and src.transform == TRANSFORM
    with rasterio.open(tmp_path / "classes.tif") as src:
        assert src.nodata == NODATA and src.colormap(1)[SHADOW][:3] == (78, 78, 78)
    row = statistics.as_row()
    assert row["pct_nodata"] == pytest.approx(5.0)
    assert row["pct_product_masked"] == pytest.approx(100 / 400)
    assert sum(row[k] for k in ("pct_clear", "pct_cloud", "pct_shadow", "pct_nodata")) == pytest.approx(100)
    assert list(tmp_path.glob(".*")) == []


@pytest.mark.parametrize("field, value", [("cloud_thr", 1.2), ("shadow_thr", -0.1), ("buffer", -1),
                                          ("closing", -5), ("min_area", -5), ("min_area", np.inf),
                                          ("max_nodata", 120)])
def test_bad_parameters_are_refused(tmp_path, field, value):
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in zip("pcs", arrays())]
    with pytest.raises(InputError, match=f"{field.upper()} \\({field}\\)"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=MergeOptions(**{field: value}))
    assert not (tmp_path / "mask.tif").exists()


def test_metres_on_a_grid_in_degrees_are_refused(tmp_path):
    degrees = Affine(0.0001, 0, -8.7, 0, -0.0001, 53.1)
    paths = [write(tmp_path / f"{n}.tif", d, crs="EPSG:4326", transform=degrees) for n, d in zip("pcs", arrays())]
    with pytest.raises(InputError, match="in metres but .* is in degrees"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=MergeOptions(buffer=30))
    cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif")  # nothing in metres: fine


# -- the rule each probability's model card gives -------------------------------------------------------
@pytest.mark.parametrize("cloud_tags, shadow_tags, options, expected", [
    (card_tags("cloud"), card_tags("shadow"), MergeOptions(), (("argmax", None), ("argmax", None))),
    (card_tags("cloud"), card_tags("shadow"), MergeOptions(cloud_thr=0.4), (("threshold", 0.4), ("argmax", None))),
    ({}, {}, MergeOptions(), (("threshold", 0.3), ("threshold", 0.2))),
    (card_tags("cloud", "farmvibes-cloud-model2", "threshold", 0.3),
     card_tags("shadow", "farmvibes-shadow", "threshold", 0.2), MergeOptions(),
     (("threshold", 0.3), ("threshold", 0.2))),
    (card_tags("cloud"), card_tags("shadow", "farmvibes-shadow", "threshold", 0.2), MergeOptions(),
     (("threshold", 0.5), ("threshold", 0.2))),
    (card_tags("cloud"), card_tags("shadow", "ukis-csmask-4b-l2a"), MergeOptions(shadow_thr=0.25),
     (("threshold", 0.5), ("threshold", 0.25))),
])
def test_rules_from_the_cards_recorded_in_the_rasters(cloud_tags, shadow_tags, options, expected):
    rules = cloudmask.resolve_rules(options, cloud_tags, shadow_tags)
    assert tuple((rule.kind, rule.threshold) for rule in rules) == expected


def test_the_log_says_which_rule(tmp_path):
    product, cloud, shadow = arrays()
    paths = [write(tmp_path / "p.tif", product), write(tmp_path / "c.tif", cloud, **card_tags("cloud")),
             write(tmp_path / "s.tif", shadow, **card_tags("shadow"))]
    lines = []
    cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=MergeOptions(min_area=30), log=lines.append)
    assert lines[0] == "Cloud: the most probable of ukis-csmask-6b-l2a's classes (argmax, its model card's rule)."
    assert lines[1].startswith("Shadow: the most probable of ukis-csmask-6b-l2a's classes")
    assert "buffer 0 m (off)" in lines[2] and "minimum area 30 m2 (0.3 pixels)" in lines[2]
    assert "MIN_AREA is in square metres (it was pixels before)" in lines[2]
    assert "30 pixels would be 3000 m2" in lines[2]
    lines = []
    paths = [write(tmp_path / "p.tif", product), write(tmp_path / "c.tif", cloud), write(tmp_path / "s.tif", shadow)]
    cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", log=lines.append)
    assert lines[0] == ("Cloud: probability above 0.3 (FarmVibes' threshold: the raster does not say which model "
                        "made it; set CLOUD_THR to choose).")


def test_swapped_probabilities_are_refused(tmp_path):
    product, cloud, shadow = arrays()
    paths = [write(tmp_path / "p.tif", product), write(tmp_path / "s.tif", shadow, **card_tags("shadow")),
             write(tmp_path / "c.tif", cloud, **card_tags("cloud"))]
    with pytest.raises(InputError, match="The cloud probability .*s.tif holds shadow probability .*give it as the "
                                         "shadow probability"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif")


# -- nodata ---------------------------------------------------------------------------------------------
def test_nan_probabilities_are_nodata_in_the_files_and_the_statistics(tmp_path):
    product, cloud, shadow = arrays(20, 20)
    cloud[5:10, :] = np.nan  # 25%
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in (("p", product), ("c", cloud), ("s", shadow))]
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif")
    assert (read(tmp_path / "classes.tif")[5:10] == NODATA).all() and (read(tmp_path / "mask.tif")[5:10] == 1).all()
    row = statistics.as_row()
    assert row["pct_nodata"] == pytest.approx(25) and row["pct_clear"] == pytest.approx(75)


@pytest.mark.parametrize("stack_nodata, says", [
    (False, "Where the product mask has data .* the model gave no number: .*wrong scale.*INPUT_SCALE"),
    (True, "The product mask has no data over 60.0% of the area .*MIN_TILE_COVER")])
def test_a_mostly_nodata_mask_fails_and_says_why(tmp_path, stack_nodata, says):
    product, cloud, shadow = arrays(20, 20)
    cloud[:12] = shadow[:12] = np.nan  # 60%
    if stack_nodata:
        product[:12] = 255
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in (("p", product), ("c", cloud), ("s", shadow))]
    with pytest.raises(InputError, match=f"60.0% of the area has no valid cloud or shadow probability.*MAX_NODATA "
                                         f"\\(50%\\): no mask was written.*{says}.*raise MAX_NODATA"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "p.tif", "s.tif"]
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=MergeOptions(max_nodata=60))
    assert statistics.as_row()["pct_nodata"] == pytest.approx(60)


@pytest.mark.parametrize("change, says", [(dict(crs="EPSG:32630"), "CRS EPSG:32630"),
                                          (dict(transform=grids.offset_transform(TRANSFORM, 1, 0)), "origin")])
def test_rasters_on_other_grids_are_named(tmp_path, change, says):
    product, cloud, shadow = arrays()
    paths = [write(tmp_path / "p.tif", product), write(tmp_path / "c.tif", cloud),
             write(tmp_path / "s.tif", shadow, **change)]
    with pytest.raises(InputError, match=f"shadow probability .*{says}"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif")
    assert not (tmp_path / "mask.tif").exists()


def test_other_size_is_named(tmp_path):
    product, cloud, shadow = arrays()
    paths = [write(tmp_path / "p.tif", product), write(tmp_path / "c.tif", cloud[:, :5]),
             write(tmp_path / "s.tif", shadow)]
    with pytest.raises(InputError, match="cloud probability .*size 5 x 9 instead of 9 x 9"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif")


def test_unknown_product_codes_are_refused_and_nothing_written(tmp_path):
    product, cloud, shadow = arrays(300, 300)
    product[290, 290] = 7
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in (("p", product), ("c", cloud), ("s", shadow))]
    with pytest.raises(InputError, match="values 7 .*not product mask codes"):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", block_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "p.tif", "s.tif"]


def test_cancel_leaves_nothing(tmp_path):
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in zip("pcs", arrays(100, 100))]
    calls = []
    with pytest.raises(Cancelled):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", block_size=20,
                                    should_cancel=lambda: calls.append(1) or len(calls) > 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "p.tif", "s.tif"]


def test_unwritable_output_folder(tmp_path):
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in zip("pcs", arrays())]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="Cannot write to the output folder"):
        cloudmask.merge_cloud_masks(*paths, blocker / "out" / "mask.tif")
