"""Download and stack Sentinel-2: per acquisition, one 12-band 10 m raster and one product mask."""

import json
from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from ..core import geometry, grid, pipeline, records, search, stack
from . import footprints, styles
from .layers import load_on_completion
from .base import S2MasksAlgorithm, progress_reporter
from .compat import POLYGON_SOURCE
from .inputs import (
    add_area_parameters,
    add_download_parameters,
    area_geojson,
    download_options,
    output_crs,
    request_policy,
)


class DownloadStackSentinel2(S2MasksAlgorithm):
    NAME = "downloadstacksentinel2"
    DISPLAY_NAME = "Download and stack Sentinel-2"
    AREA_REQUIRED = False  # without one, the products' whole footprints are read
    DESCRIPTION = (
        "Reads only the area's pixels of the 12 L2A bands and the scene classification (SCL) straight "
        "from the products' cloud-optimized GeoTIFFs (HTTP range requests), resamples 20 m and 60 m bands "
        "to a 10 m grid aligned with Sentinel-2's, and writes per acquisition one 12-band raster "
        "(B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12, uint16, reflectance = DN x 0.0001, the "
        "-1000 offset of processing baseline 04.00+ already removed) and one product mask from SCL "
        "(0 clear, 1 opaque cloud, 2 cirrus, 3 saturated/defective, 4 cloud shadow, 255 nodata). Tiles "
        "of one acquisition, also from other UTM zones, are mosaicked onto one grid. Downloaded windows "
        "are cached: a re-run after Cancel or a failure fetches only what is missing. Outputs: RASTERS and "
        "MASKS list every acquisition's files in time order; RASTER and MASK are the stack and product mask "
        "of the first acquisition in time order only, for wiring into the next step in the Modeler "
        "(one date at a time). "
        "FarmVibes ops: download_stack_sentinel2, group_sentinel2_orbits, merge_sentinel2_orbits."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(
            QgsProcessingParameterFeatureSource("FOOTPRINTS", self.tr("Selected Sentinel-2 footprints"),
                                                [POLYGON_SOURCE], optional=True),
            "Output of 'Select necessary coverage items' (or of 'List Sentinel-2 products').",
        )
        self.add(
            QgsProcessingParameterString("ITEM", self.tr("Or a single STAC item (URL or JSON)"), optional=True),
            "Instead of a footprint layer: the URL of one Sentinel-2 L2A STAC item, or its JSON.",
            advanced=True,
        )
        add_area_parameters(self)
        add_download_parameters(self)
        self.add(
            QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", self.tr("Output folder")),
            "Where the rasters (<platform>_<time>_R<orbit>.tif) and masks (..._mask.tif) are written, "
            "each with a .qml style.",
        )
        self.addOutput(QgsProcessingOutputMultipleLayers("RASTERS", self.tr("Stacked rasters")))
        self.addOutput(QgsProcessingOutputMultipleLayers("MASKS", self.tr("Product masks")))
        self.addOutput(QgsProcessingOutputNumber("COUNT", self.tr("Acquisitions written")))
        # One raster each, which the Modeler can wire into a step that takes one raster layer.
        self.addOutput(QgsProcessingOutputRasterLayer("RASTER", self.tr("Stacked raster (first date)")))
        self.addOutput(QgsProcessingOutputRasterLayer("MASK", self.tr("Product mask (first date)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        items = [self.run_core(records.parse_item, item) for item in self._items(parameters, context, feedback)]
        if not items:
            raise QgsProcessingException("No products to download: the footprint layer is empty.")
        area = self._area(parameters, context, feedback, items)
        folder = Path(self.parameterAsString(parameters, "OUTPUT_FOLDER", context))
        options = download_options(self, parameters, context, feedback)
        if options.proxies.http or options.proxies.https:
            feedback.pushInfo(self.tr("Proxy: {}").format(options.proxies.describe()))
        groups = stack.acquisition_groups(items)
        target_grid = self.run_core(grid.output_grid, area, output_crs(self, parameters, context))
        rasters, masks = [], []
        for number, (_, group) in enumerate(groups):
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled; nothing more was written."))
            name = stack.acquisition_name(group)
            tiles = ", ".join(item.mgrs_tile for item in group)
            feedback.pushInfo(f"Acquisition {number + 1}/{len(groups)}: {name} (tiles {tiles})")
            paths = pipeline.output_paths(str(folder), name)  # the names the whole workflow gives them
            result = self.run_core(
                stack.stack_acquisition, group, area, target_grid, paths["raster"], paths["product_mask"],
                options, progress=progress_reporter(feedback, number / len(groups), 1 / len(groups)),
                should_cancel=feedback.isCanceled)
            styles.write_true_colour_style(result.raster)
            styles.write_palette_style(result.mask, stack.MASK_CATEGORIES, transparent=(stack.MASK_CLEAR,),
                                       alpha=styles.OVERLAY_ALPHA)
            feedback.pushInfo(f"Wrote {result.raster} and {result.mask} ({result.valid_fraction:.0%} valid pixels)")
            rasters.append(str(result.raster))
            masks.append(str(result.mask))
            load_on_completion(context, result.raster, name)
            load_on_completion(context, result.mask, f"{name} product mask")
        # groups come in time order, so the first files are the first date's
        return {"OUTPUT_FOLDER": str(folder), "RASTERS": rasters, "MASKS": masks, "COUNT": len(rasters),
                "RASTER": rasters[0], "MASK": masks[0]}

    def _items(self, parameters, context, feedback):
        text = self.parameterAsString(parameters, "ITEM", context).strip()
        if text:
            if text.startswith(("http://", "https://")):
                policy = request_policy(self, parameters, context, "DL_TIMEOUT")
                return [self.run_core(self._fetch_item, text, policy, feedback)]  # run_core: requests may be missing
            return [_parse_json(text)]
        source = self.parameterAsSource(parameters, "FOOTPRINTS", context)
        if source is None:
            raise QgsProcessingException("Give the selected footprints (FOOTPRINTS) or one STAC item (ITEM).")
        return footprints.read_items(source, feedback)

    def _fetch_item(self, url, policy, feedback):
        try:
            _, item = search.fetch("GET", url, policy, label="The STAC item", should_cancel=feedback.isCanceled,
                                   hint="Check the item URL, your network and proxy settings, or raise DL_TIMEOUT.")
        except search.SearchError as err:
            raise QgsProcessingException(self.tr("Could not read the STAC item at {}: {}").format(url, err)) from err
        return item

    def _area(self, parameters, context, feedback, items):
        if parameters.get("AREA") or parameters.get("EXTENT"):
            return self.run_core(geometry.area_from_geojson, area_geojson(self, parameters, context))
        feedback.pushWarning("No area given: the products' whole footprints are read. Give an extent or a "
                             "polygon layer to read only the pixels you need.")
        return self.run_core(geometry.footprints_union, items)


def _parse_json(text):
    try:
        return json.loads(text)
    except ValueError as err:
        raise QgsProcessingException(f"ITEM is neither a URL nor valid STAC item JSON: {err}") from err
