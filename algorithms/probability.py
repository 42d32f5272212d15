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

from ..core import inference, models
from . import styles
from .layers import style_on_load
from .base import S2MasksAlgorithm, TifDestination
from .compat import DOUBLE, INTEGER

CUSTOM = "Custom ONNX file + model card"
# INPUT_SCALE choices, in the order of core.inference.INPUT_SCALES
INPUT_SCALE_LABELS = ("Automatic: the raster's scale metadata, else judged from its values",
                      "Reflectance already (0-1)", "Digital numbers (reflectance = DN x 0.0001)")
LABELS = {"cloud": {"model": "Cloud model", "card": "Custom cloud model card (JSON)",
                    "onnx": "Custom cloud ONNX file", "output": "Cloud probability"},
          "shadow": {"model": "Shadow model", "card": "Custom shadow model card (JSON)",
                     "onnx": "Custom shadow ONNX file", "output": "Shadow probability"}}
MODEL_HELP = {
    "cloud": "The ONNX model for cloud probability, from the model cards in the plugin's models/ folder (weights "
             "shipped by ukis-csmask, or files you add, such as FarmVibes' models), or a custom one. Its card also "
             "says how the mask step turns its output into classes (argmax or a threshold).",
    "shadow": "The ONNX model for shadow probability, from the model cards in the plugin's models/ folder (weights "
              "shipped by ukis-csmask, or files you add, such as FarmVibes' models), or a custom one. Its card also "
              "says how the mask step turns its output into classes (argmax or a threshold).",
}
OUTPUT_HELP = ("Float32 raster in [0, 1] on the input's grid, nodata (NaN) where the input has no data; it records "
               "its model card, whose rule the mask step applies.")


def model_choices(algorithm, target):
    """Installed cards for `target` (default first), then the custom choice."""
    return list(models.cards_for(target))


def add_model_parameters(algorithm, target, prefix=""):
    cards = model_choices(algorithm, target)
    algorithm.add(
        QgsProcessingParameterEnum(f"{prefix}MODEL", algorithm.tr(LABELS[target]["model"]),
                                   options=[card.name for card in cards] + [algorithm.tr(CUSTOM)], defaultValue=0),
        MODEL_HELP[target],
    )
    algorithm.add(
        QgsProcessingParameterFile(f"{prefix}CUSTOM_CARD", algorithm.tr(LABELS[target]["card"]),
                                   extension="json", optional=True),
        "With the custom choice: the card describing the model (bands, scaling, resolution, chip size, output, "
        "mask rule).",
        advanced=True,
    )
    algorithm.add(
        QgsProcessingParameterFile(f"{prefix}CUSTOM_ONNX", algorithm.tr(LABELS[target]["onnx"]),
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
    algorithm.add(QgsProcessingParameterEnum("INPUT_SCALE", algorithm.tr("Input scale"),
                                             options=[algorithm.tr(label) for label in INPUT_SCALE_LABELS],
                                             defaultValue=0, optional=True),  # optional: older models stay valid
                  "What the stack's values are. Automatic (default): the raster's band scale metadata (Download and "
                  "stack writes 0.0001); without it, digital numbers (x 0.0001) when the median value is above 1.5, "
                  "else reflectance. The log says what was assumed. Choose the other two to override the metadata.",
                  advanced=True)


def chosen_card(algorithm, parameters, context, target, cards, prefix=""):
    index = algorithm.parameterAsEnum(parameters, f"{prefix}MODEL", context)
    if index < len(cards):
        return cards[index]
    card_path = algorithm.parameterAsFile(parameters, f"{prefix}CUSTOM_CARD", context)
    if not card_path:
        raise QgsProcessingException(algorithm.tr(
            "The custom {} model needs its model card ({}CUSTOM_CARD): a JSON like those in the plugin's models/ "
            "folder.").format(algorithm.tr(target), prefix))
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
        input_scale=inference.INPUT_SCALES[algorithm.parameterAsEnum(parameters, "INPUT_SCALE", context)
                                           if parameters.get("INPUT_SCALE") not in (None, "") else 0],
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
        self.add(TifDestination("OUTPUT", self.tr(LABELS[self.TARGET]["output"])), OUTPUT_HELP)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        card = chosen_card(self, parameters, context, self.TARGET, self.cards)
        outputs = run_models(self, parameters, context, feedback, {self.TARGET: card}, {self.TARGET: "OUTPUT"})
        return {"OUTPUT": outputs[self.TARGET]}


def run_models(algorithm, parameters, context, feedback, cards, output_keys):
    """Runs the cards over INPUT (one pass per distinct model); output_keys: {target: parameter}."""
    raster = algorithm.raster_source(parameters, "INPUT", context)
    outputs = {target: algorithm.tif_destination(parameters, key, context) for target, key in output_keys.items()}
    for target, card in cards.items():
        feedback.pushInfo(algorithm.tr("{}: {} ({})").format(algorithm.tr(LABELS[target]["model"]), card.name,
                                                             card.licence))
    algorithm.run_core(inference.compute_probabilities, raster, cards, outputs,
                       inference_options(algorithm, parameters, context),
                       progress=lambda fraction, message: (feedback.setProgress(100 * fraction),
                                                           feedback.setProgressText(message)),
                       should_cancel=feedback.isCanceled, log=feedback.pushInfo, warn=feedback.pushWarning)
    for target, path in outputs.items():
        # transparent where the mask step's default (the card's rule) can never flag the pixel
        styles.write_probability_style(path, style_threshold(cards[target], target))
        style_on_load(context, path)
    return {target: str(path) for target, path in outputs.items()}


def style_threshold(card, target):
    """The probability below which the card's rule never flags: its threshold, or for argmax 1 /
    the number of classes (the most probable of n classes has at least that)."""
    kind, value = card.rule(target)
    return value if kind == "threshold" else round(1.0 / max(2, len(card.classes())), 2)
