"""Select necessary coverage items: per acquisition, the fewest tiles covering the area."""

from qgis.core import (
    QgsFeatureSink,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
)

from ..core import geometry, records, selection
from . import footprints
from .base import S2MasksAlgorithm
from .compat import POLYGON_SOURCE
from .inputs import WGS84, add_area_parameters, add_coverage_parameters, area_geojson


class SelectNecessaryCoverageItems(S2MasksAlgorithm):
    NAME = "selectnecessarycoverageitems"
    DISPLAY_NAME = "Select necessary coverage items"
    DESCRIPTION = (
        "Groups the listed products by acquisition (one satellite pass) and, for each, keeps the "
        "fewest tiles whose footprints together cover at least the minimum fraction of the area. "
        "Areas are measured in metres (equal-area projection centred on the area), not degrees. "
        "An acquisition that cannot reach the cover is dropped and reported in the log. "
        "Ties go to the larger intersection, then the newest processing, then the product id. "
        "FarmVibes op: select_necessary_coverage_items."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(
            QgsProcessingParameterFeatureSource("FOOTPRINTS", self.tr("Sentinel-2 footprints"), [POLYGON_SOURCE]),
            "Output of 'List Sentinel-2 products' (needs its item_json field).",
        )
        add_area_parameters(self)
        add_coverage_parameters(self)
        self.add(
            QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Selected footprints"), POLYGON_SOURCE),
            "The chosen products, with pass_order (1 = the tile covering most of the area) and pass_cover (the fraction of the area the acquisition covers).",
        )
        self.addOutput(QgsProcessingOutputNumber("ACQUISITIONS", self.tr("Acquisitions kept")))
        self.addOutput(QgsProcessingOutputNumber("DROPPED", self.tr("Acquisitions dropped")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        min_cover = self.parameterAsDouble(parameters, "MIN_TILE_COVER", context)
        max_tiles = None
        if parameters.get("MAX_TILES_PER_TIME") not in (None, ""):
            max_tiles = self.parameterAsInt(parameters, "MAX_TILES_PER_TIME", context)
        self.run_core(selection.validate_selection_parameters, min_cover, max_tiles)
        area = self.run_core(geometry.area_from_geojson, area_geojson(self, parameters, context))
        source = self.parameterAsSource(parameters, "FOOTPRINTS", context)
        if source is None:
            raise QgsProcessingException(self.tr("Could not open the footprint layer {!r}.").format(
                parameters.get("FOOTPRINTS")))
        items = footprints.read_items(source, feedback)
        by_id = {item["id"]: item for item in items}
        parsed = [self.run_core(records.parse_item, item) for item in items]
        results = self.run_core(selection.select_necessary_coverage, parsed, area, min_cover, max_tiles,
                                log=feedback.pushInfo)
        if feedback.isCanceled():
            raise QgsProcessingException(self.tr("Cancelled; nothing was written."))
        covers = self.run_core(selection.item_cover_fractions, selection.selected_items(results), area)

        layer_fields = footprints.fields(with_selection=True)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, layer_fields,
                                             footprints.GEOMETRY_TYPE, WGS84)
        if sink is None:
            raise QgsProcessingException(self.tr("Could not create the output layer {!r}.").format(parameters.get("OUTPUT")))
        footprints.style_footprints_on_load(context, dest_id)
        for result in results:
            for order, record in enumerate(result.selected, start=1):
                feature = footprints.make_feature(layer_fields, by_id[record.id], record, covers[record.id],
                                                  {"pass_order": order, "pass_cover": result.cover})
                sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        kept = sum(1 for result in results if result.selected)
        dropped = len(results) - kept
        if not kept:
            feedback.pushWarning(
                "No acquisition covers the area enough: the output is empty. Lower min_tile_cover "
                "(for example 0.5), raise max_tiles_per_time, or use a smaller area."
            )
        feedback.pushInfo(self.tr("{} acquisition(s) kept, {} dropped.").format(kept, dropped))
        return {"OUTPUT": dest_id, "ACQUISITIONS": kept, "DROPPED": dropped}
