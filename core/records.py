"""Typed records for what flows between the steps, parsed from STAC item JSON."""

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Tuple

from .errors import InputError

# The 12 L2A bands in the order FarmVibes stacks them (B10 does not exist in L2A).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S2_ASSETS = S2_BANDS + ("SCL",)

# From processing baseline 04.00 (January 2022) on, L2A DN carry BOA_ADD_OFFSET = -1000.
OFFSET_BASELINE = (4, 0)
BOA_ADD_OFFSET = -1000


@dataclass(frozen=True)
class BandAsset:
    name: str
    href: str
    gsd: Optional[float]
    shape: Optional[Tuple[int, int]]  # rows, cols
    transform: Optional[Tuple[float, ...]]  # the 6 affine coefficients a, b, c, d, e, f


@dataclass(frozen=True)
class Sentinel2Item:
    id: str
    datetime: datetime
    platform: str  # "S2A", "S2B", "S2C"
    mgrs_tile: str
    epsg: Optional[int]
    relative_orbit: Optional[int]
    absolute_orbit: Optional[int]
    processing_baseline: str
    reflectance_offset: int
    cloud_cover: Optional[float]
    product_uri: str
    footprint: dict  # GeoJSON geometry, WGS84
    bands: dict = field(default_factory=dict)  # name -> BandAsset
    self_href: Optional[str] = None
    sun_azimuth: Optional[float] = None  # s2:mean_solar_azimuth, degrees clockwise from north
    sun_zenith: Optional[float] = None  # s2:mean_solar_zenith, degrees

    @property
    def acquisition_key(self):
        """Items of one satellite pass (one datatake) share this key."""
        return (self.platform, self.datetime)


def reflectance_offset(baseline):
    """The DN offset to add for a processing baseline string such as '04.00'."""
    return BOA_ADD_OFFSET if baseline_tuple(baseline) >= OFFSET_BASELINE else 0


def baseline_tuple(baseline):
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(baseline or ""))
    if not match:
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def absolute_orbit_from_datatake(datatake_id):
    """'GS2A_20221005T115411_038058_N04.00' -> 38058 (no manifest download needed)."""
    match = re.match(r"^G\w+?_\d{8}T\d{6}_(\d+)_", datatake_id or "")
    return int(match.group(1)) if match else None


def _platform_code(platform, item_id):
    match = re.search(r"2([A-D])$", (platform or "").strip(), re.IGNORECASE)
    if match:
        return "S2" + match.group(1).upper()
    return item_id[:3]


def _parse_datetime(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _band_asset(name, asset):
    shape = asset.get("proj:shape")
    transform = asset.get("proj:transform")
    return BandAsset(
        name=name,
        href=asset["href"],
        gsd=asset.get("gsd"),
        shape=tuple(shape) if shape else None,
        transform=tuple(transform[:6]) if transform else None,
    )


def _epsg(properties):
    if properties.get("proj:epsg"):
        return int(properties["proj:epsg"])
    code = properties.get("proj:code") or ""  # STAC projection extension v2
    return int(code.split(":")[1]) if code.upper().startswith("EPSG:") else None


def _optional_float(value):
    return None if value is None else float(value)


def parse_item(item):
    """A Planetary Computer sentinel-2-l2a item (dict) -> Sentinel2Item."""
    try:
        props = item["properties"]
        item_id = item["id"]
        baseline = props.get("s2:processing_baseline", "")
        self_href = next((link["href"] for link in item.get("links", []) if link.get("rel") == "self"), None)
        return Sentinel2Item(
            id=item_id,
            datetime=_parse_datetime(props["datetime"]),
            platform=_platform_code(props.get("platform"), item_id),
            mgrs_tile=props.get("s2:mgrs_tile", ""),
            epsg=_epsg(props),
            relative_orbit=props.get("sat:relative_orbit"),
            absolute_orbit=absolute_orbit_from_datatake(props.get("s2:datatake_id")),
            processing_baseline=baseline,
            reflectance_offset=reflectance_offset(baseline),
            cloud_cover=props.get("eo:cloud_cover"),
            product_uri=(props.get("s2:product_uri") or item_id).removesuffix(".SAFE"),
            footprint=item["geometry"],
            bands={name: _band_asset(name, item["assets"][name]) for name in S2_ASSETS if name in item.get("assets", {})},
            self_href=self_href,
            sun_azimuth=_optional_float(props.get("s2:mean_solar_azimuth")),
            sun_zenith=_optional_float(props.get("s2:mean_solar_zenith")),
        )
    except (KeyError, TypeError, ValueError) as err:
        ident = item.get("id", "?") if isinstance(item, dict) else "?"
        raise InputError(f"STAC item {ident} is not a Sentinel-2 L2A item this plugin can read: {err!r}") from err
