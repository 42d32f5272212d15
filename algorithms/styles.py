"""QGIS styles written as .qml files next to each output, so a raster opens styled in QGIS
whether it is loaded by the algorithm, dragged in later, or opened on another machine."""

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
_FLOAT_TYPES = (Qgis.DataType.Float32, Qgis.DataType.Float64)


def write_true_colour_style(raster_path):
    """B04/B03/B02 (bands 4, 3, 2 of the stack) as red, green, blue."""
    layer = QgsRasterLayer(str(raster_path), "stack")
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 4, 3, 2)
    for band, setter in ((4, renderer.setRedContrastEnhancement), (3, renderer.setGreenContrastEnhancement),
                         (2, renderer.setBlueContrastEnhancement)):
        # QGIS applies the band scale (0.0001) and then reports float reflectance; else raw DN
        scaled = provider.dataType(band) in _FLOAT_TYPES
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setMinimumValue(0)
        enhancement.setMaximumValue(TRUE_COLOUR_MAX_REFLECTANCE / (1 if scaled else provider.bandScale(band)))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
        setter(enhancement)
    layer.setRenderer(renderer)
    _save(layer, raster_path)


def write_palette_style(raster_path, categories):
    """A paletted style; categories maps code -> (label, (r, g, b))."""
    layer = QgsRasterLayer(str(raster_path), "mask")
    classes = [QgsPalettedRasterRenderer.Class(code, QColor(*color), label)
               for code, (label, color) in sorted(categories.items())]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    _save(layer, raster_path)


def _save(layer, raster_path):
    base = str(raster_path)[: -len(".tif")] if str(raster_path).endswith(".tif") else str(raster_path)
    message, ok = layer.saveNamedStyle(base + ".qml")
    del layer
    return ok


def write_probability_style(raster_path):
    """A 0-1 colour ramp (clear blue-white to cloudy red), fixed so maps compare."""
    from qgis.core import QgsColorRampShader, QgsRasterShader, QgsSingleBandPseudoColorRenderer

    layer = QgsRasterLayer(str(raster_path), "probability")
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Type.Interpolated)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0.0, QColor(43, 131, 186), "0 (clear)"),
        QgsColorRampShader.ColorRampItem(0.5, QColor(255, 255, 191), "0.5"),
        QgsColorRampShader.ColorRampItem(1.0, QColor(215, 25, 28), "1"),
    ])
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    _save(layer, raster_path)
