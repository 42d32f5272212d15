"""Preprocess Sentinel-2: area + dates -> list -> select -> download and stack (+ mosaic)."""

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
    QgsProcessingUtils,
)

from . import footprints
from .base import S2MasksAlgorithm, run_child
from .compat import POLYGON_SOURCE
from .inputs import (
    add_area_parameters,
    add_coverage_parameters,
    add_date_parameters,
    add_download_parameters,
    add_search_parameters,
    prepare_output_folders,
)

class PreprocessS2(S2MasksAlgorithm):
    NAME = "preprocesss2"
    DISPLAY_NAME = "Preprocess Sentinel-2"
    DESCRIPTION = (
        "The whole preprocessing in one run: lists the Sentinel-2 L2A products over the area and "
        "dates, keeps per acquisition the fewest tiles that cover the area, then reads only the "
        "area's pixels and writes per acquisition a 12-band 10 m raster and a product mask (from SCL), "
        "mosaicking the tiles of one acquisition. Runs 'List Sentinel-2 products', 'Select necessary "
        "coverage items' and 'Download and stack Sentinel-2'; one progress bar, Cancel anywhere. Every "
        "request, the STAC search included, is bounded by the download timeout. The selected footprints are "
        "written once the download has succeeded: a failed run leaves nothing behind. "
        "FarmVibes workflow: preprocess_s2."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        add_area_parameters(self)
        add_date_parameters(self)
        add_search_parameters(self)
        add_coverage_parameters(self)
        add_download_parameters(self)
        self.add(QgsProcessingParameterFeatureSink("FOOTPRINTS", self.tr("Selected footprints"), POLYGON_SOURCE),
                 "The products used, one feature per tile and acquisition.")
        self.add(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", self.tr("Output folder")),
                 "Where the rasters and masks are written.")
        self.addOutput(QgsProcessingOutputMultipleLayers("RASTERS", self.tr("Stacked rasters")))
        self.addOutput(QgsProcessingOutputMultipleLayers("MASKS", self.tr("Product masks")))
        self.addOutput(QgsProcessingOutputNumber("COUNT", self.tr("Acquisitions written")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        prepare_output_folders(self, parameters, context, ("FOOTPRINTS",))
        steps = QgsProcessingMultiStepFeedback(3, feedback)
        # One timeout for every request of the workflow: the STAC search gets DL_TIMEOUT too
        # (unless a TIMEOUT is given), so a server that does not answer stops the run in bounded time.
        timeout = parameters.get("TIMEOUT") or self.parameterAsDouble(parameters, "DL_TIMEOUT", context)
        listed = run_child("s2masks:listsentinel2products", parameters, context, steps,
                           OUTPUT=QgsProcessing.TEMPORARY_OUTPUT, TIMEOUT=timeout)
        steps.setCurrentStep(1)
        if steps.isCanceled():
            raise QgsProcessingException(self.tr("Cancelled; nothing was written."))
        # The selection stays temporary until the download has succeeded: an error or Cancel while
        # downloading leaves no footprint file in the output folder.
        selected = run_child("s2masks:selectnecessarycoverageitems", parameters, context, steps,
                             FOOTPRINTS=listed["OUTPUT"], OUTPUT=QgsProcessing.TEMPORARY_OUTPUT)
        steps.setCurrentStep(2)
        results = {"RASTERS": [], "MASKS": [], "COUNT": 0,
                   "OUTPUT_FOLDER": self.parameterAsString(parameters, "OUTPUT_FOLDER", context)}
        if not selected["ACQUISITIONS"]:
            results["FOOTPRINTS"] = self._write_footprints(parameters, context, selected["OUTPUT"])
            feedback.pushWarning(self.tr("No acquisition covers the area: nothing to download. Widen the dates, "
                                         "lower min_tile_cover or raise the maximum cloud cover."))
            return results
        stacked = run_child("s2masks:downloadstacksentinel2", parameters, context, steps,
                            FOOTPRINTS=selected["OUTPUT"])
        results.update(RASTERS=stacked["RASTERS"], MASKS=stacked["MASKS"], COUNT=stacked["COUNT"],
                       OUTPUT_FOLDER=stacked["OUTPUT_FOLDER"])
        results["FOOTPRINTS"] = self._write_footprints(parameters, context, selected["OUTPUT"])
        return results

    def _write_footprints(self, parameters, context, selected_id):
        """Copies the selected footprints (a temporary layer) into the FOOTPRINTS sink."""
        layer = QgsProcessingUtils.mapLayerFromString(selected_id, context)
        if layer is None:
            raise QgsProcessingException(self.tr("Could not read the selected footprints."))
        sink, dest_id = self.parameterAsSink(parameters, "FOOTPRINTS", context, layer.fields(), layer.wkbType(),
                                             layer.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "FOOTPRINTS"))
        footprints.style_footprints_on_load(context, dest_id)
        for feature in layer.getFeatures():
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        del sink  # flushes a file output before the path is handed on
        return dest_id

