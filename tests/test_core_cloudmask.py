"""The improved cloud mask (merge_cloud_masks_simple): the rules on hand-made arrays, block-wise
streaming equal to the whole-array result, and every refusal."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from scipy import ndimage

from s2masks.core import cloudmask
from s2masks.core import grid as grids
from s2masks.core.cloudmask import CLEAR, CLOUD, NODATA, SHADOW, MergeOptions
from s2masks.core.errors import Cancelled, InputError

NO_DILATION = MergeOptions(closing_size=0)
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5900000)


def arrays(height=9, width=9):
    return (np.zeros((height, width), np.uint8), np.zeros((height, width), np.float32),
            np.zeros((height, width), np.float32))


def write(path, data, crs="EPSG:32629", transform=TRANSFORM):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform) as dst:
        dst.write(data, 1)
    return path


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


def test_dilation_is_a_disk_of_radius_closing_size():
    product, cloud, shadow = arrays(15, 15)
    cloud[7, 7] = 0.9
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions())
    assert mask.sum() == 81  # skimage disk(5): 11 x 11 footprint of 81 pixels
    assert (mask[2:13, 2:13] == cloudmask.disk(5)).all()
    assert mask[7, 1] == 0 and mask[7, 2] == 1 and mask[3, 3] == 0  # (4, 4) away: 32 > 25


def test_row_dilation_equals_scipy_binary_dilation():
    rng = np.random.default_rng(1)
    flagged = rng.random((120, 97)) > 0.995
    for radius in (1, 2, 5, 9):
        expected = ndimage.binary_dilation(flagged, structure=cloudmask.disk(radius))
        assert (cloudmask.dilate(flagged, radius) == expected).all()


def test_min_area_removes_small_components_and_fills_small_holes():
    product, cloud, shadow = arrays(12, 12)
    cloud[1, 1:4] = 0.9  # 3-pixel cloud
    cloud[6:11, 6:11] = 0.9  # 25-pixel cloud with a 2-pixel hole
    cloud[8, 8:10] = 0.0
    cloud[0, 11] = cloud[1, 10] = 0.9  # 2 pixels touching by a corner: one 8-connected component
    options = MergeOptions(closing_size=0, min_area=3)
    mask, classes = cloudmask.merge_arrays(product, cloud, shadow, options)
    assert mask[1, 1:4].all() and mask[0, 11] == 0 and mask[1, 10] == 0
    assert mask[8, 8:10].all()  # hole filled
    assert classes[8, 8] == CLOUD
    mask, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(closing_size=0, min_area=4))
    assert not mask[1, 1:4].any()


def test_shadow_class_only_away_from_cloud():
    product, cloud, shadow = arrays(1, 20)
    cloud[0, 2] = 0.9
    shadow[0, 4] = 0.9  # within 5 px of the cloud: cloud class
    shadow[0, 15] = 0.9  # far from it: shadow class
    _, classes = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions())
    assert classes[0, :8].tolist() == [CLOUD] * 8
    assert classes[0, 10:20].tolist() == [SHADOW] * 10


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


@pytest.mark.parametrize("options", [MergeOptions(), MergeOptions(closing_size=2, min_area=30),
                                     MergeOptions(closing_size=0, min_area=12), MergeOptions(0.5, 0.1, 3, 50)])
def test_block_wise_equals_whole_array(tmp_path, options):
    product, cloud, shadow = blobs((230, 190), seed=options.min_area)
    expected_mask, expected_classes = cloudmask.merge_arrays(product, cloud, shadow, options)
    assert 0.2 < expected_mask.mean() < 0.97  # something to get wrong at every block edge
    if options.min_area:  # and components the halo must see whole
        unfiltered, _ = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(
            options.cloud_thr, options.shadow_thr, options.closing_size, 0))
        assert (unfiltered != expected_mask).sum() > 500
    paths = [write(tmp_path / f"{name}.tif", data) for name, data in
             (("product", product), ("cloud", cloud), ("shadow", shadow))]
    statistics = cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", tmp_path / "classes.tif", options,
                                             block_size=37)
    assert (read(tmp_path / "mask.tif") == expected_mask).all()
    assert (read(tmp_path / "classes.tif") == expected_classes).all()
    assert statistics.counts[CLOUD] == int((expected_classes == CLOUD).sum())
    assert statistics.pixels == product.size


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


@pytest.mark.parametrize("field, value", [("cloud_thr", 1.2), ("shadow_thr", -0.1), ("closing_size", -1),
                                          ("min_area", -5), ("min_area", 2.5)])
def test_bad_parameters_are_refused(tmp_path, field, value):
    paths = [write(tmp_path / f"{n}.tif", d) for n, d in zip("pcs", arrays())]
    with pytest.raises(InputError, match=field):
        cloudmask.merge_cloud_masks(*paths, tmp_path / "mask.tif", options=MergeOptions(**{field: value}))
    assert not (tmp_path / "mask.tif").exists()


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
