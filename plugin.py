"""The plugin object QGIS creates. Registers the Processing provider and nothing else:
everything the plugin does is a Processing algorithm (Toolbox, Modeler, qgis_process)."""

from qgis.core import QgsApplication


class S2MasksPlugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        from .algorithms.provider import S2MasksProvider

        if self.provider is None:
            self.provider = S2MasksProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
