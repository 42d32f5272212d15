"""Loading outputs into the project when an algorithm completes, optionally in a layer group
(one per acquisition date). QGIS 3.32+ has LayerDetails.groupName; older versions move the
layer into the group with a post-processor."""

from qgis.core import QgsProcessingContext, QgsProcessingLayerPostProcessorInterface

_HAS_GROUP_NAME = hasattr(QgsProcessingContext.LayerDetails(), "groupName")
# Post-processors must outlive the algorithm: QGIS keeps only a plain pointer to them.
_KEEP_ALIVE = []


class _IntoGroup(QgsProcessingLayerPostProcessorInterface):
    def __init__(self, group_name):
        super().__init__()
        self.group_name = group_name

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        root = context.project().layerTreeRoot() if context.project() else None
        node = root.findLayer(layer.id()) if root else None
        if node is None:
            return
        group = root.findGroup(self.group_name) or root.insertGroup(0, self.group_name)
        group.insertChildNode(0, node.clone())
        node.parent().removeChildNode(node)


def load_on_completion(context, path, name, group=None, sort_key=0):
    details = QgsProcessingContext.LayerDetails(name, context.project(), name)
    details.forceName = True
    if group and _HAS_GROUP_NAME:
        details.groupName = group
        details.layerSortKey = sort_key
    elif group:
        processor = _IntoGroup(group)
        _KEEP_ALIVE.append(processor)
        details.setPostProcessor(processor)
    context.addLayerToLoadOnCompletion(str(path), details)


def forget_layers(context, paths):
    """Drops layers a child algorithm asked to load (the parent loads them its own way)."""
    wanted = {str(path) for path in paths}
    remaining = {key: details for key, details in context.layersToLoadOnCompletion().items() if key not in wanted}
    context.setLayersToLoadOnCompletion(remaining)
