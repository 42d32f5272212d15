"""Several acquisitions of the real fixture scene for multi-date runs (Dask tests and bench): the
fixture item copied to later dates, each copy's assets served under their own URL prefix so that no
acquisition reads another's cached windows."""

import copy
from datetime import datetime, timedelta

from pc_server import COG_DIR
from stack_helpers import FIXTURE_ID, fixture_item

FIRST = datetime(2022, 10, 5, 11, 54, 11)


def dated_copies(double, count: int, every_days: int = 5) -> list:
    """`count` items: the fixture scene on FIRST, FIRST + every_days, ...; they replace the double's items."""
    source = fixture_item(double)
    items = []
    for number in range(count):
        when = FIRST + timedelta(days=every_days * number)
        item = copy.deepcopy(source)
        item["id"] = FIXTURE_ID.replace("20221005T115411", when.strftime("%Y%m%dT%H%M%S"), 1)
        item["properties"]["datetime"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        prefix = double.serve_files(f"/blob/acquisition{number}", COG_DIR / "sentinel2-l2")
        for asset in item["assets"].values():
            if "/sentinel2-l2/" in asset.get("href", ""):
                asset["href"] = prefix + "/" + asset["href"].split("/sentinel2-l2/", 1)[1]
        items.append(item)
    double.items = list(reversed(items))  # newest first, as Planetary Computer answers
    return items


def date_range(count: int, every_days: int = 5) -> dict:
    """START_DATE / END_DATE covering the `count` copies."""
    last = FIRST + timedelta(days=every_days * (count - 1))
    return {"START_DATE": FIRST.strftime("%Y-%m-%d"), "END_DATE": (last + timedelta(days=1)).strftime("%Y-%m-%d")}
