"""The shadow check (issue: shadows that follow the sun), measured on the embedded real scene.
Prints tables; asserts nothing.

The real T29UNU scene of 2022-10-05 (sun azimuth 172.8 degrees, zenith 57.8 degrees, from the
fixture item, i.e. the product's MTD_TL.xml) is stacked over two areas: the `make demo` area (8 km
near Athenry) and the whole 12 km fixture crop; the default ukis-csmask 6-band model gives the
probabilities; the mask step runs with SHADOW_GEOMETRY off and on, with the model card's rule and
with the former thresholds 0.3 / 0.2. Printed: a) the cloud and shadow shares of the area in the
improved classes as written, next to the scene classification's own shares (cloud = SCL 8, 9, 10;
shadow = SCL 3); that mask includes the product mask, i.e. SCL, whose shadow the check keeps, so
its agreement with SCL is partly by construction; b) the model's own flags without the product
mask, where the check is judged: shadow share, IoU against SCL, and of the shadow the check
cleared, how much SCL calls shadow; also under the sun the fixture item carried by mistake before
(another product's: azimuth 245.3, zenith 63.0), to show what a wrong sun does. Writes
docs/shadows.png: per area true colour, SCL, the improved mask without the check, and with it
(white cloud, blue shadow, red shadow cleared).

    .venv/bin/python bench/bench_shadows.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests")]
AREAS = {"demo area, 8 km": (-8.74, 53.09, -8.62, 53.16),  # the demo's SCENE_AREA
         "fixture crop, 12 km": (-8.771, 53.072, -8.591, 53.180)}  # the fixture item's bbox
PICTURE = REPO / "docs" / "shadows.png"
WRONG_SUN = (245.346023617542, 63.0036756665255)  # what the fixture item said before (the T24XWR item's)


def scene(double, folder, area):
    """(stack result, cloud probability, shadow probability, SCL on the stack's grid, true colour)."""
    from shapely.geometry import box
    from stack_helpers import fixture_item
    from test_mask_rules import scl_on_grid

    from s2masks.core import grid as grids
    from s2masks.core import inference, models, records, stack

    item = records.parse_item(fixture_item(double))
    result = stack.stack_acquisition([item], box(*area), grids.output_grid(box(*area)), folder / "s2.tif",
                                     folder / "m.tif", stack.StackOptions(cache_dir=folder / "cache"))
    card = models.default_card("cloud")
    out = inference.compute_probabilities(result.raster, {"cloud": card, "shadow": card},
                                          {"cloud": folder / "cloud.tif", "shadow": folder / "shadow.tif"})
    with rasterio.open(result.raster) as src:
        scl = scl_on_grid(double, src.transform, src.shape)
        rgb = src.read([4, 3, 2]).astype(np.float32)
    return result, out["cloud"], out["shadow"], scl, rgb


def iou(found, truth):
    return (found & truth).sum() / max(1, (found | truth).sum())


def true_colour(rgb):
    """B04, B03, B02 (DN = reflectance x 10000) stretched from reflectance 0 to 0.2, gamma 1/1.6."""
    valid = rgb.any(axis=0)
    image = (255 * np.clip(rgb / 2000.0, 0, 1) ** (1 / 1.6)).astype(np.uint8).transpose(1, 2, 0)
    image[~valid] = 0
    return image


def overlay(image, cloud, shadow, cleared=None):
    out = (image // 2 + 64).copy()
    out[cloud] = (255, 255, 255)
    out[shadow & ~cloud] = (30, 90, 255)
    if cleared is not None:
        out[cleared] = (230, 30, 30)
    return out


def picture(rows, tile_height=360):
    """One row per area, four tiles of equal height, each with its title above."""
    from PIL import Image, ImageDraw, ImageFont

    titles = ("true colour", "SCL: cloud 8-10, shadow 3", "shadow check off", "shadow check on (red: cleared)")
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 14)
    except OSError:
        font = ImageFont.load_default()
    gap, header = 8, 40
    scaled = [(name, [Image.fromarray(tile).resize((round(tile.shape[1] * tile_height / tile.shape[0]), tile_height),
                                                   Image.NEAREST) for tile in tiles]) for name, tiles in rows]
    width = max(sum(tile.width for tile in tiles) + gap * (len(tiles) - 1) for _, tiles in scaled)
    sheet = Image.new("RGB", (width, len(rows) * (header + tile_height + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for number, (name, tiles) in enumerate(scaled):
        y, x = number * (header + tile_height + gap), 0
        for index, (title, tile) in enumerate(zip(titles, tiles)):
            draw.text((x + 2, y + 2), name if index == 0 else "", fill=(0, 0, 0), font=font)
            draw.text((x + 2, y + 20), title, fill=(0, 0, 0), font=font)
            sheet.paste(tile, (x, y + header))
            x += tile.width + gap
    PICTURE.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(PICTURE, optimize=True)


def main():
    from pc_server import PlanetaryComputerDouble

    from s2masks.core import cloudmask, shadows
    from s2masks.core.cloudmask import ARGMAX, CLOUD, SHADOW, MergeOptions

    rows = []
    print("Real scene 2022-10-05 T29UNU, default model ukis-csmask-6b-l2a; shares in % of the area; IoU against "
          "SCL (cloud 8, 9, 10; shadow 3)")
    with PlanetaryComputerDouble() as double, tempfile.TemporaryDirectory() as tmp:
        for name, area in AREAS.items():
            folder = Path(tmp) / name.split(",")[0].replace(" ", "_")
            folder.mkdir()
            result, cloud_path, shadow_path, scl, rgb = scene(double, folder, area)
            sen2cor_cloud, sen2cor_shadow = np.isin(scl, (8, 9, 10)), scl == 3
            with rasterio.open(result.mask) as src, rasterio.open(cloud_path) as c, rasterio.open(shadow_path) as s:
                sun, cloud, shadow = shadows.sun_from_tags(src.tags()), c.read(1), s.read(1)

            def written(options):
                lines = []
                cloudmask.merge_cloud_masks(result.mask, cloud_path, shadow_path, folder / "mask.tif",
                                            folder / "classes.tif", options, log=lines.append)
                with rasterio.open(folder / "classes.tif") as src:
                    return src.read(1), lines

            def row(label, found, before):
                cleared = (before == SHADOW) & (found != SHADOW)
                print(f"  {label:<60}{100 * (found == CLOUD).mean():>9.2f}{100 * (found == SHADOW).mean():>9.2f}"
                      f"{iou(found == CLOUD, sen2cor_cloud):>10.3f}{iou(found == SHADOW, sen2cor_shadow):>11.3f}"
                      f"{100 * cleared.mean():>10.2f}{(cleared & sen2cor_shadow).sum() / max(1, cleared.sum()):>12.2f}")

            print(f"\n{name}: {scl.size:,} pixels of 10 m, sun azimuth {sun.azimuth:.1f}, zenith {sun.zenith:.1f} "
                  f"(the stack's tags); SCL: cloud {100 * sen2cor_cloud.mean():.2f}, shadow "
                  f"{100 * sen2cor_shadow.mean():.2f}, nodata {100 * (scl == 0).mean():.2f}")
            header = (f"  {'':<60}{'cloud %':>9}{'shadow %':>9}{'IoU cloud':>10}{'IoU shadow':>11}{'cleared %':>10}"
                      f"{'of it SCL 3':>12}")
            for label, thresholds in (("card rule (argmax, default)", {}),
                                      ("thresholds 0.3 / 0.2 (former default)", dict(cloud_thr=0.3, shadow_thr=0.2))):
                print(f" {label}\n   a) the improved mask as written (the product mask, i.e. SCL, included)\n"
                      + header)
                off, _ = written(MergeOptions(shadow_geometry=False, **thresholds))
                on, lines = written(MergeOptions(**thresholds))
                row("check off", off, off)
                row("check on", on, off)
                print("    log: " + next(line for line in lines if line.startswith("Shadow check:")))
                print("    log: " + next(line for line in lines if line.startswith("The shadow check cleared")))
                print("   b) the model's own flags, without the product mask (what the check is judged on)\n" + header)
                rules = ARGMAX if not thresholds else cloudmask.resolve_rules(MergeOptions(**thresholds))
                model_only = np.zeros(scl.shape, np.uint8)
                base = cloudmask.merge_arrays(model_only, cloud, shadow, MergeOptions(shadow_geometry=False), rules)[1]
                row("check off", base, base)
                row("check on", cloudmask.merge_arrays(model_only, cloud, shadow, MergeOptions(), rules, sun=sun)[1],
                    base)
                row(f"check on, wrong sun {WRONG_SUN[0]:.1f} / {WRONG_SUN[1]:.1f}", cloudmask.merge_arrays(
                    model_only, cloud, shadow, MergeOptions(sun_azimuth=WRONG_SUN[0], sun_zenith=WRONG_SUN[1]),
                    rules)[1], base)
                if not thresholds:
                    image = true_colour(rgb)
                    rows.append((name, [image, overlay(image, sen2cor_cloud, sen2cor_shadow),
                                        overlay(image, off == CLOUD, off == SHADOW),
                                        overlay(image, on == CLOUD, on == SHADOW, (off == SHADOW) & (on != SHADOW))]))
    picture(rows)
    print(f"\nPicture: {PICTURE.relative_to(REPO)} (the improved mask as written: white cloud, blue shadow, red: "
          "shadow the check cleared)")


if __name__ == "__main__":
    main()
