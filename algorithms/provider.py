"""The Processing provider: id `s2masks`, one plain list of algorithms, plus the models shipped
in resources/models/."""

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMessageLog,
    QgsProcessingException,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingProvider,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from . import inputs
from .base import ICON_PATH, PLUGIN_DIR, WORKFLOWS_GROUP, plugin_metadata
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
        registry = QgsApplication.processingRegistry()
        if registry.providerById(self.id()) is None:
            # A model finds its steps, this provider's algorithms, through the registry, which lists
            # the provider only once it has loaded: load the models then (once), by a refresh.
            def provider_added(provider_id, provider=self):
                if provider_id == provider.id():
                    registry.providerAdded.disconnect(provider_added)
                    provider.refreshAlgorithms()

            registry.providerAdded.connect(provider_added)
            return
        for path in sorted(MODELS_DIR.glob("*.model3")):
            model = ShippedModel(path)
            if model.loaded:
                self.addAlgorithm(model)
            else:
                QgsMessageLog.logMessage(
                    QCoreApplication.translate("S2Masks", "Could not read the model {}; it is left out.").format(path),
                    self.name(), Qgis.MessageLevel.Warning)


MODELS_DIR = PLUGIN_DIR / "resources" / "models"
# Qgis.ProcessingModelChildParameterSource from QGIS 3.36 on
MODEL_PARAMETER = (Qgis.ProcessingModelChildParameterSource.ModelParameter
                   if hasattr(Qgis, "ProcessingModelChildParameterSource")
                   else QgsProcessingModelChildParameterSource.ModelParameter)


class ShippedModel(QgsProcessingModelAlgorithm):
    """A model of resources/models/ as an algorithm of the provider: id s2masks:<file name without
    underscores>, in the workflows group, help in the plugin's style. The .model3 file stays a plain
    model: it also opens in the Modeler and runs with `qgis_process run <file>`."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.loaded = self.fromFile(str(self.path))

    def name(self):
        return self.path.stem.replace("_", "").lower()

    def group(self):
        return QCoreApplication.translate("S2Masks", WORKFLOWS_GROUP)

    def groupId(self):  # noqa: N802
        return WORKFLOWS_GROUP.lower().replace(" ", "")  # as the plugin's workflows

    def helpUrl(self):  # noqa: N802
        return f"{plugin_metadata('homepage')}#in-the-graphical-modeler"

    def shortHelpString(self):  # noqa: N802
        """The model's description, then one line per parameter, as the plugin's algorithms have."""
        content = self.helpContent()
        lines = [f"- {parameter.description()} ({parameter.name()}): {content.get(parameter.name(), '')}"
                 for parameter in self.parameterDefinitions()]
        return "\n".join([content.get("ALG_DESC", ""), "", QCoreApplication.translate("S2Masks", "Parameters:")]
                         + lines)

    def createInstance(self):  # noqa: N802
        return ShippedModel(self.path)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """The model's inputs get the checks of the steps they feed, before the first step runs: an
        unwritable output folder is refused before the search, not after it."""
        try:
            inputs.validate_parameters(self, parameters, context, rules=False)
            for algorithm, fed in self._steps_fed_by_inputs(parameters):
                for step_name, model_name in fed.items():  # each input alone: the message names it
                    definition = self.parameterDefinition(model_name)
                    inputs.validate_parameters(algorithm, {step_name: parameters[model_name]}, context, partial=True,
                                               labels={step_name: inputs.parameter_label(definition)})
                inputs.validate_parameters(algorithm, {step: parameters[name] for step, name in fed.items()},
                                           context, partial=True, labels={
                                               step: inputs.parameter_label(self.parameterDefinition(name))
                                               for step, name in fed.items()})
        except QgsProcessingException as err:
            return False, str(err)
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """The same checks where QGIS runs the model without checkParameterValues (alg.run)."""
        ok, message = self.checkParameterValues(parameters, context)
        if not ok:
            raise QgsProcessingException(message)
        return super().prepareAlgorithm(parameters, context, feedback)

    def _steps_fed_by_inputs(self, parameters):
        """(step algorithm, {step parameter: model input}) for the plugin's steps."""
        from .base import S2MasksAlgorithm

        for child in self.childAlgorithms().values():
            algorithm = child.algorithm()
            if not isinstance(algorithm, S2MasksAlgorithm):
                continue
            fed = {}
            for step_name, sources in child.parameterSources().items():
                if len(sources) == 1 and sources[0].source() == MODEL_PARAMETER \
                        and sources[0].parameterName() in parameters:
                    fed[step_name] = sources[0].parameterName()
            yield algorithm, fed
