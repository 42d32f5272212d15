"""List Sentinel-2 products: STAC search for an area and dates -> a footprint layer."""

from qgis.core import (
    QgsFeatureSink,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
)

from ..core import geometry, records, search, selection
from . import footprints
from .base import S2MasksAlgorithm
from .compat import DOUBLE, INTEGER, POLYGON_SOURCE
from .inputs import (
    PLANETARY_COMPUTER_STAC,
    WGS84,
    add_area_parameters,
    add_date_parameters,
    add_pc_key_parameter,
    add_search_parameters,
    area_geojson,
    date_range,
    request_policy,
    search_key,
    subscription_key,
)


class ListSentinel2Products(S2MasksAlgorithm):
    NAME = "listsentinel2products"
    DISPLAY_NAME = "List Sentinel-2 products"
    DESCRIPTION = (
        "Searches a STAC API (Microsoft Planetary Computer by default) for Sentinel-2 L2A products "
        "that intersect the area between two dates, reading every page of results. Writes one "
        "footprint per product with its tile, orbit, processing baseline, reflectance offset, cloud "
        "cover and the fraction of the area it covers, a link to a preview picture of the scene, plus "
        "the product's STAC JSON, so the selection and download steps need only this layer. Loaded in "
        "QGIS, footprints are outlines labelled with tile and cloud cover; the map tip shows the "
        "preview and the action 'Show scene preview' opens it. Zero products is not an error: the "
        "layer is empty and a warning says so. FarmVibes op: list_sentinel2_products_pc."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        add_area_parameters(self)
        add_date_parameters(self)
        add_search_parameters(self)
        self.add(
            QgsProcessingParameterNumber("TIMEOUT", self.tr("Request timeout (s)"), DOUBLE,
                                         defaultValue=30.0, minValue=1.0),
            "Seconds each request to the STAC API may take, to connect and to answer in full, before it is "
            "tried again. The search fails within about ATTEMPTS times this plus the pauses, naming the host.",
            decimals=0,
        )
        add_pc_key_parameter(self, "Optional key, sent as Ocp-Apim-Subscription-Key; raises Planetary "
                                   "Computer's rate limits.")
        self.add(
            QgsProcessingParameterNumber("ATTEMPTS", self.tr("Attempts per request"), INTEGER,
                                         defaultValue=4, minValue=1, maxValue=20),
            "Tries per request on HTTP 429/5xx, timeouts and dropped connections, with pauses of 1, 2, 4... s "
            "(longer when the server asks with Retry-After, at most 30 s).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Sentinel-2 footprints"), POLYGON_SOURCE),
            "The footprint layer (WGS84), one feature per product.",
        )
        self.addOutput(QgsProcessingOutputNumber("COUNT", self.tr("Number of products found")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        area = self.run_core(geometry.area_from_geojson, area_geojson(self, parameters, context))
        start, end = date_range(self, parameters, context)
        self.run_core(search.validate_date_range, start, end)
        max_cloud = self.parameterAsDouble(parameters, "MAX_CLOUD_COVER", context)
        url = self.parameterAsString(parameters, "STAC_URL", context).strip() or PLANETARY_COMPUTER_STAC
        west, south, east, north = area.bounds
        key, explicit = subscription_key(self, parameters, context, feedback)
        policy = request_policy(self, parameters, context, "TIMEOUT", "ATTEMPTS")
        feedback.pushInfo(self.tr("Searching {} for {} .. {} over lon {:.4f}..{:.4f}, lat {:.4f}..{:.4f}").format(
            url, start, end, west, east, south, north))
        if policy.proxies.http or policy.proxies.https:
            feedback.pushInfo(self.tr("Proxy: {}").format(policy.proxies.describe()))
        items = self.run_core(
            search.search_items,
            geometry.search_geometry(area),
            start,
            end,
            max_cloud_cover=None if max_cloud >= 100 else max_cloud,
            url=url,
            pc_key=search_key(url, key, explicit),
            timeout=policy.timeout,
            attempts=policy.attempts,
            proxies=policy.proxies,
            log=feedback.pushInfo,
            should_cancel=feedback.isCanceled,
        )
        parsed = [self.run_core(records.parse_item, item) for item in items]
        covers = self.run_core(selection.item_cover_fractions, parsed, area)
        # Only now, with everything computed, is the output created: errors leave no file.
        layer_fields = footprints.fields()
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, layer_fields,
                                             footprints.GEOMETRY_TYPE, WGS84)
        if sink is None:
            raise QgsProcessingException(self.tr("Could not create the output layer {!r}.").format(
                parameters.get("OUTPUT")))
        footprints.style_footprints_on_load(context, dest_id)
        for item, record in zip(items, parsed):
            sink.addFeature(footprints.make_feature(layer_fields, item, record, covers[record.id]),
                            QgsFeatureSink.Flag.FastInsert)
        if not items:
            if max_cloud < 100:
                warning = self.tr("No Sentinel-2 L2A product found for {} .. {} over this area with at most {:g}% "
                                  "cloud cover. Widen the dates or the area, or raise the maximum cloud cover.")
                feedback.pushWarning(warning.format(start, end, max_cloud))
            else:
                feedback.pushWarning(self.tr("No Sentinel-2 L2A product found for {} .. {} over this area. Widen the "
                                             "dates or the area, or raise the maximum cloud cover.").format(start, end))
        else:
            feedback.pushInfo(self.tr("{} products found.").format(len(items)))
        return {"OUTPUT": dest_id, "COUNT": len(items)}
