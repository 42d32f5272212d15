"""QGIS plugin entry point. Imports nothing heavy, so QGIS can always load it."""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import S2MasksPlugin

    return S2MasksPlugin(iface)
