"""What Compute cloud probability and Compute shadow probability share: the model choice
(the installed model cards, or a custom ONNX file with its card) and the run."""

from dataclasses import replace

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core import cloudmask, inference, models
from . import styles
from .layers import style_on_load
from .base import S2MasksAlgorithm, TifDestination
from .compat import DOUBLE, INTEGER

CUSTOM = "Custom ONNX file + model card"


def model_choices(algorithm, target):
    """Installed cards for `target` (default first), then the custom choice."""
    return list(models.cards_for(target))


def add_model_parameters(algorithm, target, prefix=""):
    cards = model_choices(algorithm, target)
    algorithm.add(
        QgsProcessingParameterEnum(f"{prefix}MODEL", algorithm.tr(f"{target.capitalize()} model"),
                                   options=[card.name for card in cards] + [CUSTOM], defaultValue=0),
        f"The ONNX model for {target} probability, from the model cards in the plugin's models/ folder "
        "(weights shipped by ukis-csmask, or files you add, such as FarmVibes' models), or a custom one.",
    )
    algorithm.add(
        QgsProcessingParameterFile(f"{prefix}CUSTOM_CARD", algorithm.tr(f"Custom {target} model card (JSON)"),
                                   extension="json", optional=True),
        "With the custom choice: the card describing the model (bands, scaling, resolution, chip size, output).",
        advanced=True,
    )
    algorithm.add(
        QgsProcessingParameterFile(f"{prefix}CUSTOM_ONNX", algorithm.tr(f"Custom {target} ONNX file"),
                                   extension="onnx", optional=True),
        "With the custom choice: the ONNX file, if the card does not say where it is.",
        advanced=True,
    )
    return cards


def add_inference_parameters(algorithm):
    algorithm.add(QgsProcessingParameterBoolean("IN_MEMORY", algorithm.tr("Load the whole raster in memory"),
                                                defaultValue=False),
                  "Read the raster once instead of chip by chip: faster for fast models, needs memory for the "
                  "whole raster at the model's resolution.")
    algorithm.add(QgsProcessingParameterNumber("BATCH_SIZE", algorithm.tr("Chips per batch"), INTEGER,
                                               defaultValue=4, minValue=1),  # as core.inference.InferenceOptions
                  "Chips sent to the model at once; larger batches need more memory and are rarely faster on a "
                  "CPU.", advanced=True)
    algorithm.add(QgsProcessingParameterNumber("OVERLAP", algorithm.tr("Chip overlap (fraction)"), DOUBLE,
                                               optional=True, minValue=0.0, maxValue=0.5),
                  "Overlap between neighbouring chips, 0 to 0.5; empty: the model card's.", advanced=True, decimals=2)
    algorithm.add(QgsProcessingParameterNumber("THREADS", algorithm.tr("Threads (0 = all cores)"), INTEGER,
                                               defaultValue=0, minValue=0),
                  "Threads onnxruntime uses.", advanced=True)


def chosen_card(algorithm, parameters, context, target, cards, prefix=""):
    index = algorithm.parameterAsEnum(parameters, f"{prefix}MODEL", context)
    if index < len(cards):
        return cards[index]
    card_path = algorithm.parameterAsFile(parameters, f"{prefix}CUSTOM_CARD", context)
    if not card_path:
        raise QgsProcessingException(f"The custom {target} model needs its model card (CUSTOM_CARD): a JSON "
                                     "like those in the plugin's models/ folder.")
    card = algorithm.run_core(models.load_card, card_path)
    onnx_path = algorithm.parameterAsFile(parameters, f"{prefix}CUSTOM_ONNX", context)
    if onnx_path:
        card = replace(card, weights={"path": onnx_path})
    return card


def inference_options(algorithm, parameters, context):
    overlap = None
    if parameters.get("OVERLAP") not in (None, ""):
        overlap = algorithm.parameterAsDouble(parameters, "OVERLAP", context)
    return inference.InferenceOptions(
        in_memory=algorithm.parameterAsBool(parameters, "IN_MEMORY", context),
        batch_size=algorithm.parameterAsInt(parameters, "BATCH_SIZE", context),
        overlap=overlap,
        threads=algorithm.parameterAsInt(parameters, "THREADS", context),
    )


class ComputeProbability(S2MasksAlgorithm):
    """One probability raster (cloud or shadow) from a stacked raster."""

    TARGET = ""
    HELP_SECTION = "Compute cloud and shadow probability"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("INPUT", self.tr("Stacked Sentinel-2 raster")),
                 "A 12-band stack from 'Download and stack Sentinel-2' (bands B01..B12 in that order).")
        self.cards = add_model_parameters(self, self.TARGET)
        add_inference_parameters(self)
        self.add(TifDestination("OUTPUT", self.tr(f"{self.TARGET.capitalize()} probability")),
                 "Float32 raster in [0, 1] on the input's grid (1 where the input has no data).")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        card = chosen_card(self, parameters, context, self.TARGET, self.cards)
        outputs = run_models(self, parameters, context, feedback, {self.TARGET: card}, {self.TARGET: "OUTPUT"})
        return {"OUTPUT": outputs[self.TARGET]}


def run_models(algorithm, parameters, context, feedback, cards, output_keys):
    """Runs the cards over INPUT (one pass per distinct model); output_keys: {target: parameter}."""
    raster = algorithm.raster_source(parameters, "INPUT", context)
    outputs = {target: algorithm.tif_destination(parameters, key, context) for target, key in output_keys.items()}
    for target, card in cards.items():
        feedback.pushInfo(f"{target.capitalize()} model: {card.name} ({card.licence})")
    algorithm.run_core(inference.compute_probabilities, raster, cards, outputs,
                       inference_options(algorithm, parameters, context),
                       progress=lambda fraction, message: (feedback.setProgress(100 * fraction),
                                                           feedback.setProgressText(message)),
                       should_cancel=feedback.isCanceled, log=feedback.pushInfo, warn=feedback.pushWarning)
    thresholds = {"cloud": cloudmask.MergeOptions.cloud_thr, "shadow": cloudmask.MergeOptions.shadow_thr}
    for target, path in outputs.items():
        styles.write_probability_style(path, thresholds[target])  # transparent where the mask step keeps clear
        style_on_load(context, path)
    return {target: str(path) for target, path in outputs.items()}
