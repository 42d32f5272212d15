"""`make screenshots`: what a user sees, as PNGs in demo-output/screenshots/.

Under Xvfb, with a real QGIS GUI: runs 'Preprocess Sentinel-2 with improved masks' on the embedded
real scene (offline, against the loopback Planetary Computer double) with
`processing.runAndLoadResults`, as the Toolbox does, then grabs the map canvas beside its layer
tree (map.png, and map_optional.png with the optional layers loaded), the Processing Toolbox
tree of the provider (toolbox.png), and the dialog of every algorithm (dialog_<id>.png).
Run: make screenshots (or xvfb-run -a .venv/bin/python tests/screenshots.py).
"""

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "demo-output" / "screenshots"
SCENE_AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"


def start_qgis():
    """A GUI QgsApplication with Processing, a minimal iface and the plugin loaded."""
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests"),
                    os.path.join(QgsApplication.pkgDataPath(), "python", "plugins")]
    import qgis.utils

    qgis.utils.iface = _Iface()  # Processing's dialogs read it when they are imported
    from processing.core.Processing import Processing

    Processing.initialize()
    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    return app, plugin


class _Iface:
    """The few parts of QgisInterface that Processing's dialogs use."""

    def __init__(self):
        from qgis.gui import QgsBrowserGuiModel, QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow

        self.window, self.canvas, self.bar = QMainWindow(), QgsMapCanvas(), QgsMessageBar()
        self.browser = QgsBrowserGuiModel()

    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def browserModel(self):  # noqa: N802
        return self.browser

    def activeLayer(self):  # noqa: N802
        return None


def run_workflow(url, folder, **extra):
    """The workflow as the Toolbox runs it: outputs loaded into the project."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    parameters = dict(EXTENT=SCENE_AREA, START_DATE="2022-10-01", END_DATE="2022-10-10", STAC_URL=url,
                      CACHE_FOLDER=str(folder / "cache"), OUTPUT_FOLDER=str(folder / "out"),
                      FOOTPRINTS="TEMPORARY_OUTPUT", STATISTICS="TEMPORARY_OUTPUT", **extra)
    processing.runAndLoadResults("s2masks:preprocesss2improvedmasks", parameters, context=context,
                                 feedback=QgsProcessingFeedback())


def grab_map(path):
    """The project's layers on a canvas, its layer tree with legends beside it."""
    from qgis.core import QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas
    from qgis.PyQt.QtCore import QEventLoop, QTimer
    from qgis.PyQt.QtWidgets import QHBoxLayout, QWidget

    project = QgsProject.instance()
    window = QWidget()
    window.resize(1300, 700)
    layout = QHBoxLayout(window)
    view = QgsLayerTreeView()
    model = QgsLayerTreeModel(project.layerTreeRoot())
    view.setModel(model)
    view.expandAll()
    canvas = QgsMapCanvas()
    bridge = QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas)
    layout.addWidget(view, 2)
    layout.addWidget(canvas, 5)
    window.show()
    bridge.setCanvasLayers()
    canvas.setDestinationCrs(project.mapLayersByName("S2A_20221005T115411_R023")[0].crs())
    canvas.setExtent(project.mapLayersByName("S2A_20221005T115411_R023")[0].extent())
    canvas.refresh()
    loop = QEventLoop()
    canvas.mapCanvasRefreshed.connect(loop.quit)
    QTimer.singleShot(20000, loop.quit)
    loop.exec()
    view.expandAll()
    window.grab().save(str(path))
    window.close()
    del bridge


def grab_toolbox(path):
    """The provider's algorithms as the Toolbox groups them (the other providers collapsed)."""
    from qgis.core import QgsApplication
    from qgis.gui import QgsProcessingToolboxProxyModel, QgsProcessingToolboxTreeView

    view = QgsProcessingToolboxTreeView(None, QgsApplication.processingRegistry())
    view.setFilters(QgsProcessingToolboxProxyModel.Filters(QgsProcessingToolboxProxyModel.Filter.FilterToolbox))
    view.setHeaderHidden(True)
    view.resize(420, 470)
    view.show()
    model = view.model()
    for row in range(model.rowCount()):
        index = model.index(row, 0)
        if model.data(index) == "Sentinel-2 improved masks":
            view.expandRecursively(index)
            view.scrollTo(index, view.ScrollHint.PositionAtTop)
    QgsApplication.processEvents()
    view.grab().save(str(path))
    view.close()


def grab_dialogs(folder):
    """Each algorithm's dialog, parameters tab with its help panel."""
    import processing
    from qgis.core import QgsApplication

    for algorithm in QgsApplication.processingRegistry().providerById("s2masks").algorithms():
        dialog = processing.createAlgorithmDialog(algorithm.id(), {})
        dialog.resize(1000, 720)
        dialog.show()
        QgsApplication.processEvents()
        dialog.grab().save(str(folder / f"dialog_{algorithm.name()}.png"))
        dialog.close()


def main():
    """Writes the screenshots."""
    from qgis.core import QgsProject

    OUTPUT.mkdir(parents=True, exist_ok=True)
    app, plugin = start_qgis()
    from pc_server import PlanetaryComputerDouble

    with PlanetaryComputerDouble() as double, tempfile.TemporaryDirectory() as work:
        run_workflow(double.url, Path(work) / "default")
        grab_map(OUTPUT / "map.png")
        QgsProject.instance().removeAllMapLayers()
        QgsProject.instance().clear()
        run_workflow(double.url, Path(work) / "optional", LOAD_CLASSES=True, LOAD_PROBABILITIES=True,
                     LOAD_PRODUCT_MASK=True)
        grab_map(OUTPUT / "map_optional.png")
        QgsProject.instance().removeAllMapLayers()
    grab_toolbox(OUTPUT / "toolbox.png")
    grab_dialogs(OUTPUT)
    plugin.unload()
    print(f"Wrote {len(list(OUTPUT.glob('*.png')))} screenshots into {OUTPUT}")
    app.exitQgis()


if __name__ == "__main__":
    main()
