"""Loading outputs into the project when an algorithm completes, as the Toolbox, the Modeler and
`processing.runAndLoadResults` do: with the .qml style written next to each raster applied (QGIS
loads Processing outputs without their default style), and optionally inside nested layer groups
(one per run, one per acquisition date), in a fixed order."""

from pathlib import Path
from typing import Sequence

from qgis.core import QgsLayerTreeGroup, QgsProcessingContext, QgsProcessingLayerPostProcessorInterface

# Post-processors must outlive the algorithm: QGIS keeps only a plain pointer to them.
_KEEP_ALIVE = []
_ORDER = "s2masks/order"  # custom property of layer tree nodes: lower comes first (on top)


class _StyledInGroup(QgsProcessingLayerPostProcessorInterface):
    """Applies the .qml beside the file, then moves the layer into `groups` (outermost first)."""

    def __init__(self, groups: Sequence[str] = (), order: int = 0, extra=None):
        super().__init__()
        self.groups = tuple(groups)
        self.order = order
        self.extra = extra  # a further callable(layer), e.g. a vector layer's symbology

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if layer.providerType() in ("gdal", "ogr"):  # a file, which may have its .qml beside it
            style = Path(layer.source().split("|")[0]).with_suffix(".qml")
            if style.is_file():
                layer.loadNamedStyle(str(style))
                layer.triggerRepaint()
        if self.extra is not None:
            self.extra(layer)
        project = context.project()
        node = project.layerTreeRoot().findLayer(layer.id()) if project else None
        if node is None or not self.groups:
            return
        parent = project.layerTreeRoot()
        for name in self.groups:
            parent = _child_group(parent, name)
        clone = node.clone()
        clone.setCustomProperty(_ORDER, self.order)
        parent.insertChildNode(_position(parent, self.order), clone)
        node.parent().removeChildNode(node)


def _child_group(parent: QgsLayerTreeGroup, name: str) -> QgsLayerTreeGroup:
    for child in parent.children():
        if isinstance(child, QgsLayerTreeGroup) and child.name() == name:
            return child
    group = parent.insertGroup(0, name)
    group.setCustomProperty(_ORDER, -1)  # groups above the layers beside them
    return group


def _position(parent: QgsLayerTreeGroup, order: int) -> int:
    """Index before the first child that sorts after `order` (groups count as -1)."""
    for index, child in enumerate(parent.children()):
        if int(child.customProperty(_ORDER, 0) or 0) > order:
            return index
    return len(parent.children())


def _post_processor(groups, order, extra):
    processor = _StyledInGroup(groups, order, extra)
    _KEEP_ALIVE.append(processor)
    return processor


def load_on_completion(context, path, name, groups: Sequence[str] = (), order: int = 0, extra=None):
    """Loads `path` when the algorithm completes, styled, inside `groups` (outermost first)."""
    details = QgsProcessingContext.LayerDetails(name, context.project(), name)
    details.forceName = True
    details.setPostProcessor(_post_processor(groups, order, extra))
    context.addLayerToLoadOnCompletion(str(path), details)


def style_on_load(context, output, groups: Sequence[str] = (), order: int = 0, extra=None):
    """For an output QGIS loads itself (a destination parameter): apply its .qml (and place it)."""
    if context.willLoadLayerOnCompletion(str(output)):
        context.layerToLoadOnCompletionDetails(str(output)).setPostProcessor(_post_processor(groups, order, extra))


def forget_layers(context, paths):
    """Drops layers a child algorithm asked to load (the parent loads them its own way)."""
    wanted = {str(path) for path in paths}
    remaining = {key: details for key, details in context.layersToLoadOnCompletion().items() if key not in wanted}
    context.setLayersToLoadOnCompletion(remaining)
