"""Merge cloud masks (FarmVibes op merge_cloud_masks_simple): product mask + thresholded cloud
and shadow probabilities -> the improved cloud mask."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core import cloudmask
from . import styles
from .layers import style_on_load
from .base import S2MasksAlgorithm, TifDestination
from .compat import DOUBLE, INTEGER

# Statistics outputs (percent of the mask's pixels), also used by the workflows' table.
STATISTICS = {
    "PCT_CLEAR": ("pct_clear", "Clear (%)"),
    "PCT_CLOUD": ("pct_cloud", "Cloud (%)"),
    "PCT_SHADOW": ("pct_shadow", "Cloud shadow (%)"),
    "PCT_NODATA": ("pct_nodata", "No data (%)"),
    "PCT_PRODUCT_MASKED": ("pct_product_masked", "Flagged by the product mask alone (%)"),
}


def add_merge_parameters(algorithm):
    """cloud_thr, shadow_thr (plain) and closing_size, min_area (advanced)."""
    algorithm.add(QgsProcessingParameterNumber("CLOUD_THR", algorithm.tr("Cloud probability threshold"),
                                               DOUBLE, defaultValue=0.3, minValue=0.0, maxValue=1.0),
                  "A pixel is cloud where its cloud probability is above this (0-1).", decimals=2)
    algorithm.add(QgsProcessingParameterNumber("SHADOW_THR", algorithm.tr("Shadow probability threshold"),
                                               DOUBLE, defaultValue=0.2, minValue=0.0, maxValue=1.0),
                  "A pixel is cloud shadow where its shadow probability is above this (0-1).", decimals=2)
    algorithm.add(QgsProcessingParameterNumber("CLOSING_SIZE", algorithm.tr("Dilation radius (closing_size, pixels)"),
                                               INTEGER, defaultValue=5, minValue=0),
                  "Masked pixels grow by a disk of this radius (5 px = 50 m), to catch cloud edges.", advanced=True)
    algorithm.add(QgsProcessingParameterNumber("MIN_AREA", algorithm.tr("Minimum area (min_area, pixels)"),
                                               INTEGER, defaultValue=0, minValue=0),
                  "When above 0: masked patches smaller than this are cleared and clear holes smaller than this "
                  "are filled.", advanced=True)


def merge_options(algorithm, parameters, context):
    return cloudmask.MergeOptions(
        cloud_thr=algorithm.parameterAsDouble(parameters, "CLOUD_THR", context),
        shadow_thr=algorithm.parameterAsDouble(parameters, "SHADOW_THR", context),
        closing_size=algorithm.parameterAsInt(parameters, "CLOSING_SIZE", context),
        min_area=algorithm.parameterAsInt(parameters, "MIN_AREA", context),
    )


class MergeCloudMasksSimple(S2MasksAlgorithm):
    NAME = "mergecloudmaskssimple"
    DISPLAY_NAME = "Merge cloud masks"
    DESCRIPTION = (
        "The improved cloud mask: a pixel is masked where its cloud probability is above cloud_thr, its "
        "shadow probability above shadow_thr, or the product mask flags it (any code but 0 clear, nodata "
        "included); the masked pixels then grow by a disk of radius closing_size, and with min_area > 0 "
        "small masked patches are cleared and small clear holes filled. Writes the mask as FarmVibes does "
        "(0 clear, 1 cloud) and, if asked, classes (0 clear, 1 cloud, 2 cloud shadow, 255 nodata). "
        "The three rasters must share one grid (from the same stack). Streams in blocks, so any size "
        "works. FarmVibes op: merge_cloud_masks_simple."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("PRODUCT_MASK", self.tr("Product mask")),
                 "The mask from 'Download and stack Sentinel-2' (0 clear, 1-4 flagged, 255 nodata).")
        self.add(QgsProcessingParameterRasterLayer("CLOUD_PROBABILITY", self.tr("Cloud probability")),
                 "From 'Compute cloud probability', on the same grid.")
        self.add(QgsProcessingParameterRasterLayer("SHADOW_PROBABILITY", self.tr("Shadow probability")),
                 "From 'Compute shadow probability', on the same grid.")
        add_merge_parameters(self)
        self.add(TifDestination("OUTPUT", self.tr("Improved cloud mask")),
                 "uint8: 0 clear, 1 cloud (cloud, shadow, product-flagged or nodata, dilated).")
        self.add(TifDestination("OUTPUT_CLASSES", self.tr("Cloud classes"), optional=True,
                                                         createByDefault=False),
                 "Optional uint8: 0 clear, 1 cloud, 2 cloud shadow, 255 nodata.")
        for name, (_, label) in STATISTICS.items():
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        sources = {key: self.raster_source(parameters, key, context) for key in
                   ("PRODUCT_MASK", "CLOUD_PROBABILITY", "SHADOW_PROBABILITY")}
        mask_path = self.tif_destination(parameters, "OUTPUT", context)
        classes_path = None
        if parameters.get("OUTPUT_CLASSES"):
            classes_path = self.tif_destination(parameters, "OUTPUT_CLASSES", context)
        statistics = self.run_core(
            cloudmask.merge_cloud_masks, sources["PRODUCT_MASK"], sources["CLOUD_PROBABILITY"],
            sources["SHADOW_PROBABILITY"], mask_path, classes_path, merge_options(self, parameters, context),
            progress=lambda fraction, message: feedback.setProgress(100 * fraction), should_cancel=feedback.isCanceled)
        # clear is transparent, so the mask overlays the image it was made from
        styles.write_palette_style(mask_path, cloudmask.MASK_LABELS, transparent=(cloudmask.CLEAR,), alpha=styles.OVERLAY_ALPHA)
        style_on_load(context, mask_path)
        results = {"OUTPUT": str(mask_path), "OUTPUT_CLASSES": str(classes_path) if classes_path else None}
        if classes_path:
            styles.write_palette_style(classes_path, cloudmask.CLASS_LABELS, transparent=(cloudmask.CLEAR,),
                                       nodata=(cloudmask.NODATA, self.tr("no data")), alpha=styles.OVERLAY_ALPHA)
            style_on_load(context, classes_path)
        row = statistics.as_row()
        results.update({name: row[key] for name, (key, _) in STATISTICS.items()})
        feedback.pushInfo("Improved mask: " + ", ".join(f"{label} {row[key]:.1f}" for key, label in STATISTICS.values()))
        return results

