"""Preprocess Sentinel-2 with improved masks (FarmVibes workflow preprocess_s2_improved_masks):
area + dates -> per acquisition a 10 m raster and an improved cloud mask, with a statistics table."""

from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
    QgsProcessingUtils,
)

from ..core import executor, geometry, grid, pipeline, records, report, stack
from . import footprints, styles
from .base import S2MasksAlgorithm, run_child
from .compat import NO_GEOMETRY, POLYGON_SOURCE, TABLE, make_field
from .compute_cloud_shadow_prob import chosen_cards
from .executor import add_executor_parameters, executor_spec, run_acquisitions
from .improve_cloud_mask import add_improve_parameters, improve
from .inputs import (
    add_area_parameters,
    add_coverage_parameters,
    add_date_parameters,
    add_download_parameters,
    add_search_parameters,
    area_geojson,
    date_range,
    download_options,
    output_crs,
    prepare_output_folders,
)
from .layers import forget_layers, load_on_completion, style_on_load
from .merge_cloud_masks_simple import STATISTICS, merge_options, write_mask_styles
from .probability import inference_options, write_probability_styles

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
        "ONNX models and merges them with the product mask into the improved cloud mask (0 clear, 1 cloud), "
        "keeping the model's cloud shadow only where a cloud can cast it under that date's sun (SHADOW_GEOMETRY). "
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
        self.cards = add_improve_parameters(self, sun_angles=False)  # each date's sun comes from its product mask
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
        add_executor_parameters(self)
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
        spec = executor_spec(self, parameters, context)
        prepare_output_folders(self, parameters, context, ("FOOTPRINTS", "STATISTICS"))
        steps = QgsProcessingMultiStepFeedback(2, feedback)
        if spec.kind == executor.IN_PROCESS:
            preprocessed = run_child("s2masks:preprocesss2", parameters, context, steps)
            forget_layers(context, preprocessed["RASTERS"] + preprocessed["MASKS"])  # loaded below, grouped per date
        else:
            preprocessed = self._select(parameters, context, steps)
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
                   "RASTERS": [], "PRODUCT_MASKS": [], "MASKS": [], "CLASSES": [], "COUNT": 0}
        rows = []

        def record(raster, product_mask, improved):
            """One finished acquisition: its statistics row and its layers."""
            row = self._statistics_row(raster, improved)
            rows.append(row)
            sink.addFeature(_feature(fields, row), QgsFeatureSink.Flag.FastInsert)
            for key, value in (("RASTERS", raster), ("PRODUCT_MASKS", product_mask), ("MASKS", improved["OUTPUT"]),
                               ("CLASSES", improved["OUTPUT_CLASSES"])):
                results[key].append(value)
            self._load(parameters, context, (run_group, f"{row['date'][:10]} {row['acquisition']}"), raster,
                       dict(improved, PRODUCT_MASK=product_mask))

        if spec.kind == executor.IN_PROCESS:
            self._improve_each(parameters, context, steps, preprocessed, folder, record)
        else:
            self._run_on_dask(parameters, context, steps, spec, preprocessed, folder, record)
        if not rows:
            feedback.pushWarning(self.tr("No acquisition to improve: the statistics table is empty."))
        order = sorted(range(len(rows)), key=lambda index: (rows[index]["date"], rows[index]["acquisition"]))
        rows = [rows[index] for index in order]  # time order, however the acquisitions finished
        for key in ("RASTERS", "PRODUCT_MASKS", "MASKS", "CLASSES"):
            results[key] = [results[key][index] for index in order]
        results["COUNT"] = len(rows)
        results["STATISTICS_CSV"] = str(report.write_csv(folder / STATISTICS_CSV, [n for n, _ in STATISTICS_FIELDS],
                                                         rows))
        _print_table(feedback, rows)
        return results

    def _improve_each(self, parameters, context, feedback, preprocessed, folder, record):
        """In this process: 'Improve cloud mask' on each stacked acquisition, one after another."""
        pairs = list(zip(preprocessed["RASTERS"], preprocessed["MASKS"]))
        per_acquisition = QgsProcessingMultiStepFeedback(max(1, len(pairs)), feedback)
        for number, (raster, product_mask) in enumerate(pairs):
            per_acquisition.setCurrentStep(number)
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled; the acquisitions finished so far are kept."))
            paths = pipeline.output_paths(str(folder), Path(raster).stem)  # the names a Dask worker writes too
            feedback.pushInfo(self.tr("Improving the cloud mask of {} ({}/{})").format(Path(raster).stem, number + 1,
                                                                                          len(pairs)))
            improved = improve(parameters, context, per_acquisition, raster, product_mask, {
                "OUTPUT": str(paths["mask"]), "OUTPUT_CLASSES": str(paths["classes"]),
                "CLOUD_OUTPUT": str(paths["cloud"]), "SHADOW_OUTPUT": str(paths["shadow"])})
            record(raster, product_mask, improved)

    def _select(self, parameters, context, feedback):
        """For Dask: list and select here (a few requests), writing the footprints; the rest runs on the workers."""
        timeout = parameters.get("TIMEOUT") or self.parameterAsDouble(parameters, "DL_TIMEOUT", context)
        listed = run_child("s2masks:listsentinel2products", parameters, context, feedback,
                           OUTPUT=QgsProcessing.TEMPORARY_OUTPUT, TIMEOUT=timeout)
        selected = run_child("s2masks:selectnecessarycoverageitems", parameters, context, feedback,
                             FOOTPRINTS=listed["OUTPUT"], OUTPUT=parameters["FOOTPRINTS"])
        return {"FOOTPRINTS": selected["OUTPUT"], "ACQUISITIONS": selected["ACQUISITIONS"],
                "OUTPUT_FOLDER": self.parameterAsString(parameters, "OUTPUT_FOLDER", context)}

    def _run_on_dask(self, parameters, context, feedback, spec, selected, folder, record):
        """One task per acquisition on Dask; each finished one is recorded as it comes back."""
        layer = QgsProcessingUtils.mapLayerFromString(selected["FOOTPRINTS"], context)
        if layer is None:
            raise QgsProcessingException(self.tr("Could not read the selected footprints."))
        items = footprints.read_items(layer, feedback)
        if not items:
            return
        area_json = area_geojson(self, parameters, context)
        area = self.run_core(geometry.area_from_geojson, area_json)
        target_grid = self.run_core(grid.output_grid, area, output_crs(self, parameters, context))
        options = download_options(self, parameters, context, feedback)
        cards = chosen_cards(self, parameters, context, self.cards)
        probabilities, merging = inference_options(self, parameters, context), merge_options(self, parameters,
                                                                                             context, feedback)
        groups = stack.acquisition_groups([self.run_core(records.parse_item, item) for item in items])
        by_id = {item["id"]: item for item in items}
        jobs = [(stack.acquisition_name(group), pipeline.AcquisitionJob(
            items=[by_id[item.id] for item in group], area_geojson=area_json, grid=target_grid, folder=str(folder),
            stack_options=options, cards=cards, inference_options=probabilities, merge_options=merging))
            for _, group in groups]

        def finished(result):
            paths = result["paths"]
            styles.write_true_colour_style(paths["raster"])
            styles.write_palette_style(paths["product_mask"], stack.MASK_CATEGORIES, transparent=(stack.MASK_CLEAR,),
                                       alpha=styles.OVERLAY_ALPHA)
            improved = {"OUTPUT": paths["mask"], "OUTPUT_CLASSES": paths["classes"], "CLOUD_OUTPUT": paths["cloud"],
                        "SHADOW_OUTPUT": paths["shadow"]}
            write_mask_styles(paths["mask"], paths["classes"], self.tr("no data"))
            write_probability_styles({target: paths[target] for target in cards}, cards)
            improved.update({name: result["statistics"][key] for name, (key, _) in STATISTICS.items()})
            record(paths["raster"], paths["product_mask"], improved)

        failed = run_acquisitions(self, spec, jobs, feedback, finished)
        if failed:
            listing = "; ".join(f"{outcome.key}: {outcome.error}" for outcome in failed)
            if len(failed) == len(jobs):
                raise QgsProcessingException(self.tr("Every acquisition failed: {}").format(listing))
            feedback.pushWarning(self.tr("{} of {} acquisitions failed and were left out: {}").format(
                len(failed), len(jobs), listing))

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
