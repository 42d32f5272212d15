"""Compute cloud probability (FarmVibes op compute_cloud_prob)."""

from .probability import ComputeProbability


class ComputeCloudProb(ComputeProbability):
    NAME = "computecloudprob"
    DISPLAY_NAME = "Compute cloud probability"
    TARGET = "cloud"
    DESCRIPTION = (
        "Runs an ONNX cloud segmentation model over a stacked Sentinel-2 raster and writes the per-pixel "
        "cloud probability (0-1) on the raster's grid. The model comes with a card that says which bands, "
        "scaling, resolution and chip size it needs; a model that does not match its card, or a raster "
        "that does not match the model, is refused with the reason. The default is the trained ukis-csmask "
        "6-band L2A model (30 m, so the stack is averaged 3 x 3 and the result brought back to 10 m). "
        "Chips overlap and are blended smoothly; pixels without data get no probability (NaN, the raster's nodata). "
        "FarmVibes op: compute_cloud_prob."
    )
