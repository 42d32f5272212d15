"""Improve cloud mask (FarmVibes workflow improve_cloud_mask): stacked raster + product mask ->
cloud and shadow probability -> merged, improved mask."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from .base import S2MasksAlgorithm, TifDestination, run_child
from .compute_cloud_shadow_prob import add_both_model_parameters
from .merge_cloud_masks_simple import STATISTICS, add_merge_parameters
from .probability import add_inference_parameters


def add_improve_parameters(algorithm, sun_angles=True):
    """Thresholds (empty: the model card's rule), models, in_memory, then the advanced ones (shadow
    check, buffer, closing, minimum area, most nodata, sun angles unless sun_angles=False, input scale,
    ...), in the order the workflows show them. Returns the installed cards per target."""
    add_merge_parameters(algorithm, sun_angles)
    cards = add_both_model_parameters(algorithm)
    add_inference_parameters(algorithm)
    return cards


def improve(parameters, context, feedback, raster, product_mask, outputs):
    """Runs the two child steps; outputs: {"OUTPUT", "OUTPUT_CLASSES", "CLOUD_OUTPUT", "SHADOW_OUTPUT"}."""
    steps = QgsProcessingMultiStepFeedback(2, feedback)
    probabilities = run_child("s2masks:computecloudshadowprob", parameters, context, steps, INPUT=raster,
                              CLOUD_OUTPUT=outputs["CLOUD_OUTPUT"], SHADOW_OUTPUT=outputs["SHADOW_OUTPUT"])
    steps.setCurrentStep(1)
    if steps.isCanceled():
        raise QgsProcessingException(QCoreApplication.translate("S2Masks", "Cancelled after the probabilities; no "
                                                                           "mask was written."))
    merged = run_child("s2masks:mergecloudmaskssimple", parameters, context, steps, PRODUCT_MASK=product_mask,
                       CLOUD_PROBABILITY=probabilities["CLOUD_OUTPUT"],
                       SHADOW_PROBABILITY=probabilities["SHADOW_OUTPUT"], OUTPUT=outputs["OUTPUT"],
                       OUTPUT_CLASSES=outputs["OUTPUT_CLASSES"])
    return dict(merged, **probabilities)


class ImproveCloudMask(S2MasksAlgorithm):
    NAME = "improvecloudmask"
    DISPLAY_NAME = "Improve cloud mask"
    DESCRIPTION = (
        "From a stacked Sentinel-2 raster and its product mask to the improved cloud mask: computes cloud "
        "and shadow probabilities with the chosen ONNX models (one pass when one model gives both; the input "
        "scale from the raster's metadata or its values, as the log says), classifies them by the models' card "
        "rule (the most probable class for the default ukis-csmask model) or the thresholds you give, and "
        "merges them with the product mask, keeping the model's cloud shadow only where a cloud can cast it "
        "(the sun position from the product mask); optionally grows the result ('Compute cloud and shadow "
        "probability', then 'Merge cloud masks'; one progress bar, Cancel anywhere). Fails with the reason "
        "instead of writing a mask that is mostly nodata. FarmVibes workflow: improve_cloud_mask."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("INPUT", self.tr("Stacked Sentinel-2 raster")),
                 "A 12-band stack from 'Download and stack Sentinel-2'.")
        self.add(QgsProcessingParameterRasterLayer("PRODUCT_MASK", self.tr("Product mask")),
                 "Its product mask (same grid).")
        add_improve_parameters(self)
        self.add(TifDestination("OUTPUT", self.tr("Improved cloud mask")),
                 "uint8: 0 clear, 1 masked (cloud, shadow or nodata).")
        self.add(TifDestination("OUTPUT_CLASSES", self.tr("Cloud classes"), optional=True,
                                                         createByDefault=False),
                 "Optional uint8: 0 clear, 1 cloud, 2 cloud shadow, 255 nodata.")
        self.add(TifDestination("CLOUD_OUTPUT", self.tr("Cloud probability"),
                                                         optional=True),
                 "The cloud probability raster the mask was made from.", advanced=True)
        self.add(TifDestination("SHADOW_OUTPUT", self.tr("Shadow probability"),
                                                         optional=True),
                 "The shadow probability raster the mask was made from.", advanced=True)
        for name, (_, label) in STATISTICS.items():
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        # A destination left out means a temporary file, as for any Processing output.
        outputs = {key: parameters.get(key) or QgsProcessing.TEMPORARY_OUTPUT
                   for key in ("OUTPUT", "CLOUD_OUTPUT", "SHADOW_OUTPUT")}
        outputs["OUTPUT_CLASSES"] = parameters.get("OUTPUT_CLASSES")
        return improve(parameters, context, feedback, parameters["INPUT"], parameters["PRODUCT_MASK"], outputs)
