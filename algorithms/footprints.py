"""The footprint layer: one polygon per Sentinel-2 item, with the parsed fields and the
item's full STAC JSON, so later steps (selection, download) need nothing but this layer.

Write it to GeoPackage or keep it in memory: a Shapefile cuts text at 254 characters and
so loses the item JSON.

When an algorithm loads such a layer into the project (`style_footprints_on_load`), it is drawn
as hollow outlines labelled with tile and cloud cover, so the rasters under it stay visible, and
gets a map tip with the scene's preview image and a "Show scene preview" action.
"""

import json

from qgis.core import (
    Qgis,
    QgsAction,
    QgsFeature,
    QgsFeatureRequest,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsPalLayerSettings,
    QgsProcessingException,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QColor

from .compat import make_field
from .layers import style_on_load

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
    ("preview_url", str),  # a browser-viewable picture of the scene ('' when the item has none)
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
        "preview_url": preview_url(item_json),
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


_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif")


def preview_url(item_json):
    """The link to a picture of the scene a browser can show: the `rendered_preview` asset
    (Planetary Computer's PNG), else the `thumbnail` asset, else any PNG/JPEG asset with the
    role thumbnail or overview; '' when there is none. (Planetary Computer's `preview` asset
    is a GeoTIFF, which no map tip can show.)"""
    assets = item_json.get("assets") or {}
    for key in ("rendered_preview", "thumbnail"):
        href = (assets.get(key) or {}).get("href")
        if href:
            return href
    for asset in assets.values():
        roles = set(asset.get("roles") or ())
        kind = (asset.get("type") or "").split(";")[0].strip().lower()
        if asset.get("href") and roles & {"thumbnail", "overview"} and kind in _IMAGE_TYPES:
            return asset["href"]
    return ""


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


# -- how a footprint layer looks once loaded -----------------------------------------------------
OUTLINE_COLOUR = QColor(255, 160, 0)  # orange: visible on vegetation, soil, water and white cloud, apart from the masks
OUTLINE_WIDTH_MM = 0.6
# "29UNU 60%"; just the tile when the cloud cover is unknown
LABEL_EXPRESSION = "\"mgrs_tile\" || coalesce(' ' || round(\"cloud_cover\") || '%', '')"
PREVIEW_ACTION_COMMAND = '[% "preview_url" %]'
PREVIEW_IMAGE_WIDTH = 300


def _tr(text):
    return QCoreApplication.translate("S2Masks", text)


def _open_url_action_type():
    if hasattr(Qgis, "AttributeActionType"):  # newer QGIS moved the enum to Qgis
        return Qgis.AttributeActionType.OpenUrl
    return QgsAction.ActionType.OpenUrl


def preview_action_name():
    return _tr("Show scene preview")


def map_tip_template(with_preview=True):
    """HTML for the map tip: tile, date, cloud cover and the preview image (when there is one)."""
    lines = [
        '<b>[% "mgrs_tile" %]</b> [% "platform" %]',
        "[% replace(left(\"datetime\", 19), 'T', ' ') %] UTC",
        _tr("Cloud cover") + ": [% coalesce(round(\"cloud_cover\", 1) || ' %', '?') %]",
    ]
    if with_preview:
        lines.append("[% CASE WHEN coalesce(\"preview_url\", '') <> '' THEN "
                      f"'<img src=\"' || \"preview_url\" || '\" width=\"{PREVIEW_IMAGE_WIDTH}\">' "
                      "ELSE '" + _tr("No preview for this product.").replace("'", "''") + "' END %]")
    return "<br>".join(lines)


def apply_footprint_style(layer):
    """Hollow outlines labelled "<tile> <cloud cover>%", a map tip with the preview and an action
    opening it. Works on any layer with this module's fields (preview parts only when it has
    `preview_url`); running it twice adds nothing twice."""
    symbol = QgsFillSymbol.createSimple({
        "style": "no",  # no fill: the imagery under the footprints stays visible
        "outline_style": "solid",
        "outline_color": ",".join(str(v) for v in OUTLINE_COLOUR.getRgb()),
        "outline_width": str(OUTLINE_WIDTH_MM),
        "outline_width_unit": "MM",
    })
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))

    text = QgsTextFormat()
    text.setSize(9)
    text.setColor(OUTLINE_COLOUR.darker(150))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor(255, 255, 255))
    text.setBuffer(buffer)
    settings = QgsPalLayerSettings()
    settings.fieldName = LABEL_EXPRESSION
    settings.isExpression = True
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.setDisplayExpression(LABEL_EXPRESSION)

    has_preview = layer.fields().indexOf("preview_url") >= 0
    layer.setMapTipTemplate(map_tip_template(with_preview=has_preview))
    if hasattr(layer, "setMapTipsEnabled"):  # QGIS 3.32+: map tips can be switched off per layer
        layer.setMapTipsEnabled(True)
    name = preview_action_name()
    if has_preview and not any(action.name() == name for action in layer.actions().actions()):
        layer.actions().addAction(QgsAction(_open_url_action_type(), name, PREVIEW_ACTION_COMMAND, "", False,
                                            _tr("Preview"), {"Feature", "Canvas"}))
    layer.triggerRepaint()


def _style_if_footprints(layer):
    if isinstance(layer, QgsVectorLayer) and layer.fields().indexOf("mgrs_tile") >= 0:
        apply_footprint_style(layer)


def style_footprints_on_load(context, dest_id):
    """Call in processAlgorithm after creating a footprint sink (dest_id as parameterAsSink
    returns it): if the run loads that layer (Toolbox, processing.runAndLoadResults), it is
    styled as footprints. Does nothing otherwise."""
    if dest_id:
        style_on_load(context, dest_id, extra=_style_if_footprints)
