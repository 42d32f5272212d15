"""The footprint layer: one polygon per Sentinel-2 item, with the parsed fields and the
item's full STAC JSON, so later steps (selection, download) need nothing but this layer.

Write it to GeoPackage or keep it in memory: a Shapefile cuts text at 254 characters and
so loses the item JSON.
"""

import json

from qgis.core import QgsFeature, QgsFeatureRequest, QgsFields, QgsGeometry, QgsProcessingException, QgsWkbTypes

from .compat import make_field

FIELDS = (
    ("item_id", str),
    ("datetime", str),  # ISO 8601, UTC
    ("platform", str),
    ("mgrs_tile", str),
    ("epsg", int),
    ("rel_orbit", int),
    ("abs_orbit", int),
    ("baseline", str),
    ("refl_offset", int),
    ("cloud_cover", float),
    ("area_cover", float),  # fraction of the area this item covers
    ("product", str),
    ("self_href", str),
    ("item_json", str),
)
SELECTION_FIELDS = (
    ("pass_order", int),  # 1 = the chosen tile covering most of the area
    ("pass_cover", float),  # fraction of the area the acquisition's chosen tiles cover
)
GEOMETRY_TYPE = QgsWkbTypes.Type.MultiPolygon


def fields(with_selection=False):
    result = QgsFields()
    for name, kind in FIELDS + (SELECTION_FIELDS if with_selection else ()):
        result.append(make_field(name, kind))
    return result


def make_feature(layer_fields, item_json, record, area_cover, selection=None):
    values = {
        "item_id": record.id,
        "datetime": record.datetime.isoformat().replace("+00:00", "Z"),
        "platform": record.platform,
        "mgrs_tile": record.mgrs_tile,
        "epsg": record.epsg,
        "rel_orbit": record.relative_orbit,
        "abs_orbit": record.absolute_orbit,
        "baseline": record.processing_baseline,
        "refl_offset": record.reflectance_offset,
        "cloud_cover": record.cloud_cover,
        "area_cover": area_cover,
        "product": record.product_uri,
        "self_href": record.self_href,
        "item_json": json.dumps(item_json, separators=(",", ":")),
    }
    if selection:
        values.update(selection)
    feature = QgsFeature(layer_fields)
    for name, value in values.items():
        feature[name] = value
    geometry = QgsGeometry.fromWkt(_wkt(record.footprint))
    geometry.convertToMultiType()
    feature.setGeometry(geometry)
    return feature


def _wkt(geojson_geometry):
    from shapely.geometry import shape  # core already requires shapely

    return shape(geojson_geometry).wkt


def read_items(source, feedback):
    """The STAC item dicts stored on a footprint layer's features."""
    if source.fields().indexOf("item_json") < 0:
        raise QgsProcessingException(
            "The footprint layer has no 'item_json' field. Use the output of "
            "'List Sentinel-2 products' (s2masks:listsentinel2products)."
        )
    items = []
    for feature in source.getFeatures(QgsFeatureRequest()):
        if feedback.isCanceled():
            break
        text = feature["item_json"]
        try:
            items.append(json.loads(text))
        except (TypeError, ValueError) as err:
            raise QgsProcessingException(
                f"Feature {feature.id()} has no complete item JSON. Was the footprint layer saved as a "
                "Shapefile, which cuts text at 254 characters? Save it as GeoPackage or keep it as a "
                "temporary layer."
            ) from err
    return items
