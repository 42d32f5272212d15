"""Compute shadow probability (FarmVibes op compute_shadow_prob)."""

from .probability import ComputeProbability


class ComputeShadowProb(ComputeProbability):
    NAME = "computeshadowprob"
    DISPLAY_NAME = "Compute shadow probability"
    TARGET = "shadow"
    DESCRIPTION = (
        "Runs an ONNX cloud-shadow segmentation model over a stacked Sentinel-2 raster and writes the "
        "per-pixel shadow probability (0-1) on the raster's grid. Models are described by cards (bands, "
        "scaling, resolution, chip size, output); mismatches are refused with the reason. The default is "
        "the trained ukis-csmask 6-band L2A model; FarmVibes' shadow.onnx works with its card when you "
        "copy the file into s2masks/models in your QGIS profile folder (kept across plugin upgrades). Pixels without data get no probability (NaN, the raster's nodata). "
        "FarmVibes op: compute_shadow_prob."
    )
