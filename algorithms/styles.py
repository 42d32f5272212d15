"""QGIS styles written as .qml files next to each output, so a raster opens styled in QGIS
whether it is loaded by the algorithm, dragged in later, or opened on another machine.

A style depends on a raster's bands (count, data type, scale), not on its pixels: it is made on a
two-pixel stand-in with the same bands. Opening the raster itself would make QGIS compute a
histogram for its default stretch first (0.2 s for a 10 km stack, 1 s for a whole tile) and leave
it next to the output in a .aux.xml file of 0.7-1.5 MB.
"""

import uuid
from contextlib import contextmanager

import numpy

from qgis.core import (
    Qgis,
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QColor

# True colour stretch: reflectance 0 .. 0.25 (DN 0 .. 2500), the same for every date.
TRUE_COLOUR_MAX_REFLECTANCE = 0.25
# Masks over the image: flagged classes opaque enough to read, the image still visible beneath.
OVERLAY_ALPHA = 180
_FLOAT_TYPES = (Qgis.DataType.Float32, Qgis.DataType.Float64)


def write_true_colour_style(raster_path):
    """B04/B03/B02 (bands 4, 3, 2 of the stack) as red, green, blue."""
    def renderer_for(provider):
        renderer = QgsMultiBandColorRenderer(provider, 4, 3, 2)
        for band, setter in ((4, renderer.setRedContrastEnhancement), (3, renderer.setGreenContrastEnhancement),
                             (2, renderer.setBlueContrastEnhancement)):
            # QGIS applies the band scale (0.0001) and then reports float reflectance; else raw DN
            scaled = provider.dataType(band) in _FLOAT_TYPES
            enhancement = QgsContrastEnhancement(provider.dataType(band))
            enhancement.setMinimumValue(0)
            enhancement.setMaximumValue(TRUE_COLOUR_MAX_REFLECTANCE / (1 if scaled else provider.bandScale(band)))
            enhancement.setContrastEnhancementAlgorithm(
                QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
            setter(enhancement)
        return renderer

    _write_style(raster_path, renderer_for)


def write_palette_style(raster_path, categories, transparent=(), nodata=None, alpha=255):
    """A paletted style, one legend entry per class; categories maps code -> (label, (r, g, b)).
    Codes in `transparent` are drawn fully transparent (the clear class, so a mask overlays the
    image), the others with `alpha` (below 255 the image shows through); `nodata` = (code, label)
    adds a legend entry for the raster's nodata value."""
    classes = []
    for code, (label, color) in sorted(categories.items()):
        colour = QColor(*color)
        colour.setAlpha(0 if code in transparent else alpha)
        classes.append(QgsPalettedRasterRenderer.Class(code, colour, label))
    if nodata is not None:
        classes.append(QgsPalettedRasterRenderer.Class(nodata[0], QColor(128, 128, 128, 0), nodata[1]))
    _write_style(raster_path, lambda provider: QgsPalettedRasterRenderer(provider, 1, classes))


def _write_style(raster_path, renderer_for):
    """Saves <raster>.qml with the renderer that renderer_for(data provider) makes."""
    base = str(raster_path)[: -len(".tif")] if str(raster_path).endswith(".tif") else str(raster_path)
    with _stand_in(raster_path) as path:
        layer = QgsRasterLayer(path, "style")
        layer.setRenderer(renderer_for(layer.dataProvider()))
        layer.saveNamedStyle(base + ".qml")
        del layer  # closes the stand-in before it is removed


@contextmanager
def _stand_in(raster_path):
    """The path of a two-pixel GeoTIFF with the raster's bands (data type, scale, offset, nodata) and
    grid, in GDAL's memory file system; removed afterwards."""
    from osgeo import gdal

    source = gdal.Open(str(raster_path))
    if source is None:
        raise OSError(f"Cannot open {raster_path} to style it: {gdal.GetLastErrorMsg()}")
    path = f"/vsimem/s2masks-style-{uuid.uuid4().hex}.tif"
    stand_in = gdal.GetDriverByName("GTiff").Create(path, 2, 1, source.RasterCount, source.GetRasterBand(1).DataType)
    stand_in.SetGeoTransform(source.GetGeoTransform())
    stand_in.SetProjection(source.GetProjection())
    for index in range(1, source.RasterCount + 1):
        band, copy = source.GetRasterBand(index), stand_in.GetRasterBand(index)
        for value, setter in ((band.GetScale(), copy.SetScale), (band.GetOffset(), copy.SetOffset),
                              (band.GetNoDataValue(), copy.SetNoDataValue)):
            if value is not None:
                setter(value)
        copy.WriteArray(numpy.array([[1, 2]]))  # two values: a stretch over one value logs GDAL errors
    source = stand_in = None  # closes both
    try:
        yield path
    finally:
        for name in (path, path + ".aux.xml"):
            if gdal.VSIStatL(name) is not None:
                gdal.Unlink(name)


def write_probability_style(raster_path, threshold=0.5):
    """A fixed 0-1 colour ramp (so maps compare), transparent below `threshold`: only what the mask
    step would flag shows over the image, from pale yellow at the threshold to red at 1."""
    from qgis.core import QgsColorRampShader, QgsRasterShader, QgsSingleBandPseudoColorRenderer

    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Type.Interpolated)
    below = max(0.0, threshold - 1e-6)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0.0, QColor(255, 255, 191, 0), "0"),
        QgsColorRampShader.ColorRampItem(below, QColor(255, 255, 191, 0), f"below {threshold:g}: transparent"),
        QgsColorRampShader.ColorRampItem(threshold, QColor(255, 255, 191, 200), f"{threshold:g}"),
        QgsColorRampShader.ColorRampItem(1.0, QColor(215, 25, 28, 220), "1"),
    ])
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)

    def renderer_for(provider):
        renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
        renderer.setClassificationMin(0.0)
        renderer.setClassificationMax(1.0)
        return renderer

    _write_style(raster_path, renderer_for)
