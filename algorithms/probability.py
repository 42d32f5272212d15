"""What Compute cloud probability and Compute shadow probability share: the model choice
(the installed model cards, by name, or a custom ONNX file with its card) and the run."""

import os
from dataclasses import replace
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsSettings,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core import inference, models
from . import styles
from .layers import style_on_load
from .base import S2MasksAlgorithm, TifDestination, progress_reporter
from .compat import DOUBLE, INTEGER

CUSTOM = "custom"  # the model choice of a custom ONNX file + card
# A QgsSettings key: more model folders (separated by the system's path separator), searched after
# the profile's s2masks/models.
MODELS_FOLDER_SETTING = "s2masks/models_folder"
# The MODEL choices of releases that numbered them (saved models, scripts): index -> model name.
LEGACY_CHOICES = {
    "cloud": ("ukis-csmask-6b-l2a", *(f"farmvibes-cloud-model{i}" for i in range(1, 6)), "ukis-csmask-4b-l2a", CUSTOM),
    "shadow": ("ukis-csmask-6b-l2a", "farmvibes-shadow", "ukis-csmask-4b-l2a", CUSTOM),
}
# INPUT_SCALE choices, in the order of core.inference.INPUT_SCALES
INPUT_SCALE_LABELS = ("Automatic: the raster's scale metadata, else judged from its values",
                      "Reflectance already (0-1)", "Digital numbers (reflectance = DN x 0.0001)")
LABELS = {"cloud": {"model": "Cloud model", "card": "Custom cloud model card (JSON)",
                    "onnx": "Custom cloud ONNX file", "output": "Cloud probability"},
          "shadow": {"model": "Shadow model", "card": "Custom shadow model card (JSON)",
                     "onnx": "Custom shadow ONNX file", "output": "Shadow probability"}}
OUTPUT_HELP = ("Float32 raster in [0, 1] on the input's grid, nodata (NaN) where the input has no data; it records "
               "its model card, whose rule the mask step applies.")


def user_model_folders() -> list:
    """The user's model folders, outside the plugin (a plugin upgrade keeps them): the QGIS
    profile's s2masks/models, then the folders of the s2masks/models_folder setting."""
    folders = [Path(QgsApplication.qgisSettingsDirPath()) / "s2masks" / "models"]
    setting = QgsSettings().value(MODELS_FOLDER_SETTING, "") or ""
    return folders + [Path(part).expanduser() for part in str(setting).split(os.pathsep) if part.strip()]


def model_catalogue() -> models.Catalogue:
    """The model cards shipped in models/ and those in the user's model folders."""
    return models.catalogue(user_model_folders())


def model_help(target, found, folders) -> str:
    """The MODEL help: the installed models by name, the custom choice, and the models that are
    not installed with how to install them."""
    installed = [f"{card.id} ({card.name}{', the default' if target in card.default_for else ''})"
                 for card in found.installed(target)]
    text = (f"The {target} model, by name: {'; '.join(installed + [CUSTOM])} (with CUSTOM_CARD and CUSTOM_ONNX). "
            f"Its card says which bands, scaling and resolution it takes and how the mask step turns its output "
            f"into classes (argmax or a threshold). Model cards and ONNX files of your own go in "
            f"{folders[0]} or a folder named in the {MODELS_FOLDER_SETTING} setting (in the Python console: "
            f"QgsSettings().setValue('{MODELS_FOLDER_SETTING}', '/path/to/models')): a plugin upgrade keeps them.")
    missing = found.missing(target)
    if missing:
        text += " Not installed: " + " ".join(f"{card.id}: {card.install_hint()}" for card in missing)
    for path, reason in found.unreadable:
        text += f" Not usable: {path}: {reason}"
    return text


def add_model_parameters(algorithm, target, prefix=""):
    """{prefix}MODEL (the installed models by name, then custom) and the custom card / ONNX file
    parameters; returns the installed cards."""
    folders = user_model_folders()
    found = models.catalogue(folders)
    cards = found.installed(target)
    names = [card.id for card in cards] + [CUSTOM]
    default = next((card.id for card in cards if target in card.default_for), names[0])
    algorithm.add(
        QgsProcessingParameterEnum(f"{prefix}MODEL", algorithm.tr(LABELS[target]["model"]), options=names,
                                   defaultValue=default, usesStaticStrings=True),
        model_help(target, found, folders),
    )
    algorithm.add_value_adapter(f"{prefix}MODEL", lambda value: model_name(value, target, cards, found,
                                                                           f"{prefix}MODEL"))
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


def legacy_model_name(value, target):
    """A model given by its number in an earlier release's list (an int, or digits as text from
    qgis_process or a saved model) -> its name; any other value as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and 0 <= number < len(LEGACY_CHOICES[target]):
        return LEGACY_CHOICES[target][int(number)]
    return value


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
                  "Threads the model runs on: two runs side by side, each on half of them (one thread each on "
                  "2 cores), while the stack is read and the probabilities written.", advanced=True)
    algorithm.add(QgsProcessingParameterEnum("INPUT_SCALE", algorithm.tr("Input scale"),
                                             options=[algorithm.tr(label) for label in INPUT_SCALE_LABELS],
                                             defaultValue=0, optional=True),  # optional: older models stay valid
                  "What the stack's values are. Automatic (default): the raster's band scale metadata (Download and "
                  "stack writes 0.0001); without it, digital numbers (x 0.0001) when the median value is above 1.5, "
                  "else reflectance. The log says what was assumed. Choose the other two to override the metadata.",
                  advanced=True)


def model_name(value, target, cards, found, parameter):
    """The model name a MODEL value stands for (an earlier release's number translated); a model
    that is known but not installed is refused with how to install it."""
    value = legacy_model_name(value, target)
    if isinstance(value, str) and value not in [card.id for card in cards] + [CUSTOM]:
        known = found.find(value)
        if known is not None and target in known.provides:
            raise QgsProcessingException(QCoreApplication.translate("S2Masks", "{}: model {} is not installed. {}")
                                         .format(parameter, value, known.install_hint()))
    return value


def chosen_card(algorithm, parameters, context, target, cards, prefix=""):
    """The card of the model chosen by name (or by an earlier release's number)."""
    name = f"{prefix}MODEL"
    value = model_name(parameters.get(name), target, cards, model_catalogue(), name)
    chosen = value if isinstance(value, str) and value else algorithm.parameterAsEnumString(parameters, name, context)
    if chosen != CUSTOM:
        card = next((card for card in cards if card.id == chosen), None)
        if card is None:
            raise QgsProcessingException(algorithm.tr("{}: there is no model {!r}. Choose one of: {}.").format(
                name, value, ", ".join([card.id for card in cards] + [CUSTOM])))
        return card
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
                       progress=progress_reporter(feedback),
                       should_cancel=feedback.isCanceled, log=feedback.pushInfo, warn=feedback.pushWarning)
    write_probability_styles(outputs, cards)
    for path in outputs.values():
        style_on_load(context, path)
    return {target: str(path) for target, path in outputs.items()}


def write_probability_styles(outputs, cards):
    """The .qml of each probability raster ({target: path}): transparent where the mask step's default
    (the card's rule) can never flag the pixel."""
    for target, path in outputs.items():
        styles.write_probability_style(path, style_threshold(cards[target], target))


def style_threshold(card, target):
    """The probability below which the card's rule never flags: its threshold, or for argmax 1 /
    the number of classes (the most probable of n classes has at least that)."""
    kind, value = card.rule(target)
    return value if kind == "threshold" else round(1.0 / max(2, len(card.classes())), 2)
