"""Helpers for the stacking tests: the fixture item from the double, and a two-tile,
two-UTM-zone split of the real fixture made at test time."""

import copy
import json
from pathlib import Path

import numpy as np
import rasterio
import requests
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_geom

from s2masks.core import grid as grids

FIXTURE_ID = "S2A_MSIL2A_20221005T115411_R023_T29UNU_20221005T164454"
COG_PROFILE = dict(driver="COG", compress="DEFLATE", predictor=2, blocksize=256)


def fixture_item(double):
    return requests.get(f"{double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}", timeout=10).json()


def local_path(double, href):
    return double.file_for(href[len(double.base):])


def _write(path, data, transform, crs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
                       crs=crs, transform=transform, nodata=0, **COG_PROFILE) as dst:
        dst.write(data, 1)


def split_two_zones(double, folder, west_fraction=0.6, east_start=0.4):
    """Two items cut from the real fixture: the west part in EPSG:32629 (as served) and the
    east part reprojected (nearest) to EPSG:32630, overlapping in the middle."""
    source = fixture_item(double)
    base_url = double.serve_files("/blob/split", folder)
    items = []
    for part, epsg in (("west", 32629), ("east", 32630)):
        item = copy.deepcopy(source)
        item["id"] = source["id"].replace("T29UNU", f"T29UNU{part.upper()}")
        item["properties"]["proj:epsg"] = epsg
        for name, asset in item["assets"].items():
            with rasterio.open(local_path(double, asset["href"])) as src:
                data, transform = src.read(1), src.transform
            width = data.shape[1]
            if part == "west":
                data = data[:, : int(width * west_fraction)]
            else:
                start = int(width * east_start)
                data, transform = data[:, start:], grids.offset_transform(transform, start, 0)
                data, transform = _reproject_nearest(data, transform, src.crs, f"EPSG:{epsg}", src.res[0])
            relative = f"{part}/{name}.tif"
            _write(Path(folder) / relative, data, transform, f"EPSG:{epsg}")
            asset.update({"href": f"{base_url}/{relative}", "proj:shape": list(data.shape),
                          "proj:transform": list(transform)[:6]})
        footprint = _footprint(item["assets"]["B02"], epsg)
        item["geometry"] = footprint
        items.append(item)
    return items


def _reproject_nearest(data, transform, src_crs, dst_crs, resolution):
    height, width = data.shape
    left, top = transform.c, transform.f
    bounds = (left, top - resolution * height, left + resolution * width, top)
    dst_transform, dst_width, dst_height = calculate_default_transform(
        src_crs, dst_crs, width, height, *bounds, resolution=resolution)
    # snap the origin to the pixel grid of this resolution, as Sentinel-2 tiles are
    dst_transform = Affine(resolution, 0, np.floor(dst_transform.c / resolution) * resolution,
                           0, -resolution, np.ceil(dst_transform.f / resolution) * resolution)
    out = np.zeros((dst_height + 1, dst_width + 1), dtype=data.dtype)
    reproject(data, out, src_transform=transform, src_crs=src_crs, src_nodata=0, dst_transform=dst_transform,
              dst_crs=dst_crs, dst_nodata=0, resampling=Resampling.nearest)
    return out, dst_transform


def _footprint(asset, epsg):
    transform = Affine(*asset["proj:transform"])
    rows, cols = asset["proj:shape"]
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * cols, top + transform.e * rows
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return json.loads(json.dumps(transform_geom(f"EPSG:{epsg}", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})))
