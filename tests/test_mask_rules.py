"""Which rule turns probabilities into classes, measured on labelled rasters: a synthetic scene with
known cloud and shadow objects and a softmax-like model output, and the embedded real scene with
its scene classification (SCL) as weak labels. The model card's rule (argmax for the softmax
ukis-csmask model) must beat FarmVibes' fixed thresholds 0.3 / 0.2 on IoU, and growing the mask
must not relabel shadow next to clouds as cloud."""

import numpy as np
import pytest
import rasterio
from scipy import ndimage
from stack_helpers import fixture_item, local_path

from s2masks.core import cloudmask, inference, models, records
from s2masks.core import grid as grids
from s2masks.core.cloudmask import ARGMAX, CLEAR, CLOUD, SHADOW, MergeOptions

FARMVIBES = MergeOptions(cloud_thr=0.3, shadow_thr=0.2)


def iou(found, truth):
    return (found & truth).sum() / (found | truth).sum()


def labelled_scene(seed, size=300, shift=(9, 14)):
    """(labels, P(cloud), P(shadow)): clouds are smooth blobs, each casting a shadow shifted by
    `shift` pixels (so shadows touch their clouds, as in real scenes); the model output is a
    softmax over clear / cloud / shadow of blurred class evidence (a coarse model) plus noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((size + 40, size + 40)), 6)
    clouds = field > np.quantile(field, 0.85)
    cloud = clouds[20:20 + size, 20:20 + size]
    shadow = clouds[20 - shift[0]:20 - shift[0] + size, 20 - shift[1]:20 - shift[1] + size] & ~cloud
    labels = np.where(cloud, CLOUD, np.where(shadow, SHADOW, CLEAR)).astype(np.uint8)
    evidence = np.stack([ndimage.gaussian_filter((labels == k).astype(float), 1.5) for k in (CLEAR, CLOUD, SHADOW)])
    logits = 4.0 * evidence + rng.normal(0, 0.9, evidence.shape)
    probabilities = np.exp(logits - logits.max(axis=0))
    probabilities /= probabilities.sum(axis=0)
    return labels, probabilities[1].astype(np.float32), probabilities[2].astype(np.float32)


def farmvibes_era_classes(product, cloud_prob, shadow_prob, radius):
    """The classes before this change, for comparison: thresholds 0.3 / 0.2, everything dilated by
    `radius` pixels, and a masked pixel shadow only if near shadow and *not near cloud*."""
    cloud = (cloud_prob > 0.3) | np.isin(product, (1, 2, 3))
    shadow = (shadow_prob > 0.2) | (product == 4)
    masked = cloudmask.dilate(cloud | shadow | (product == 255), radius)
    near_shadow = cloudmask.dilate(shadow, radius) & ~cloudmask.dilate(cloud, radius)
    return np.where(masked, np.where(near_shadow, SHADOW, CLOUD), CLEAR)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_argmax_beats_the_fixed_thresholds_on_a_labelled_scene(seed):
    labels, cloud, shadow = labelled_scene(seed)
    product = np.zeros(labels.shape, np.uint8)
    _, by_card = cloudmask.merge_arrays(product, cloud, shadow, rules=ARGMAX)
    _, by_thresholds = cloudmask.merge_arrays(product, cloud, shadow, FARMVIBES)
    scores = {name: (iou(classes == CLOUD, labels == CLOUD), iou(classes == SHADOW, labels == SHADOW))
              for name, classes in (("argmax", by_card), ("0.3/0.2", by_thresholds))}
    print(f"seed {seed}: cloud / shadow IoU " + ", ".join(f"{k} {c:.3f} / {s:.3f}" for k, (c, s) in scores.items()))
    assert scores["argmax"][0] > scores["0.3/0.2"][0] + 0.02
    assert scores["argmax"][1] > scores["0.3/0.2"][1] + 0.05
    assert min(scores["argmax"]) > 0.8
    # the thresholds over-flag a softmax output: more masked than labelled
    assert (by_thresholds != CLEAR).sum() > 1.1 * (labels != CLEAR).sum()
    assert abs((by_card != CLEAR).sum() / (labels != CLEAR).sum() - 1) < 0.1


def test_growth_keeps_shadow_next_to_clouds_shadow():
    labels, cloud, shadow = labelled_scene(0)
    product = np.zeros(labels.shape, np.uint8)
    flagged_cloud, flagged_shadow = cloudmask.flags(cloud, shadow, ARGMAX)
    _, grown = cloudmask.merge_arrays(product, cloud, shadow, MergeOptions(buffer=50), rules=ARGMAX)
    assert (grown[flagged_shadow] == SHADOW).all() and (grown[flagged_cloud] == CLOUD).all()
    next_to_cloud = (labels == SHADOW) & cloudmask.dilate(labels == CLOUD, 5)
    assert next_to_cloud.sum() > 1000  # the case at stake
    assert (grown[next_to_cloud] == SHADOW).mean() > 0.9  # the rest: where the model itself says cloud or clear
    before = farmvibes_era_classes(product, cloud, shadow, 5)
    assert (before[next_to_cloud] == SHADOW).mean() < 0.2  # what the FarmVibes-era classes did
    assert iou(grown == SHADOW, labels == SHADOW) > iou(before == SHADOW, labels == SHADOW) + 0.2


def test_on_the_real_scene_argmax_agrees_better_with_sen2cor(pc_double, stacked, tmp_path):
    """The embedded real scene (8 km, 2022-10-05, 60% cloud) and the default model, against the
    scene classification as weak labels: cloud = SCL 8, 9, 10; shadow = SCL 3."""
    card = models.default_card("cloud")
    out = inference.compute_probabilities(stacked.raster, {"cloud": card, "shadow": card},
                                          {"cloud": tmp_path / "cloud.tif", "shadow": tmp_path / "shadow.tif"})
    with rasterio.open(out["cloud"]) as c, rasterio.open(out["shadow"]) as s, rasterio.open(stacked.mask) as m:
        cloud, shadow, product, transform = c.read(1), s.read(1), m.read(1), m.transform
    scl = scl_on_grid(pc_double, transform, cloud.shape)
    sen2cor_cloud, sen2cor_shadow = np.isin(scl, (8, 9, 10)), scl == 3
    assert sen2cor_cloud.mean() > 0.03 and sen2cor_shadow.mean() > 0.2

    model_only = np.zeros_like(product)  # the rule alone, without the product mask it is compared with
    scores = {}
    for name, rules in (("argmax", ARGMAX), ("0.3/0.2", cloudmask.resolve_rules(FARMVIBES))):
        _, classes = cloudmask.merge_arrays(model_only, cloud, shadow, rules=rules)
        scores[name] = (iou(classes == CLOUD, sen2cor_cloud), iou(classes == SHADOW, sen2cor_shadow))
    # the improved mask as written, with the product mask: new defaults against the former ones
    statistics = cloudmask.merge_cloud_masks(stacked.mask, out["cloud"], out["shadow"], tmp_path / "mask.tif",
                                             tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as src:
        improved = src.read(1)
    former = farmvibes_era_classes(product, cloud, shadow, 5)
    scores["improved mask"] = (iou(improved == CLOUD, sen2cor_cloud), iou(improved == SHADOW, sen2cor_shadow))
    scores["former mask"] = (iou(former == CLOUD, sen2cor_cloud), iou(former == SHADOW, sen2cor_shadow))
    print("cloud / shadow IoU against SCL: " + ", ".join(f"{k} {c:.3f} / {s:.3f}" for k, (c, s) in scores.items()))
    assert scores["argmax"][0] > scores["0.3/0.2"][0] + 0.03
    assert scores["argmax"][1] > scores["0.3/0.2"][1] + 0.03
    assert scores["improved mask"][0] > scores["former mask"][0] + 0.05
    assert scores["improved mask"][1] > scores["former mask"][1] + 0.05
    row = statistics.as_row()
    assert row["pct_nodata"] == 0 and row["pct_cloud"] < 100 * (former == CLOUD).mean()
    assert row["pct_shadow"] < 100 * (former == SHADOW).mean()


def scl_on_grid(double, transform, shape):
    """The fixture's 20 m SCL, nearest, on the stack's 10 m grid."""
    item = records.parse_item(fixture_item(double))
    with rasterio.open(local_path(double, item.bands["SCL"].href)) as src:
        scl, scl_transform = src.read(1), src.transform
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xs, ys = grids.apply(transform, cols + 0.5, rows + 0.5)
    scl_cols, scl_rows = grids.apply(~scl_transform, xs, ys)
    return scl[np.clip(scl_rows.astype(int), 0, scl.shape[0] - 1), np.clip(scl_cols.astype(int), 0, scl.shape[1] - 1)]
