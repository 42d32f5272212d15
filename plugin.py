"""The plugin object QGIS creates. It puts the profile's folder of plugin packages on sys.path,
registers the Processing provider, and in the QGIS window offers to install missing packages.
Everything the plugin does is a Processing algorithm (Toolbox, Modeler, qgis_process)."""

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, QTimer
from qgis.PyQt.QtWidgets import QMessageBox

try:
    from qgis.PyQt.QtGui import QAction  # Qt 6 (QGIS 4)
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt 5

from .algorithms import packages

MENU = "Sentinel-2 improved masks"
INSTALL_ID = "s2masks:installdependencies"


def tr(text: str) -> str:
    """Translates a user-visible string of the plugin object."""
    return QCoreApplication.translate("S2Masks", text)


class S2MasksPlugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process
        self.provider = None
        self.action = None
        packages.activate()  # packages installed by the plugin's installer, per profile

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        from .algorithms.provider import S2MasksProvider

        if self.provider is None:
            self.provider = S2MasksProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        self.action = QAction(tr("Install dependencies…"), self.iface.mainWindow())
        self.action.triggered.connect(self.run_installer)
        self.iface.addPluginToMenu(tr(MENU), self.action)
        if packages.missing():
            QTimer.singleShot(0, self.offer_install)  # once QGIS has finished loading

    def unload(self):
        if self.action is not None:
            self.iface.removePluginMenu(tr(MENU), self.action)
            self.action.triggered.disconnect(self.run_installer)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def offer_install(self):
        """One dialog listing every missing package; on Yes, the installer runs in its own dialog."""
        needed = packages.missing()
        if not needed:
            return
        total = sum(packages.dependencies.DOWNLOAD_MB.get(entry.requirement.name, 0) for entry in needed)
        text = tr("The plugin needs these Python packages, which this QGIS's Python does not have:")
        details = "".join(f"<li>{entry.describe()}</li>" for entry in needed)
        question = tr("Install them now? About {} MB come from the Python Package Index and go into<br>"
                      "<tt>{}</tt><br>QGIS's own packages are not touched; pip's output is shown as it "
                      "runs.").format(total, packages.profile_prefix())
        answer = QMessageBox.question(self.iface.mainWindow(), tr(MENU), f"{text}<ul>{details}</ul>{question}",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.run_installer(start=True)

    def run_installer(self, checked=False, start=False):
        """Opens the 'Install dependencies' algorithm's dialog (started at once when `start`)."""
        import processing

        dialog = processing.createAlgorithmDialog(INSTALL_ID, {})
        dialog.show()
        if start:
            dialog.runAlgorithm()
