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
# Masks over the image: flagged classes opaque enough to read, the image still visible beneath.
OVERLAY_ALPHA = 180
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


def write_palette_style(raster_path, categories, transparent=(), nodata=None, alpha=255):
    """A paletted style, one legend entry per class; categories maps code -> (label, (r, g, b)).
    Codes in `transparent` are drawn fully transparent (the clear class, so a mask overlays the
    image), the others with `alpha` (below 255 the image shows through); `nodata` = (code, label)
    adds a legend entry for the raster's nodata value."""
    layer = QgsRasterLayer(str(raster_path), "mask")
    classes = []
    for code, (label, color) in sorted(categories.items()):
        colour = QColor(*color)
        colour.setAlpha(0 if code in transparent else alpha)
        classes.append(QgsPalettedRasterRenderer.Class(code, colour, label))
    if nodata is not None:
        classes.append(QgsPalettedRasterRenderer.Class(nodata[0], QColor(128, 128, 128, 0), nodata[1]))
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    _save(layer, raster_path)


def _save(layer, raster_path):
    base = str(raster_path)[: -len(".tif")] if str(raster_path).endswith(".tif") else str(raster_path)
    message, ok = layer.saveNamedStyle(base + ".qml")
    del layer
    return ok


def write_probability_style(raster_path, threshold=0.5):
    """A fixed 0-1 colour ramp (so maps compare), transparent below `threshold`: only what the mask
    step would flag shows over the image, from pale yellow at the threshold to red at 1."""
    from qgis.core import QgsColorRampShader, QgsRasterShader, QgsSingleBandPseudoColorRenderer

    layer = QgsRasterLayer(str(raster_path), "probability")
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
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    _save(layer, raster_path)
