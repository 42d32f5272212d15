"""Every algorithm of the provider (the workflows and the shipped model included) refuses bad
values before any request or write: a QgsProcessingException whose message names the parameter
(its name or description) and says what to do, nothing written in the output or cache folder, no
request reaching the loopback Planetary Computer double.

Two tables: BAD_VALUES (hand-written: areas, dates, folders, formats and the rules between
parameters) and one value per kind of parameter generated from each parameter's definition, for
every parameter of every algorithm as the provider lists them. Both run through processing.run
(checkParameterValues) and through alg.run (prepareAlgorithm, as a model's steps run); a few rows
also through qgis_process.
"""

import os
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pc_server import PlanetaryComputerDouble
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRectangle,
    QgsReferencedRectangle,
    QgsVectorLayer,
)
from rasterio.transform import from_origin

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the T29UNU fixture scene
FLAT_AREA = "-8.74,-8.74,53.09,53.16 [EPSG:4326]"  # no width
TOMORROW = (date.today() + timedelta(days=1)).isoformat()
LOCAL_CRS = QgsCoordinateReferenceSystem.fromWkt(
    'ENGCRS["local",EDATUM["site"],CS[Cartesian,2],AXIS["x",east,ORDER[1],LENGTHUNIT["metre",1]],'
    'AXIS["y",north,ORDER[2],LENGTHUNIT["metre",1]]]')
UNWRITABLE = "/sys/s2masks-bad-inputs"  # sysfs: no one may create files there, root included
WHAT_TO_DO = re.compile(r"\b(Give|Choose|Use|Leave|Swap|Set|Draw|Select|Check|Copy|Install)\b")
MODEL = "preprocesss2improvedmaskssteps"
WITHOUT_PARAMETERS = {"installdependencies", "checkdependencies"}  # none, or yes/no choices only

# Valid parameters of every algorithm; each row changes one thing. "{name}" is a path of the
# `places` fixture, "@name" one of its layers, None removes the parameter.
BASE = {
    "listsentinel2products": {"EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10",
                              "STAC_URL": "{stac}", "OUTPUT": "{out}/footprints.gpkg"},
    "selectnecessarycoverageitems": {"FOOTPRINTS": "{footprints}", "EXTENT": AREA, "OUTPUT": "{out}/selected.gpkg"},
    "downloadstacksentinel2": {"FOOTPRINTS": "{footprints}", "EXTENT": AREA, "CACHE_FOLDER": "{cache}",
                               "OUTPUT_FOLDER": "{out}/stack"},
    "mergesentinel2orbits": {"RASTERS": ["{raster}"], "MASKS": ["{mask}"], "OUTPUT": "{out}/merged.tif",
                             "OUTPUT_MASK": "{out}/merged_mask.tif"},
    "computecloudprob": {"INPUT": "{raster}", "OUTPUT": "{out}/cloud.tif"},
    "computeshadowprob": {"INPUT": "{raster}", "OUTPUT": "{out}/shadow.tif"},
    "computecloudshadowprob": {"INPUT": "{raster}", "CLOUD_OUTPUT": "{out}/cloud.tif",
                               "SHADOW_OUTPUT": "{out}/shadow.tif"},
    "mergecloudmaskssimple": {"PRODUCT_MASK": "{mask}", "CLOUD_PROBABILITY": "{probability}",
                              "SHADOW_PROBABILITY": "{probability}", "OUTPUT": "{out}/improved.tif"},
    "improvecloudmask": {"INPUT": "{raster}", "PRODUCT_MASK": "{mask}", "OUTPUT": "{out}/improved.tif"},
    "preprocesss2": {"EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": "{stac}",
                     "CACHE_FOLDER": "{cache}", "OUTPUT_FOLDER": "{out}/s2", "FOOTPRINTS": "{out}/s2/selected.gpkg"},
    "preprocesss2improvedmasks": {"EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10",
                                  "STAC_URL": "{stac}", "CACHE_FOLDER": "{cache}", "OUTPUT_FOLDER": "{out}/s2",
                                  "FOOTPRINTS": "{out}/s2/selected.gpkg", "STATISTICS": "{out}/s2/statistics.csv"},
    MODEL: {"area": AREA, "start_date": "2022-10-01", "end_date": "2022-10-10", "stac_url": "{stac}",
            "cache_folder": "{cache}", "output_folder": "{out}/model", "merge:improved_mask": "{out}/model/mask.tif"},
}
CUSTOM = "custom"  # the model choice of a custom ONNX file + card

# (algorithm, changes, the parameter the message must name, what it must say to do)
BAD_VALUES = [
    # List Sentinel-2 products
    ("listsentinel2products", {"EXTENT": FLAT_AREA}, "EXTENT", "Draw an extent with a width"),
    ("listsentinel2products", {"EXTENT": None}, "EXTENT", "Set an extent"),
    ("listsentinel2products", {"EXTENT": QgsReferencedRectangle(QgsRectangle(0, 0, 1, 1), LOCAL_CRS)}, "EXTENT",
     "Use an area in a CRS with a known transformation"),
    ("listsentinel2products", {"EXTENT": "1e12,1.1e12,1e12,1.1e12 [EPSG:32633]"}, "EXTENT", "Check the extent's CRS"),
    ("listsentinel2products", {"EXTENT": None, "AREA": "@no_features"}, "AREA", "Use a layer with polygons"),
    ("listsentinel2products", {"EXTENT": None, "AREA": "@flat_polygon"}, "AREA", "use a layer with polygons"),
    ("listsentinel2products", {"START_DATE": "2022-10-10", "END_DATE": "2022-10-01"}, "START_DATE", "Swap them"),
    ("listsentinel2products", {"END_DATE": TOMORROW}, "END_DATE", "Set it to"),
    ("listsentinel2products", {"START_DATE": TOMORROW, "END_DATE": TOMORROW}, "START_DATE", "no acquisitions yet"),
    ("listsentinel2products", {"START_DATE": "2014-01-01", "END_DATE": "2014-02-01"}, "START_DATE",
     "Choose later dates"),
    ("listsentinel2products", {"MAX_CLOUD_COVER": 150}, "MAX_CLOUD_COVER", "Give a number from 0 to 100"),
    ("listsentinel2products", {"ATTEMPTS": 1.7}, "ATTEMPTS", "not rounded for you. Give a whole number"),
    ("listsentinel2products", {"STAC_URL": "planetarycomputer.microsoft.com/api/stac/v1"}, "STAC_URL",
     "Give the root of a STAC API"),
    ("listsentinel2products", {"OUTPUT": "{out}/footprints.png"}, "OUTPUT", r"ending in \.gpkg"),
    ("listsentinel2products", {"OUTPUT": UNWRITABLE + "/footprints.gpkg"}, "OUTPUT", "Choose a folder you can write"),
    ("listsentinel2products", {"OUTPUT": "{a_file}/footprints.gpkg"}, "OUTPUT", "is a file, not a folder. Choose"),
    ("listsentinel2products", {"OUTPUT": "{read_only}/footprints.gpkg"}, "OUTPUT", "Choose a folder you can write"),
    # Select necessary coverage items
    ("selectnecessarycoverageitems", {"FOOTPRINTS": "@without_items"}, "FOOTPRINTS",
     "Give the output of 'List Sentinel-2 products'"),
    ("selectnecessarycoverageitems", {"MIN_TILE_COVER": 0}, "MIN_TILE_COVER", r"0\.99 keeps only passes"),
    ("selectnecessarycoverageitems", {"MAX_TILES_PER_TIME": 1.7}, "MAX_TILES_PER_TIME", "not rounded for you"),
    ("selectnecessarycoverageitems", {"MAX_TILES_PER_TIME": 0}, "MAX_TILES_PER_TIME", "whole number of 1 or more"),
    ("selectnecessarycoverageitems", {"EXTENT": FLAT_AREA}, "EXTENT", "Draw an extent"),
    ("selectnecessarycoverageitems", {"EXTENT": None}, "EXTENT", "Set an extent"),
    ("selectnecessarycoverageitems", {"OUTPUT": "{out}/selected.png"}, "OUTPUT", r"ending in \.gpkg"),
    ("selectnecessarycoverageitems", {"OUTPUT": "{read_only}/selected.gpkg"}, "OUTPUT", "Choose a folder"),
    # Download and stack Sentinel-2
    ("downloadstacksentinel2", {"FOOTPRINTS": None}, "FOOTPRINTS", "Give the selected footprints"),
    ("downloadstacksentinel2", {"FOOTPRINTS": None, "ITEM": "{not json"}, "ITEM", "Give the item's URL or its JSON"),
    ("downloadstacksentinel2", {"FOOTPRINTS": "@without_items"}, "FOOTPRINTS", "Give the output of 'List"),
    ("downloadstacksentinel2", {"OUTPUT_CRS": "EPSG:4326"}, "OUTPUT_CRS", "give a projected CRS"),
    ("downloadstacksentinel2", {"CACHE_FOLDER": "{read_only}"}, "CACHE_FOLDER", "Choose a folder you can write"),
    ("downloadstacksentinel2", {"CACHE_FOLDER": "{a_file}"}, "CACHE_FOLDER", "is a file, not a folder"),
    ("downloadstacksentinel2", {"OUTPUT_FOLDER": "{read_only}/stack"}, "OUTPUT_FOLDER", "Choose a folder"),
    ("downloadstacksentinel2", {"OUTPUT_FOLDER": "{a_file}"}, "OUTPUT_FOLDER", "is a file, not a folder"),
    ("downloadstacksentinel2", {"EXTENT": FLAT_AREA}, "EXTENT", "Draw an extent"),
    # Merge Sentinel-2 orbits
    ("mergesentinel2orbits", {"MASKS": ["{mask}", "{mask}"]}, "MASKS", "Give one product mask per raster"),
    ("mergesentinel2orbits", {"MASKS": []}, "MASKS", "Give one or more raster files"),
    ("mergesentinel2orbits", {"RASTERS": ["{raster}", "{out}/missing.tif"]}, "RASTERS", "Give an existing raster"),
    ("mergesentinel2orbits", {"OUTPUT_MASK": "{out}/merged_mask.jpg"}, "OUTPUT_MASK", r"ending in \.tif"),
    ("mergesentinel2orbits", {"OUTPUT": "{read_only}/merged.tif"}, "OUTPUT", "Choose a folder"),
    # Compute cloud / shadow probability
    ("computecloudprob", {"MODEL": CUSTOM}, "CUSTOM_CARD", "Give the card"),
    ("computecloudprob", {"MODEL": CUSTOM, "CUSTOM_CARD": "{raster}"}, "CUSTOM_CARD", r"Give the path of a \.json"),
    ("computecloudprob", {"INPUT": "{a_file}"}, "INPUT", "Give an existing raster"),
    ("computecloudprob", {"OUTPUT": "{out}"}, "OUTPUT", r"ending in \.tif"),
    ("computeshadowprob", {"MODEL": CUSTOM, "CUSTOM_ONNX": "{raster}"}, "CUSTOM_ONNX", r"\.onnx file"),
    ("computeshadowprob", {"OUTPUT": "{read_only}/shadow.tif"}, "OUTPUT", "Choose a folder"),
    ("computecloudshadowprob", {"SHADOW_MODEL": CUSTOM}, "SHADOW_CUSTOM_CARD", "Give the card"),
    ("computecloudshadowprob", {"CLOUD_OUTPUT": "{a_file}/cloud.tif"}, "CLOUD_OUTPUT", "is a file, not a folder"),
    # Merge cloud masks
    ("mergecloudmaskssimple", {"CLOUD_THR": 1.5}, "CLOUD_THR", "Give a number from 0 to 1"),
    ("mergecloudmaskssimple", {"CLOSING_SIZE": 2.5}, "CLOSING_SIZE", "Give a whole number"),
    ("mergecloudmaskssimple", {"OUTPUT_CLASSES": "{out}/classes.jpg"}, "OUTPUT_CLASSES", r"ending in \.tif"),
    ("mergecloudmaskssimple", {"PRODUCT_MASK": None}, "PRODUCT_MASK", "Give a raster file"),
    # Improve cloud mask
    ("improvecloudmask", {"PRODUCT_MASK": "{out}/missing_mask.tif"}, "PRODUCT_MASK", "Give an existing raster"),
    ("improvecloudmask", {"CLOUD_MODEL": CUSTOM}, "CLOUD_CUSTOM_CARD", "Give the card"),
    ("improvecloudmask", {"SHADOW_OUTPUT": "{read_only}/shadow.tif"}, "SHADOW_OUTPUT", "Choose a folder"),
    # Preprocess Sentinel-2: refused before the search, OUTPUT_FOLDER not created
    ("preprocesss2", {"OUTPUT_FOLDER": UNWRITABLE}, "OUTPUT_FOLDER", "Choose a folder you can write"),
    ("preprocesss2", {"OUTPUT_FOLDER": "{read_only}/s2"}, "OUTPUT_FOLDER", "Choose a folder you can write"),
    ("preprocesss2", {"MAX_TILES_PER_TIME": 1.7}, "MAX_TILES_PER_TIME", "not rounded for you"),
    ("preprocesss2", {"FOOTPRINTS": "{out}/s2/selected.png"}, "FOOTPRINTS", r"ending in \.gpkg"),
    ("preprocesss2", {"CACHE_FOLDER": "{read_only}"}, "CACHE_FOLDER", "Choose a folder you can write"),
    ("preprocesss2", {"START_DATE": "2022-10-10", "END_DATE": "2022-10-01"}, "START_DATE", "Swap them"),
    ("preprocesss2", {"MIN_TILE_COVER": 0}, "MIN_TILE_COVER", r"0\.99 keeps"),
    ("preprocesss2", {"OUTPUT_CRS": "EPSG:4326"}, "OUTPUT_CRS", "give a projected CRS"),
    ("preprocesss2", {"EXTENT": None, "AREA": "@flat_polygon"}, "AREA", "use a layer with polygons"),
    # Preprocess Sentinel-2 with improved masks
    ("preprocesss2improvedmasks", {"OUTPUT_FOLDER": UNWRITABLE}, "OUTPUT_FOLDER", "Choose a folder you can write"),
    ("preprocesss2improvedmasks", {"STATISTICS": "{out}/s2/statistics.png"}, "STATISTICS", r"ending in \.gpkg"),
    ("preprocesss2improvedmasks", {"MAX_TILES_PER_TIME": 1.7}, "MAX_TILES_PER_TIME", "not rounded for you"),
    ("preprocesss2improvedmasks", {"CACHE_FOLDER": "{read_only}"}, "CACHE_FOLDER", "Choose a folder"),
    ("preprocesss2improvedmasks", {"END_DATE": TOMORROW}, "END_DATE", "Set it to"),
    ("preprocesss2improvedmasks", {"CLOUD_MODEL": CUSTOM}, "CLOUD_CUSTOM_CARD", "Give the card"),
    ("preprocesss2improvedmasks", {"STAC_URL": "localhost:8080/api/stac/v1"}, "STAC_URL", "Give the root"),
    ("preprocesss2improvedmasks", {"EXTENT": None}, "EXTENT", "Set an extent"),
    ("preprocesss2improvedmasks", {"EXECUTOR": 2}, "DASK_ADDRESS", "Give the scheduler's address"),
    ("preprocesss2improvedmasks", {"EXECUTOR": 2, "DASK_ADDRESS": "10.0.0.5"}, "DASK_ADDRESS", "tcp://host:port"),
    # The shipped model: its inputs get the checks of the steps they feed
    (MODEL, {"output_folder": UNWRITABLE}, "output_folder", "Choose a folder you can write"),
    (MODEL, {"output_folder": "{a_file}"}, "output_folder", "is a file, not a folder"),
    (MODEL, {"cache_folder": "{read_only}"}, "cache_folder", "Choose a folder"),
    (MODEL, {"area": FLAT_AREA}, "area", "Draw an extent"),
    (MODEL, {"start_date": "2022-10-10", "end_date": "2022-10-01"}, "start_date", "Swap them"),
    (MODEL, {"merge:improved_mask": "{out}/model/mask.png"}, "merge:improved_mask", r"ending in \.tif"),
]


# -- the places and layers the rows use -----------------------------------------------------------
def _raster(path, count, dtype, value):
    profile = {"driver": "GTiff", "width": 16, "height": 16, "count": count, "dtype": dtype,
               "crs": "EPSG:32629", "transform": from_origin(500000, 5900000, 10, 10)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((np.full((count, 16, 16), value) * (1 + np.arange(256).reshape(16, 16) / 256)).astype(dtype))
    return str(path)


def _polygon_layer(wkts, fields=""):
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:4326{fields}", "area", "memory")
    features = []
    for wkt in wkts:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def _immutable(folder, flag):
    """chattr +i / -i for root, where chattr exists (a minimal chroot has none)."""
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", flag, str(folder)], capture_output=True)


def _make_read_only(folder):
    """chmod 555, and for root (whom modes do not stop) the immutable attribute; False if neither holds."""
    folder.chmod(0o555)
    _immutable(folder, "+i")
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


@pytest.fixture(scope="module")
def inputs_folder(tmp_path_factory):
    """Rasters, a plain file and a read-only folder, shared by the rows (which only read them)."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    places = {"raster": _raster(folder / "s2.tif", 12, "uint16", 1200),
              "mask": _raster(folder / "s2_mask.tif", 1, "uint8", 0),
              "probability": _raster(folder / "s2_cloud.tif", 1, "float32", 0.1),
              "a_file": str(folder / "plain.txt")}
    Path(places["a_file"]).write_text("not a folder")
    read_only = folder / "read-only"
    read_only.mkdir()
    places["read_only"] = str(read_only) if _make_read_only(read_only) else None
    yield folder, places
    _immutable(read_only, "-i")
    read_only.chmod(0o755)


@pytest.fixture(scope="module")
def footprints_file(inputs_folder, s2masks_module_provider):
    """A footprint layer listed once from its own double (the rows' doubles stay unasked)."""
    import processing

    folder, _ = inputs_folder
    target = folder / "footprints.gpkg"
    with PlanetaryComputerDouble() as double:
        processing.run("s2masks:listsentinel2products", {
            "EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": double.url,
            "OUTPUT": str(target)}, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    return str(target)


@pytest.fixture(scope="module")
def s2masks_module_provider(qgis_processing):
    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@pytest.fixture
def places(inputs_folder, footprints_file, tmp_path):
    """Fresh, empty output and cache folders for one row, and the double it may not reach."""
    _, shared = inputs_folder
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    cache.mkdir()
    layers = {
        "no_features": _polygon_layer([]),
        "flat_polygon": _polygon_layer(["POLYGON((-8.7 53.1, -8.7 53.12, -8.7 53.14, -8.7 53.1))"]),
        "without_items": _polygon_layer(["POLYGON((-8.74 53.09, -8.62 53.09, -8.62 53.16, -8.74 53.09))"],
                                        "&field=item_id:string"),
    }
    with PlanetaryComputerDouble() as double:
        yield dict(shared, out=str(out), cache=str(cache), footprints=footprints_file, stac=double.url,
                   layers=layers, double=double)


def resolve(value, places):
    if isinstance(value, list):
        return [resolve(entry, places) for entry in value]
    if isinstance(value, str) and value.startswith("@"):
        return places["layers"][value[1:]]
    if isinstance(value, str) and "{" in value and "}" in value and not value.startswith("{not"):
        if "{read_only}" in value and places["read_only"] is None:
            pytest.skip("no read-only folder can be made here")
        return value.format(**{k: v for k, v in places.items() if isinstance(v, str)})
    return value


def parameters_for(algorithm, changes, places):
    parameters = {key: resolve(value, places) for key, value in BASE[algorithm].items()}
    for key, value in changes.items():
        if value is None:
            parameters.pop(key, None)
        else:
            parameters[key] = resolve(value, places)
    return parameters


class ErrorFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.errors = []

    def reportError(self, error, fatalError=False):  # noqa: N802
        self.errors.append(error)


def refusal(algorithm, parameters, how):
    """The message of the refusal, through processing.run or alg.run (which reports it)."""
    import processing

    context = QgsProcessingContext()
    if how == "processing.run":
        with pytest.raises(QgsProcessingException) as info:
            processing.run(f"s2masks:{algorithm}", parameters, context=context, feedback=QgsProcessingFeedback())
        return str(info.value)
    alg = QgsApplication.processingRegistry().createAlgorithmById(f"s2masks:{algorithm}")
    feedback = ErrorFeedback()
    results, ok = alg.run(parameters, context, feedback)
    assert not ok, f"{algorithm} accepted {parameters}: {results}"
    return "\n".join(feedback.errors)


def snapshot(folder):
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*"))


def assert_refused(algorithm, parameters, places, name, hint, how):
    before = {key: snapshot(places[key]) for key in ("out", "cache")}
    message = refusal(algorithm, parameters, how)
    definition = QgsApplication.processingRegistry().algorithmById(f"s2masks:{algorithm}").parameterDefinition(name)
    assert name.lower() in message.lower() or definition.description().lower() in message.lower(), message
    assert re.search(hint, message), message
    assert WHAT_TO_DO.search(message), message
    assert "Traceback" not in message, message
    assert {key: snapshot(places[key]) for key in ("out", "cache")} == before
    assert places["double"].requests == [], f"{algorithm} reached the network: {places['double'].requests}"
    assert not Path(UNWRITABLE).exists()


# -- the hand-written table -----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["processing.run", "alg.run"])
@pytest.mark.parametrize("algorithm, changes, name, hint", BAD_VALUES,
                         ids=[f"{row[0]}-{'-'.join(row[1])}-{i}" for i, row in enumerate(BAD_VALUES)])
def test_bad_value_is_refused_before_any_request_or_write(s2masks_module_provider, places, algorithm, changes, name,
                                                          hint, how):
    assert_refused(algorithm, parameters_for(algorithm, changes, places), places, name, hint, how)


# -- one bad value per kind of parameter, for every parameter the provider lists ------------------
def generated_bad_values(definition, places):
    """Values no parameter of this kind accepts, from its definition."""
    kind, name = definition.type(), definition.name()
    if kind == "number":
        values = ["abc"]
        if definition.minimum() > -1e300:
            values.append(definition.minimum() - 1)
        if definition.maximum() < 1e300:
            values.append(definition.maximum() + 1)
        if definition.dataType() == 0:  # Integer
            values.append(definition.minimum() + 1.5 if definition.minimum() > -1e300 else 1.5)
        return values
    values = {
        "enum": lambda: [len(definition.options()), "no such choice"],
        "rasterDestination": lambda: [places["out"] + "/output.png"],
        "sink": lambda: [places["out"] + "/output.png"],
        "folderDestination": lambda: [UNWRITABLE, places["a_file"]],
        "file": lambda: ([places["a_file"] + "/sub"] if definition.behavior() == 1  # a folder
                         else [places["out"] + "/missing.json"]),
        "raster": lambda: [places["out"] + "/missing.tif"],
        "source": lambda: [places["out"] + "/missing.gpkg"],
        "multilayer": lambda: [[places["out"] + "/missing.tif"]],
        "crs": lambda: ["EPSG:999999"],
        "datetime": lambda: ["2022-13-45"],
        "extent": lambda: ["not an extent"],
        "authcfg": lambda: ["nosuch1"],
        "string": lambda: ["not a url"] if name.lower() == "stac_url" else [],
    }.get(kind)
    return values() if values else []


ALGORITHMS = sorted(BASE)


@pytest.mark.parametrize("how", ["processing.run", "alg.run"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_parameter_refuses_a_bad_value_of_its_kind(s2masks_module_provider, places, algorithm, how):
    alg = QgsApplication.processingRegistry().algorithmById(f"s2masks:{algorithm}")
    tried = 0
    for definition in alg.parameterDefinitions():
        for value in generated_bad_values(definition, places):
            parameters = parameters_for(algorithm, {}, places)
            parameters[definition.name()] = value
            assert_refused(algorithm, parameters, places, definition.name(), WHAT_TO_DO.pattern, how)
            tried += 1
    assert tried >= 5


def test_the_tables_cover_every_algorithm_of_the_provider(s2masks_module_provider, places):
    """Listed from the provider: each algorithm with parameters has a valid base (accepted as it
    is, so each row fails for its one change) and rows; the two without parameters have none."""
    ids = {alg.name() for alg in s2masks_module_provider.algorithms()}
    with_parameters = {name for name in ids if any(  # a yes/no choice cannot be wrong
        definition.type() != "boolean"
        for definition in QgsApplication.processingRegistry().algorithmById(f"s2masks:{name}").parameterDefinitions())}
    assert with_parameters == set(BASE) and ids - with_parameters == WITHOUT_PARAMETERS
    assert {row[0] for row in BAD_VALUES} == set(BASE)
    counts = {}
    for algorithm in ALGORITHMS:
        alg = QgsApplication.processingRegistry().algorithmById(f"s2masks:{algorithm}")
        ok, message = alg.checkParameterValues(parameters_for(algorithm, {}, places), QgsProcessingContext())
        assert ok, f"{algorithm}: {message}"
        generated = sum(len(generated_bad_values(d, places)) for d in alg.parameterDefinitions())
        counts[algorithm] = sum(row[0] == algorithm for row in BAD_VALUES) + generated
    print("\nbad values per algorithm:", ", ".join(f"{name} {count}" for name, count in counts.items()),
          f"(total {sum(counts.values())})")
    assert sum(counts.values()) >= 60 and min(counts.values()) >= 5


# -- what the area, the search and the token endpoint do with what is not a bad input ------------
def test_download_needs_no_area(s2masks_module_provider, places):
    """Download and stack reads the products' whole footprints when no area is given: not a bad input."""
    alg = QgsApplication.processingRegistry().algorithmById("s2masks:downloadstacksentinel2")
    ok, message = alg.checkParameterValues(parameters_for("downloadstacksentinel2", {"EXTENT": None}, places),
                                           QgsProcessingContext())
    assert ok, message


def test_a_bow_tie_area_is_repaired_not_refused(s2masks_module_provider, places):
    """A self-intersecting polygon (FarmVibes issue #194) is made valid, then measured and searched."""
    import processing

    bow_tie = _polygon_layer(["POLYGON((-8.74 53.09, -8.62 53.16, -8.62 53.09, -8.74 53.16, -8.74 53.09))"])
    assert not bow_tie.getFeature(1).geometry().isGeosValid()
    result = processing.run("s2masks:listsentinel2products", dict(
        parameters_for("listsentinel2products", {"EXTENT": None}, places), AREA=bow_tie),
        context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    assert result["COUNT"] == 1
    layer = QgsVectorLayer(result["OUTPUT"])
    assert 0 < layer.getFeature(1)["area_cover"] <= 1
    del layer


def test_cloud_cover_is_checked_again_on_what_the_server_returns(s2masks_module_provider, places, monkeypatch):
    """A server that ignores the eo:cloud_cover filter: the 60% scene is still left out, and the log says so."""
    import pc_server
    import processing

    class Recording(QgsProcessingFeedback):
        infos = []

        def pushInfo(self, text):  # noqa: N802
            self.infos.append(text)

    monkeypatch.setattr(pc_server, "_passes_query", lambda properties, query: True)
    feedback = Recording()
    result = processing.run("s2masks:listsentinel2products", dict(
        parameters_for("listsentinel2products", {}, places), MAX_CLOUD_COVER=50, OUTPUT="memory:"),
        context=QgsProcessingContext(), feedback=feedback)
    assert places["double"].requests_to("/api/stac/v1/search")  # the server was asked, and ignored the filter
    assert result["COUNT"] == 0
    assert any("above the maximum cloud cover of 50%" in line for line in feedback.infos), feedback.infos


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_says_to_check_the_key_not_the_url(s2masks_module_provider, places, status):
    import processing

    places["double"].inject("/api/stac/v1", "status", times=20, status=status)
    with pytest.raises(QgsProcessingException) as info:
        processing.run("s2masks:listsentinel2products", parameters_for("listsentinel2products", {}, places),
                       context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    message = str(info.value)
    assert f"HTTP {status}" in message and "subscription key" in message and "AUTHCFG" in message, message
    assert "Check the STAC API URL" not in message
    assert not snapshot(places["out"])


def test_a_refused_key_at_the_token_endpoint_says_to_check_the_key(places):
    from s2masks.core import errors, signing

    places["double"].inject("/api/sas/v1/token", "status", times=5, status=401)
    signing.clear_token_cache()
    with pytest.raises(errors.SearchError) as info:
        signing.get_token("sentinel2l2a01", "sentinel2-l2", pc_key="wrong-key", endpoint=places["double"].sas_url)
    assert "HTTP 401" in str(info.value) and "subscription key" in str(info.value)
    assert "AUTHCFG" in str(info.value) and "PC_SDK_SUBSCRIPTION_KEY" in str(info.value)


# -- a few rows through qgis_process, as a batch user meets them ----------------------------------
QGIS_PROCESS_ROWS = [
    ("listsentinel2products", {"OUTPUT": "{out}/footprints.png"}, "OUTPUT", r"ending in \.gpkg"),
    ("selectnecessarycoverageitems", {"MAX_TILES_PER_TIME": "1.7"}, "MAX_TILES_PER_TIME", "not rounded for you"),
    ("preprocesss2improvedmasks", {"OUTPUT_FOLDER": UNWRITABLE}, "OUTPUT_FOLDER", "Choose a folder you can write"),
]


@pytest.mark.qgis_process
@pytest.mark.parametrize("algorithm, changes, name, hint", QGIS_PROCESS_ROWS)
def test_bad_value_through_qgis_process(enabled_qgis_process_env, places, algorithm, changes, name, hint):
    parameters = parameters_for(algorithm, changes, places)
    arguments = [f"{key}={value}" for key, value in parameters.items()]
    result = subprocess.run(["/usr/bin/qgis_process.bin", "run", f"s2masks:{algorithm}", "--", *arguments],
                            env=enabled_qgis_process_env, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert name in output and re.search(hint, output), output
    assert "Traceback" not in output, output
    assert not snapshot(places["out"]) and places["double"].requests == []
