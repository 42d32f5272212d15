"""Improved-mask measurements (issue: masks users can trust). Prints tables; asserts nothing.

On the embedded real scene (2022-10-05, T29UNU, 60% cloud; the `make demo` area, 8 km near
Athenry) with the default ukis-csmask 6-band model, against the scene classification (SCL) as
weak labels (cloud = SCL 8, 9, 10; shadow = SCL 3):

1. Shares of the area (clear / cloud / shadow / nodata) of the improved mask's classes before
   this change (thresholds 0.3 / 0.2, 5 px growth, FarmVibes-era classes), with the former settings
   in the new code, and with the new defaults (the model card's rule, argmax; BUFFER 0 m), next to
   SCL's own shares, with the cloud and shadow IoU against SCL.
2. What the default BUFFER rests on: IoU against SCL for buffers of 0 to 50 m.
3. Card rule against fixed thresholds on a synthetic labelled scene (tests/test_mask_rules.py).

    .venv/bin/python bench/bench_masks.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests")]
AREA = (-8.74, 53.09, -8.62, 53.16)  # the demo's SCENE_AREA
CLASSES = {"clear": 0, "cloud": 1, "shadow": 2, "nodata": 255}


def scene(folder):
    """(stack result, cloud probability path, shadow probability path, SCL on the stack's grid)."""
    from pc_server import PlanetaryComputerDouble
    from shapely.geometry import box
    from stack_helpers import fixture_item
    from test_mask_rules import scl_on_grid

    from s2masks.core import grid as grids
    from s2masks.core import inference, models, records, stack

    with PlanetaryComputerDouble() as double:
        item = records.parse_item(fixture_item(double))
        area = box(*AREA)
        result = stack.stack_acquisition([item], area, grids.output_grid(area), folder / "s2.tif", folder / "m.tif",
                                         stack.StackOptions(cache_dir=folder / "cache"))
        card = models.default_card("cloud")
        out = inference.compute_probabilities(result.raster, {"cloud": card, "shadow": card},
                                              {"cloud": folder / "cloud.tif", "shadow": folder / "shadow.tif"})
        with rasterio.open(result.mask) as src:
            scl = scl_on_grid(double, src.transform, src.shape)
    return result, out["cloud"], out["shadow"], scl


def iou(found, truth):
    return (found & truth).sum() / max(1, (found | truth).sum())


def row(name, classes, truth):
    shares = "".join(f"{100 * (classes == code).mean():8.2f}" for code in CLASSES.values())
    scores = f"{iou(classes == 1, truth == 1):10.3f}{iou(classes == 2, truth == 2):11.3f}"
    return f"  {name:<58}{shares}{scores}"


def main():
    from test_mask_rules import farmvibes_era_classes, labelled_scene

    from s2masks.core import cloudmask
    from s2masks.core.cloudmask import ARGMAX, MergeOptions

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result, cloud_path, shadow_path, scl = scene(folder)
        with rasterio.open(cloud_path) as c, rasterio.open(shadow_path) as s, rasterio.open(result.mask) as m:
            cloud, shadow, product = c.read(1), s.read(1), m.read(1)
        truth = np.where(np.isin(scl, (8, 9, 10)), 1, np.where(scl == 3, 2, 0))

        def merged(options):
            cloudmask.merge_cloud_masks(result.mask, cloud_path, shadow_path, folder / "mask.tif",
                                        folder / "classes.tif", options)
            with rasterio.open(folder / "classes.tif") as src:
                return src.read(1)

        print(f"Real scene 2022-10-05 T29UNU, area {AREA}, {product.size:,} pixels of 10 m; default model "
              "ukis-csmask-6b-l2a")
        print(f"\n1. Shares of the area (%) and IoU against SCL\n  {'':<58}" +
              "".join(f"{name:>8}" for name in CLASSES) + f"{'IoU cloud':>10}{'IoU shadow':>11}")
        print(row("SCL: cloud 8, 9, 10; shadow 3", np.where(scl == 0, 255, truth), truth))
        print(row("product mask (SCL codes, 20 m -> 10 m)", np.select(
            [np.isin(product, (1, 2, 3)), product == 4, product == 255], [1, 2, 255], 0), truth))
        print(row("before: thresholds 0.3/0.2, 5 px growth, former classes", farmvibes_era_classes(
            product, cloud, shadow, 5), truth))
        print(row("now with CLOUD_THR=0.3 SHADOW_THR=0.2 BUFFER=50", merged(MergeOptions(0.3, 0.2, buffer=50)), truth))
        print(row("after: new defaults (card rule argmax, BUFFER 0 m)", merged(MergeOptions()), truth))

        print("\n2. BUFFER (m): IoU against SCL, with the card rule (argmax)\n"
              f"  {'buffer':>8}{'masked %':>10}{'IoU cloud':>10}{'IoU shadow':>11}{'IoU masked':>11}")
        for buffer in (0, 10, 20, 30, 50):
            classes = merged(MergeOptions(buffer=buffer))
            print(f"  {buffer:>8}{100 * (classes != 0).mean():>10.2f}{iou(classes == 1, truth == 1):>10.3f}"
                  f"{iou(classes == 2, truth == 2):>11.3f}{iou(classes != 0, truth != 0):>11.3f}")

    print("\n3. Synthetic labelled scenes (tests/test_mask_rules.py): cloud / shadow IoU")
    for seed in range(3):
        labels, cloud, shadow = labelled_scene(seed)
        zeros = np.zeros(labels.shape, np.uint8)
        scores = []
        for rules in (ARGMAX, cloudmask.resolve_rules(MergeOptions(0.3, 0.2))):
            _, classes = cloudmask.merge_arrays(zeros, cloud, shadow, rules=rules)
            scores.append(f"{iou(classes == 1, labels == 1):.3f} / {iou(classes == 2, labels == 2):.3f}")
        print(f"  seed {seed}: argmax {scores[0]}, thresholds 0.3/0.2 {scores[1]}")


if __name__ == "__main__":
    main()
