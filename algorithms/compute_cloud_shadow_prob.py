"""Compute cloud and shadow probability: both rasters in one run, and in one pass of the model
when one multi-class model (the default ukis-csmask) gives both."""

from qgis.core import QgsProcessingParameterRasterLayer

from .base import S2MasksAlgorithm, TifDestination
from .probability import OUTPUT_HELP, add_inference_parameters, add_model_parameters, chosen_card, run_models

TARGETS = ("cloud", "shadow")


def add_both_model_parameters(algorithm):
    """CLOUD_MODEL and SHADOW_MODEL (with their custom card / ONNX parameters); returns the cards."""
    return {target: add_model_parameters(algorithm, target, prefix=f"{target.upper()}_") for target in TARGETS}


def chosen_cards(algorithm, parameters, context, cards):
    return {target: chosen_card(algorithm, parameters, context, target, cards[target], prefix=f"{target.upper()}_")
            for target in TARGETS}


class ComputeCloudShadowProb(S2MasksAlgorithm):
    NAME = "computecloudshadowprob"
    DISPLAY_NAME = "Compute cloud and shadow probability"
    DESCRIPTION = (
        "'Compute cloud probability' and 'Compute shadow probability' in one run. When both use the same "
        "multi-class model (the default ukis-csmask model gives cloud and shadow), the model runs once "
        "for both, which halves the time of running the two algorithms one after the other. Same models, "
        "checks, input scale, chipping, blending and nodata rule as the single algorithms. "
        "FarmVibes ops: compute_cloud_prob + compute_shadow_prob."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("INPUT", self.tr("Stacked Sentinel-2 raster")),
                 "A 12-band stack from 'Download and stack Sentinel-2' (bands B01..B12 in that order).")
        self.cards = add_both_model_parameters(self)
        add_inference_parameters(self)
        self.add(TifDestination("CLOUD_OUTPUT", self.tr("Cloud probability")), OUTPUT_HELP)
        self.add(TifDestination("SHADOW_OUTPUT", self.tr("Shadow probability")), OUTPUT_HELP)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        cards = chosen_cards(self, parameters, context, self.cards)
        outputs = run_models(self, parameters, context, feedback, cards,
                             {target: f"{target.upper()}_OUTPUT" for target in TARGETS})
        return {f"{target.upper()}_OUTPUT": path for target, path in outputs.items()}
