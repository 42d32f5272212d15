"""Preprocess Sentinel-2 with improved masks (FarmVibes workflow preprocess_s2_improved_masks):
area + dates -> per acquisition a 10 m raster and an improved cloud mask, with a statistics table."""

from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
)

from ..core import report
from . import footprints
from .base import S2MasksAlgorithm, run_child
from .compat import NO_GEOMETRY, POLYGON_SOURCE, TABLE, make_field
from .improve_cloud_mask import add_improve_parameters, improve
from .inputs import (
    add_area_parameters,
    add_coverage_parameters,
    add_date_parameters,
    add_download_parameters,
    add_search_parameters,
    date_range,
    prepare_output_folders,
)
from .layers import forget_layers, load_on_completion, style_on_load
from .merge_cloud_masks_simple import STATISTICS

STATISTICS_FIELDS = (
    ("date", str), ("acquisition", str), ("platform", str), ("rel_orbit", int), ("tiles", str), ("tile_count", int),
    ("pct_clear", float), ("pct_cloud", float), ("pct_shadow", float), ("pct_nodata", float),
    ("pct_product_masked", float), ("raster", str), ("mask", str),
)
STATISTICS_CSV = "statistics.csv"
# Optional outputs a user may load (advanced parameters): parameter -> (output key, layer name suffix, order)
OPTIONAL_LAYERS = {"LOAD_CLASSES": ("OUTPUT_CLASSES", "cloud classes", 2),
                   "LOAD_PROBABILITIES": (("CLOUD_OUTPUT", "SHADOW_OUTPUT"), ("cloud probability", "shadow probability"), 3),
                   "LOAD_PRODUCT_MASK": ("PRODUCT_MASK", "product mask", 5)}


class PreprocessS2ImprovedMasks(S2MasksAlgorithm):
    NAME = "preprocesss2improvedmasks"
    DISPLAY_NAME = "Preprocess Sentinel-2 with improved masks"
    DESCRIPTION = (
        "The whole FarmVibes workflow in one run: finds the Sentinel-2 L2A products over the area and "
        "dates, keeps per acquisition the fewest tiles covering the area, reads only the area's pixels into "
        "a 12-band 10 m raster with the product mask from SCL, computes cloud and shadow probabilities with "
        "ONNX models and merges them with the product mask into the improved cloud mask (0 clear, 1 cloud). "
        "Loads per date a layer group (true-colour raster, improved mask) and a statistics table (percent "
        "clear, cloud, shadow, nodata, and flagged by the product mask alone), also written as "
        "statistics.csv in the output folder. One progress bar, Cancel anywhere. Runs 'Preprocess "
        "Sentinel-2', then 'Improve cloud mask' per acquisition. "
        "FarmVibes workflow: preprocess_s2_improved_masks."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        add_area_parameters(self)
        add_date_parameters(self)
        add_coverage_parameters(self)
        add_improve_parameters(self)
        add_download_parameters(self, pc_key_advanced=False)
        add_search_parameters(self, cloud_cover_advanced=True)
        self.add(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", self.tr("Output folder")),
                 "Where everything is written: per acquisition <name>.tif (12 bands), <name>_mask.tif (product "
                 "mask), <name>_cloud.tif and <name>_shadow.tif (probabilities), <name>_improved_mask.tif, "
                 "<name>_classes.tif, and statistics.csv.")
        for name, label, text in (
                ("LOAD_CLASSES", "Load the cloud classes", "Also load each date's classes raster (clear, cloud, "
                 "cloud shadow)."),
                ("LOAD_PROBABILITIES", "Load the cloud and shadow probabilities", "Also load each date's two "
                 "probability rasters (transparent below the thresholds)."),
                ("LOAD_PRODUCT_MASK", "Load the product mask", "Also load each date's product mask from the scene "
                 "classification.")):
            self.add(QgsProcessingParameterBoolean(name, self.tr(label), defaultValue=False), text, advanced=True)
        self.add(QgsProcessingParameterFeatureSink("FOOTPRINTS", self.tr("Selected footprints"), POLYGON_SOURCE),
                 "The products used, one feature per tile and acquisition.")
        self.add(QgsProcessingParameterFeatureSink("STATISTICS", self.tr("Statistics per acquisition"), TABLE),
                 "One row per acquisition: date, tiles, percent clear / cloud / shadow / nodata in the improved "
                 "mask, and percent flagged by the product mask alone.")
        self.addOutput(QgsProcessingOutputMultipleLayers("RASTERS", self.tr("Stacked rasters")))
        self.addOutput(QgsProcessingOutputMultipleLayers("MASKS", self.tr("Improved cloud masks")))
        self.addOutput(QgsProcessingOutputMultipleLayers("CLASSES", self.tr("Cloud classes")))
        self.addOutput(QgsProcessingOutputMultipleLayers("PRODUCT_MASKS", self.tr("Product masks")))
        self.addOutput(QgsProcessingOutputFile("STATISTICS_CSV", self.tr("Statistics (CSV)")))
        self.addOutput(QgsProcessingOutputNumber("COUNT", self.tr("Acquisitions written")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        prepare_output_folders(self, parameters, context, ("FOOTPRINTS", "STATISTICS"))
        steps = QgsProcessingMultiStepFeedback(2, feedback)
        preprocessed = run_child("s2masks:preprocesss2", parameters, context, steps)
        forget_layers(context, preprocessed["RASTERS"] + preprocessed["MASKS"])  # loaded below, grouped per date
        folder = Path(preprocessed["OUTPUT_FOLDER"])
        fields = QgsFields()
        for name, kind in STATISTICS_FIELDS:
            fields.append(make_field(name, kind))
        sink, statistics_id = self.parameterAsSink(parameters, "STATISTICS", context, fields, NO_GEOMETRY)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "STATISTICS"))
        steps.setCurrentStep(1)
        run_group = self._run_group(parameters, context)
        style_on_load(context, statistics_id, (run_group,), order=10)
        style_on_load(context, preprocessed["FOOTPRINTS"], (run_group,), order=20,
                      extra=footprints.apply_footprint_style)
        results = {"FOOTPRINTS": preprocessed["FOOTPRINTS"], "STATISTICS": statistics_id, "OUTPUT_FOLDER": str(folder),
                   "RASTERS": preprocessed["RASTERS"], "PRODUCT_MASKS": preprocessed["MASKS"], "MASKS": [],
                   "CLASSES": [], "COUNT": 0}
        rows = []
        pairs = list(zip(preprocessed["RASTERS"], preprocessed["MASKS"]))
        if not pairs:
            feedback.pushWarning(self.tr("No acquisition to improve: the statistics table is empty."))
        per_acquisition = QgsProcessingMultiStepFeedback(max(1, len(pairs)), steps)
        for number, (raster, product_mask) in enumerate(pairs):
            per_acquisition.setCurrentStep(number)
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled; the acquisitions finished so far are kept."))
            stem = str(folder / Path(raster).stem)
            feedback.pushInfo(self.tr("Improving the cloud mask of {} ({}/{})").format(Path(raster).stem, number + 1,
                                                                                          len(pairs)))
            improved = improve(parameters, context, per_acquisition, raster, product_mask, {
                "OUTPUT": f"{stem}_improved_mask.tif", "OUTPUT_CLASSES": f"{stem}_classes.tif",
                "CLOUD_OUTPUT": f"{stem}_cloud.tif", "SHADOW_OUTPUT": f"{stem}_shadow.tif"})
            row = self._statistics_row(raster, improved)
            rows.append(row)
            sink.addFeature(_feature(fields, row), QgsFeatureSink.Flag.FastInsert)
            results["MASKS"].append(improved["OUTPUT"])
            results["CLASSES"].append(improved["OUTPUT_CLASSES"])
            self._load(parameters, context, (run_group, f"{row['date'][:10]} {row['acquisition']}"), raster,
                       dict(improved, PRODUCT_MASK=product_mask))
        results["COUNT"] = len(rows)
        results["STATISTICS_CSV"] = str(report.write_csv(folder / STATISTICS_CSV, [n for n, _ in STATISTICS_FIELDS],
                                                         rows))
        _print_table(feedback, rows)
        return results

    def _run_group(self, parameters, context):
        """The layer group of one run: the area (layer name or extent) and the dates."""
        start, end = date_range(self, parameters, context)
        if parameters.get("AREA"):
            source = self.parameterAsSource(parameters, "AREA", context)
            area = source.sourceName() if source is not None else "area"
        else:
            extent = self.parameterAsExtent(parameters, "EXTENT", context)
            area = ", ".join(f"{v:.2f}" for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                                  extent.yMaximum()))
        return self.tr("Sentinel-2 {} to {} ({})").format(start.isoformat(), end.isoformat(), area)

    def _load(self, parameters, context, groups, raster, outputs):
        """One date's layers in their group: improved mask over the raster, the optional ones between."""
        stem = Path(raster).stem
        load_on_completion(context, raster, stem, groups, order=9)
        load_on_completion(context, outputs["OUTPUT"], f"{stem} {self.tr('improved mask')}", groups, order=1)
        for flag, (keys, names, order) in OPTIONAL_LAYERS.items():
            if self.parameterAsBoolean(parameters, flag, context):
                keys, names = (keys, names) if isinstance(keys, tuple) else ((keys,), (names,))
                for key, name in zip(keys, names):
                    if outputs.get(key):
                        load_on_completion(context, outputs[key], f"{stem} {self.tr(name)}", groups, order=order)

    def _statistics_row(self, raster, improved):
        origin = self.run_core(report.provenance, raster)
        row = {"date": origin["sensing_time"], "acquisition": Path(raster).stem, "platform": origin["platform"],
               "rel_orbit": origin["rel_orbit"], "tiles": ",".join(origin["tiles"]),
               "tile_count": len(origin["tiles"]), "raster": raster, "mask": improved["OUTPUT"]}
        row.update({key: float(improved[name]) for name, (key, _) in STATISTICS.items()})
        return row


def _feature(fields, row):
    feature = QgsFeature(fields)
    for name, _ in STATISTICS_FIELDS:
        feature[name] = row[name]
    return feature


def _print_table(feedback, rows):
    columns = ("date", "tiles", "pct_clear", "pct_cloud", "pct_shadow", "pct_nodata", "pct_product_masked")
    feedback.pushInfo(" | ".join(columns))
    for row in rows:
        feedback.pushInfo(" | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
