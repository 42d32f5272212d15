"""The per-acquisition statistics table of the workflow: what each stacked raster was made
from, and the CSV written next to the outputs."""

import csv
import os
import re
from datetime import datetime, timezone
from pathlib import Path

# Planetary Computer item ids: S2A_MSIL2A_20221005T115411_R023_T29UNU_20221005T164454
_ITEM_ID = re.compile(r"^(S2[A-D])_MSIL2A_(\d{8}T\d{6})_R(\d{3})_T(\d{2}[A-Z]{3})_")


def provenance(raster_path):
    """{"products", "tiles", "platform", "sensing_time", "rel_orbit"} from a stack's PRODUCTS tag."""
    import rasterio

    with rasterio.open(raster_path) as src:
        products = [p for p in src.tags().get("PRODUCTS", "").split(",") if p]
    parsed = [match.groups() for match in map(_ITEM_ID.match, products) if match]
    summary = {"products": products, "tiles": [tile for *_, tile in parsed], "platform": "", "sensing_time": "",
               "rel_orbit": None}
    if parsed:
        platform, sensed, orbit, _ = parsed[0]
        when = datetime.strptime(sensed, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        summary.update(platform=platform, sensing_time=when.isoformat().replace("+00:00", "Z"), rel_orbit=int(orbit))
    return summary


def write_csv(path, columns, rows):
    """Writes rows (dicts) under a temporary name, then renames: never a half-written table."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: f"{value:.2f}" if isinstance(value, float) else value
                                 for key, value in row.items()})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
