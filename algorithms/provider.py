"""The Processing provider: id `s2masks`, one plain list of algorithms."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_PATH, plugin_metadata
from .check_dependencies import CheckDependencies
from .compute_cloud_prob import ComputeCloudProb
from .compute_cloud_shadow_prob import ComputeCloudShadowProb
from .compute_shadow_prob import ComputeShadowProb
from .download_stack_sentinel2 import DownloadStackSentinel2
from .improve_cloud_mask import ImproveCloudMask
from .install_dependencies import InstallDependencies
from .list_sentinel2_products import ListSentinel2Products
from .merge_cloud_masks_simple import MergeCloudMasksSimple
from .merge_sentinel2_orbits import MergeSentinel2Orbits
from .preprocess_s2 import PreprocessS2
from .preprocess_s2_improved_masks import PreprocessS2ImprovedMasks
from .select_necessary_coverage_items import SelectNecessaryCoverageItems

ALGORITHMS = (ListSentinel2Products, SelectNecessaryCoverageItems, DownloadStackSentinel2, MergeSentinel2Orbits,
              ComputeCloudProb, ComputeShadowProb, ComputeCloudShadowProb, MergeCloudMasksSimple, PreprocessS2,
              ImproveCloudMask, PreprocessS2ImprovedMasks, InstallDependencies, CheckDependencies)


class S2MasksProvider(QgsProcessingProvider):
    def id(self):
        return "s2masks"

    def name(self):
        return "Sentinel-2 improved masks"

    def longName(self):  # noqa: N802
        return f"Sentinel-2 improved masks {plugin_metadata('version')}"

    def icon(self):
        return QIcon(str(ICON_PATH))

    def versionInfo(self):  # noqa: N802
        return plugin_metadata("version")

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
