"""Merge Sentinel-2 orbits: mosaic stacked rasters and masks of one acquisition onto one grid."""

from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
)

from ..core import merge, stack
from . import styles
from .base import S2MasksAlgorithm, progress_reporter
from .compat import RASTER_LAYERS


class MergeSentinel2Orbits(S2MasksAlgorithm):
    NAME = "mergesentinel2orbits"
    DISPLAY_NAME = "Merge Sentinel-2 orbits"
    DESCRIPTION = (
        "Mosaics stacked Sentinel-2 rasters of one acquisition (for example one per tile, made by "
        "'Download and stack Sentinel-2' separately) and their product masks onto one 10 m grid over "
        "their union. The first raster has priority; later ones fill only pixels that are still empty "
        "(all bands 0). Inputs in another CRS are reprojected (bilinear for reflectance, nearest for "
        "masks). Inputs of different acquisition dates are refused before anything is written (the date is "
        "that of the products a stack was made from, or the one in its file name, "
        "<platform>_<YYYYMMDDTHHMMSS>_R<orbit>.tif): merge one date at a time. "
        "FarmVibes op: merge_sentinel2_orbits."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterMultipleLayers("RASTERS", self.tr("Stacked rasters"), RASTER_LAYERS),
                 "12-band stacks of one acquisition, in priority order.")
        self.add(QgsProcessingParameterMultipleLayers("MASKS", self.tr("Product masks"), RASTER_LAYERS),
                 "Their product masks, one per raster, in the same order.")
        self.add(QgsProcessingParameterCrs("OUTPUT_CRS", self.tr("Output CRS"), optional=True),
                 "CRS of the mosaic; empty means the first raster's CRS.", advanced=True)
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Merged raster")),
                 "The mosaicked 12-band raster (Cloud-Optimized GeoTIFF).")
        self.add(QgsProcessingParameterRasterDestination("OUTPUT_MASK", self.tr("Merged product mask")),
                 "The mosaicked product mask (Cloud-Optimized GeoTIFF).")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        rasters = [layer.source() for layer in self.parameterAsLayerList(parameters, "RASTERS", context)]
        masks = [layer.source() for layer in self.parameterAsLayerList(parameters, "MASKS", context)]
        self._check_one_date(rasters + masks)
        raster_path = self.tif_destination(parameters, "OUTPUT", context)
        mask_path = self.tif_destination(parameters, "OUTPUT_MASK", context)
        crs = self.parameterAsCrs(parameters, "OUTPUT_CRS", context)
        self.run_core(merge.merge_stacks, rasters, masks, raster_path, mask_path,
                      crs.toWkt() if crs.isValid() else None,
                      progress=progress_reporter(feedback),
                      should_cancel=feedback.isCanceled)
        styles.write_true_colour_style(raster_path)
        styles.write_palette_style(mask_path, stack.MASK_CATEGORIES, transparent=(stack.MASK_CLEAR,),
                                   alpha=styles.OVERLAY_ALPHA)
        return {"OUTPUT": str(raster_path), "OUTPUT_MASK": str(mask_path)}

    def _check_one_date(self, paths):
        """Refuses, before anything is written, inputs of two acquisition dates: their mosaic would
        look like one image but mix the clouds and ground of both."""
        mixed = self.run_core(merge.date_mix, paths)
        if mixed:
            (file_a, date_a), (file_b, date_b) = mixed
            raise QgsProcessingException(self.tr(
                "The inputs are of different acquisition dates: {date_a} ({file_a}) and {date_b} ({file_b}). "
                "Merge Sentinel-2 orbits mosaics the tiles of one acquisition; merge one date at a time."
            ).format(date_a=date_a, file_a=Path(file_a).name, date_b=date_b, file_b=Path(file_b).name))
