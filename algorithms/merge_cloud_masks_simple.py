"""Merge cloud masks (FarmVibes op merge_cloud_masks_simple): product mask + cloud and shadow
probabilities, classified by their model card's rule (or thresholds given) -> the improved cloud mask."""

from qgis.core import (
    Qgis,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core import cloudmask
from . import styles
from .layers import style_on_load
from .base import S2MasksAlgorithm, TifDestination, progress_reporter
from .compat import DOUBLE, INTEGER

# Qgis.ProcessingParameterFlag from QGIS 3.36 on (a scoped enum, as in compat.py)
FLAG_HIDDEN = (Qgis.ProcessingParameterFlag.Hidden if hasattr(Qgis, "ProcessingParameterFlag")
               else QgsProcessingParameterDefinition.Flag.FlagHidden)
DEPRECATED_PIXEL_METRES = 10  # CLOSING_SIZE counted 10 m pixels of the stack
DEFAULTS = cloudmask.MergeOptions()

# Statistics outputs (percent of the mask's pixels), also used by the workflows' table.
STATISTICS = {
    "PCT_CLEAR": ("pct_clear", "Clear (%)"),
    "PCT_CLOUD": ("pct_cloud", "Cloud (%)"),
    "PCT_SHADOW": ("pct_shadow", "Cloud shadow (%)"),
    "PCT_NODATA": ("pct_nodata", "No data (%)"),
    "PCT_PRODUCT_MASKED": ("pct_product_masked", "Flagged by the product mask alone (%)"),
}


def add_merge_parameters(algorithm, sun_angles=True):
    """CLOUD_THR, SHADOW_THR (plain, empty by default: the model card's rule), then advanced
    SHADOW_GEOMETRY (on by default), BUFFER, CLOSING, MIN_AREA, MAX_NODATA, SUN_AZIMUTH, SUN_ZENITH,
    and the deprecated CLOSING_SIZE (hidden). sun_angles=False leaves SUN_AZIMUTH / SUN_ZENITH out
    (a workflow over several dates reads each date's sun from its product mask). The parameters added after the first release are optional
    (with their default), so models saved before stay valid."""
    algorithm.add(QgsProcessingParameterNumber("CLOUD_THR", algorithm.tr("Cloud probability threshold (empty: the "
                                                                         "model card's rule)"),
                                               DOUBLE, optional=True, minValue=0.0, maxValue=1.0),
                  "Empty (the default): the rule of the model that made the cloud probability, from its model card: "
                  "the most probable of its classes (argmax) for ukis-csmask, above 0.3 for FarmVibes' cloud models. "
                  "A value (0-1): cloud where the cloud probability is above it.", decimals=2)
    algorithm.add(QgsProcessingParameterNumber("SHADOW_THR", algorithm.tr("Shadow probability threshold (empty: the "
                                                                          "model card's rule)"),
                                               DOUBLE, optional=True, minValue=0.0, maxValue=1.0),
                  "Empty (the default): the rule of the model that made the shadow probability, from its model card: "
                  "argmax for ukis-csmask (shadow where P(shadow) is above both P(cloud) and P(clear) = 1 - P(cloud) "
                  "- P(shadow)), above 0.2 for FarmVibes' shadow model. A value (0-1): cloud shadow where the shadow "
                  "probability is above it.", decimals=2)
    algorithm.add(QgsProcessingParameterBoolean("SHADOW_GEOMETRY", algorithm.tr("Keep only shadows a cloud can cast "
                                                                               "(sun geometry)"),
                                                defaultValue=DEFAULTS.shadow_geometry, optional=True),
                  "On (default): a pixel the shadow rule flags stays cloud shadow only where a cloud of the raster, "
                  "at a height of 200 m to 12 km, casts its shadow on the side away from the sun (Fmask's "
                  "geometric check, with the sun position of the acquisition recorded in the product mask by 'Download and stack Sentinel-2', "
                  "or SUN_AZIMUTH / SUN_ZENITH), within 60 m, or in a shadow patch that reaches the raster's edge "
                  "or nodata on the sun's side (its cloud may lie outside). Dark fields and water that no cloud can "
                  "shadow become clear; the product mask's own shadow (code 4) always stays. When the sun position "
                  "is unknown the check is skipped and the log says so. "
                  "Off: every pixel the rule or the product mask flags shadow stays shadow.", advanced=True)
    algorithm.add(QgsProcessingParameterNumber("BUFFER", algorithm.tr("Buffer (m)"), DOUBLE,
                                               defaultValue=DEFAULTS.buffer, optional=True, minValue=0.0),
                  "Metres the cloud and shadow pixels grow by (a disk), to catch their edges; each added pixel takes "
                  "the class of its nearest flagged pixel. 0 (default): no growth, which measured best against the "
                  "scene classification (see the README); FarmVibes grew by 50 m.", advanced=True, decimals=0)
    algorithm.add(QgsProcessingParameterNumber("CLOSING", algorithm.tr("Closing (m)"), DOUBLE,
                                               defaultValue=DEFAULTS.closing, optional=True, minValue=0.0),
                  "Metres of a morphological closing (grow, then shrink by a disk) before the buffer: joins masked "
                  "patches less than twice this apart without growing their outer edges. 0 (default): off.",
                  advanced=True, decimals=0)
    algorithm.add(QgsProcessingParameterNumber("MIN_AREA", algorithm.tr("Minimum area (m²)"), DOUBLE,
                                               defaultValue=DEFAULTS.min_area, minValue=0.0),
                  "When above 0: masked patches smaller than this many square metres are cleared and clear holes "
                  "smaller than this are filled. Square metres since this release (it counted pixels before: a 10 m "
                  "pixel is 100 m²).", advanced=True, decimals=0)
    algorithm.add(QgsProcessingParameterNumber("MAX_NODATA", algorithm.tr("Most area without a valid probability "
                                                                          "(%)"),
                                               DOUBLE, defaultValue=DEFAULTS.max_nodata, optional=True, minValue=0.0,
                                               maxValue=100.0),
                  "Fail, writing nothing, when more than this share of the pixels has no valid cloud or shadow "
                  "probability (NaN or outside 0-1): such a mask would be mostly nodata, which means the model got "
                  "its inputs on the wrong scale or the area lies outside the scene. 100: never fail.",
                  advanced=True, decimals=0)
    if sun_angles:
        add_sun_parameters(algorithm)
    deprecated = QgsProcessingParameterNumber("CLOSING_SIZE", algorithm.tr("Dilation radius (deprecated, pixels)"),
                                              INTEGER, optional=True, minValue=0)
    deprecated.setFlags(deprecated.flags() | FLAG_HIDDEN)
    algorithm.add(deprecated, "Deprecated, goes in the next release: the former dilation radius in 10 m pixels, "
                              "read as BUFFER = CLOSING_SIZE x 10 m. Use BUFFER.")


def add_sun_parameters(algorithm):
    """SUN_AZIMUTH and SUN_ZENITH (advanced; empty: the product mask's tags)."""
    algorithm.add(QgsProcessingParameterNumber("SUN_AZIMUTH", algorithm.tr("Sun azimuth (degrees, empty: from the "
                                                                           "product mask)"),
                                               DOUBLE, optional=True, minValue=0.0, maxValue=360.0),
                  "The mean sun azimuth of the acquisition for the shadow check, clockwise from north (the STAC "
                  "property s2:mean_solar_azimuth). Empty (default): the SUN_AZIMUTH tag 'Download and stack "
                  "Sentinel-2' writes in the product mask. Give it with SUN_ZENITH for masks from elsewhere.",
                  advanced=True, decimals=2)
    algorithm.add(QgsProcessingParameterNumber("SUN_ZENITH", algorithm.tr("Sun zenith (degrees, empty: from the "
                                                                          "product mask)"),
                                               DOUBLE, optional=True, minValue=0.0, maxValue=89.0),
                  "The mean sun zenith angle of the acquisition (90 minus the sun elevation; the STAC property "
                  "s2:mean_solar_zenith). Empty (default): the SUN_ZENITH tag of the product mask.",
                  advanced=True, decimals=2)


def write_mask_styles(mask_path, classes_path, no_data_label):
    """The .qml styles of the improved mask and (when given) the classes: clear is transparent, so the
    mask overlays the image it was made from."""
    styles.write_palette_style(mask_path, cloudmask.MASK_LABELS, transparent=(cloudmask.CLEAR,),
                               alpha=styles.OVERLAY_ALPHA)
    if classes_path:
        styles.write_palette_style(classes_path, cloudmask.CLASS_LABELS, transparent=(cloudmask.CLEAR,),
                                   nodata=(cloudmask.NODATA, no_data_label), alpha=styles.OVERLAY_ALPHA)


def optional_number(algorithm, parameters, name, context):
    """The value of an optional number parameter, None when it is empty."""
    value = parameters.get(name)
    if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
        return None
    return algorithm.parameterAsDouble(parameters, name, context)


def merge_options(algorithm, parameters, context, feedback=None):
    buffer = _number_or_default(algorithm, parameters, "BUFFER", context, DEFAULTS.buffer)
    closing_size = optional_number(algorithm, parameters, "CLOSING_SIZE", context)
    if closing_size is not None:
        given = optional_number(algorithm, parameters, "BUFFER", context)
        buffer = closing_size * DEPRECATED_PIXEL_METRES
        if feedback is not None:
            feedback.pushWarning(algorithm.tr(
                "CLOSING_SIZE is deprecated and goes in the next release: CLOSING_SIZE={:g} pixels is read as "
                "BUFFER={:g} m (pixels x 10 m). Use BUFFER, in metres.").format(closing_size, buffer))
            if given is not None and given != buffer:
                feedback.pushWarning(algorithm.tr("BUFFER={:g} m is ignored: CLOSING_SIZE was given too.").format(given))
    return cloudmask.MergeOptions(
        cloud_thr=optional_number(algorithm, parameters, "CLOUD_THR", context),
        shadow_thr=optional_number(algorithm, parameters, "SHADOW_THR", context),
        buffer=buffer,
        closing=_number_or_default(algorithm, parameters, "CLOSING", context, DEFAULTS.closing),
        min_area=algorithm.parameterAsDouble(parameters, "MIN_AREA", context),
        max_nodata=_number_or_default(algorithm, parameters, "MAX_NODATA", context, DEFAULTS.max_nodata),
        shadow_geometry=_boolean_or_default(algorithm, parameters, "SHADOW_GEOMETRY", context,
                                            DEFAULTS.shadow_geometry),
        sun_azimuth=optional_number(algorithm, parameters, "SUN_AZIMUTH", context),
        sun_zenith=optional_number(algorithm, parameters, "SUN_ZENITH", context),
    )


def _boolean_or_default(algorithm, parameters, name, context, default):
    value = parameters.get(name)
    if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
        return default
    return algorithm.parameterAsBoolean(parameters, name, context)


def _number_or_default(algorithm, parameters, name, context, default):
    value = optional_number(algorithm, parameters, name, context)
    return default if value is None else value


class MergeCloudMasksSimple(S2MasksAlgorithm):
    NAME = "mergecloudmaskssimple"
    DISPLAY_NAME = "Merge cloud masks"
    DESCRIPTION = (
        "The improved cloud mask. A pixel is cloud or cloud shadow as the rule of the model that made the "
        "probabilities says (its model card, recorded in the probability rasters: the most probable class for "
        "the default ukis-csmask model, thresholds 0.3 / 0.2 for FarmVibes' models), or above cloud_thr / "
        "shadow_thr when you give them, or where the product mask flags it (codes 1-3 cloud, 4 shadow). Pixels "
        "where the product mask has no data or a probability is missing (NaN) or outside 0-1 are nodata: masked, "
        "never clear, and counted apart; when more than MAX_NODATA percent are, the run fails and says why. "
        "With the sun position known, the rule's cloud shadow is kept only where a cloud of the raster can "
        "cast it (SHADOW_GEOMETRY; the log says what it found and cleared). Optionally the masked pixels "
        "are closed and grown (in metres), and small patches cleared and small "
        "holes filled (in square metres). Writes the mask as FarmVibes does (0 clear, 1 masked) and, if asked, "
        "classes (0 clear, 1 cloud, 2 cloud shadow, 255 nodata), where every flagged pixel keeps its class and "
        "grown pixels take the class of the nearest flagged one. The three rasters must share one grid (from "
        "the same stack). Streams in blocks, so any size works. FarmVibes op: merge_cloud_masks_simple."
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
                 "uint8: 0 clear, 1 masked (cloud, shadow, product-flagged or nodata, then grown if asked).")
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
            sources["SHADOW_PROBABILITY"], mask_path, classes_path, merge_options(self, parameters, context, feedback),
            progress=progress_reporter(feedback), should_cancel=feedback.isCanceled,
            log=feedback.pushInfo)
        write_mask_styles(mask_path, classes_path, self.tr("no data"))
        style_on_load(context, mask_path)
        results = {"OUTPUT": str(mask_path), "OUTPUT_CLASSES": str(classes_path) if classes_path else None}
        if classes_path:
            style_on_load(context, classes_path)
        row = statistics.as_row()
        results.update({name: row[key] for name, (key, _) in STATISTICS.items()})
        feedback.pushInfo(self.tr("Improved mask: {}").format(", ".join(
            "{} {:.1f}".format(self.tr(label), row[key]) for key, label in STATISTICS.values())))
        return results

