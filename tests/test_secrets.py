"""The subscription key stays secret: it comes from QGIS's Authentication Manager (AUTHCFG) or
PC_SDK_SUBSCRIPTION_KEY, and a sentinel key is found nowhere in qgis_process's output, the
profile's files (processing log included) or the outputs. The deprecated PC_KEY is masked
wherever QGIS turns parameter values into text."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException

from s2masks.algorithms import inputs, network
from s2masks.algorithms.compat import FLAG_ADVANCED

SENTINEL = "SENTINEL-KEY-7f3a9c21"
ALGORITHMS_WITH_KEY = ("listsentinel2products", "downloadstacksentinel2", "preprocesss2", "preprocesss2improvedmasks")
AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"


# -- in QGIS: the parameter and the key's sources ------------------------------------------------

@pytest.mark.parametrize("algorithm_id", ALGORITHMS_WITH_KEY)
def test_pc_key_is_masked_wherever_qgis_prints_values(s2masks_provider, algorithm_id, tmp_path):
    """The dialog's log ('Input parameters'), processing.log (asPythonCommand), 'Copy as
    qgis_process command' and the history (QGIS 3.24+) all go through these methods."""
    try:  # processing.log through Python until QGIS 3.40; QGIS 3.44 keeps history in C++ (asPythonCommand too)
        from processing.core.ProcessingLog import ProcessingLog
    except ImportError:
        ProcessingLog = None

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(f"s2masks:{algorithm_id}")
    context = QgsProcessingContext()
    parameters = {"PC_KEY": SENTINEL, "EXTENT": AREA, "AUTHCFG": "abc1234"}
    definition = algorithm.parameterDefinition("PC_KEY")
    assert definition.flags() & FLAG_ADVANCED  # deprecated: out of the way in the dialog
    shown = [definition.valueAsPythonString(SENTINEL, context), algorithm.asPythonCommand(parameters, context)]
    # what AlgorithmDialog logs under "Input parameters:"
    shown.append("{ " + ", ".join(f"'{k}' : " + algorithm.parameterDefinition(k).valueAsPythonString(v, context)
                                  for k, v in parameters.items()) + " }")
    for method in ("asQgisProcessCommand", "asMap"):  # QGIS 3.24 and later
        if hasattr(algorithm, method):
            shown.append(str(getattr(algorithm, method)(parameters, context)))
    if hasattr(definition, "valueAsJsonObject"):
        shown.append(str(definition.valueAsJsonObject(SENTINEL, context)))
    if ProcessingLog is not None:
        ProcessingLog.addToLog(algorithm.asPythonCommand(parameters, context))
        shown.append(Path(ProcessingLog.logFilename()).read_text(encoding="utf-8"))
    for text in shown:
        assert SENTINEL not in text
    assert inputs.SECRET_MASK in shown[1]
    # the mask itself is never taken for a key
    assert definition.clone().valueAsPythonString(SENTINEL, context) == repr(inputs.SECRET_MASK)


def test_key_sources_in_order(s2masks_provider, monkeypatch):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("s2masks:listsentinel2products")
    context = QgsProcessingContext()
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "from-env")
    monkeypatch.setattr(network, "_load_config", lambda authcfg, purpose: (
        "APIHeader", {"ocp-apim-subscription-key": "from-authcfg"}))
    assert inputs.subscription_key(algorithm, {"AUTHCFG": "abc1234", "PC_KEY": "plain"}, context) == \
        ("from-authcfg", True)
    assert inputs.subscription_key(algorithm, {"PC_KEY": "plain"}, context) == ("plain", True)
    assert inputs.subscription_key(algorithm, {"PC_KEY": inputs.SECRET_MASK}, context) == ("from-env", False)
    assert inputs.subscription_key(algorithm, {}, context) == ("from-env", False)
    # a key from the environment goes to Planetary Computer only, not to another STAC API
    assert inputs.search_key("http://127.0.0.1:1/api/stac/v1", "from-env", False) is None
    assert inputs.search_key("https://planetarycomputer.microsoft.com/api/stac/v1", "from-env", False) == "from-env"
    assert inputs.search_key("http://127.0.0.1:1/api/stac/v1", "chosen", True) == "chosen"


@pytest.mark.parametrize("method, values, expected", [
    ("APIHeader", {"Ocp-Apim-Subscription-Key": "k1"}, "k1"),
    ("APIHeader", {"x-whatever": "k2"}, "k2"),  # the one header there is
    ("APIHeader", {"a": "1", "b": "2"}, "has no header Ocp-Apim-Subscription-Key"),
    ("Basic", {"username": "anything", "password": "k3"}, "k3"),
    ("Basic", {"username": "anything", "password": ""}, "empty password"),
    ("OAuth2", {}, "uses the method OAuth2"),
])
def test_key_from_an_authentication_configuration(monkeypatch, method, values, expected):
    monkeypatch.setattr(network, "_load_config", lambda authcfg, purpose: (method, values))
    if expected.startswith("k"):
        assert network.subscription_key_from_auth_config("abc1234") == expected
    else:
        with pytest.raises(QgsProcessingException, match=expected):
            network.subscription_key_from_auth_config("abc1234")


def test_unknown_authentication_configuration(qgis_app):
    with pytest.raises(QgsProcessingException, match="Could not read the authentication configuration nosuch1"):
        network.subscription_key_from_auth_config("nosuch1")


# -- qgis_process: nothing prints the key --------------------------------------------------

STORE_CONFIG = textwrap.dedent("""
    import os
    from qgis.core import QgsApplication, QgsAuthMethodConfig
    app = QgsApplication([], False)
    app.initQgis()
    manager = QgsApplication.authManager()
    assert manager.setMasterPassword(os.environ["MASTER"], True)
    method = "APIHeader" if "APIHeader" in manager.authMethodsKeys() else "Basic"
    config = QgsAuthMethodConfig(method)
    config.setName("Planetary Computer")
    if method == "APIHeader":
        config.setConfig("Ocp-Apim-Subscription-Key", os.environ["KEY"])
    else:
        config.setConfig("username", "planetary-computer")
        config.setConfig("password", os.environ["KEY"])
    result = manager.storeAuthenticationConfig(config)
    if isinstance(result, tuple):
        ok, config = result[0], result[-1]
    else:
        ok = result
    assert ok
    print(config.id())
    app.exitQgis()
""")


@pytest.fixture
def profile_with_key(qgis_process_env, tmp_path):
    """A new profile with the plugin enabled, and an authentication database holding the key."""
    env = dict(qgis_process_env, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"),
               QGIS_AUTH_DB_DIR_PATH=str(tmp_path / "auth"))
    (tmp_path / "auth").mkdir()
    store = subprocess.run([sys.executable, "-c", STORE_CONFIG], env=dict(env, MASTER="master-pw", KEY=SENTINEL),
                           capture_output=True, text=True, timeout=120)
    assert store.returncode == 0, store.stdout + store.stderr
    authcfg = store.stdout.strip().splitlines()[-1]
    password_file = tmp_path / "master-password"
    password_file.write_text("master-pw\n")
    env["QGIS_AUTH_PASSWORD_FILE"] = str(password_file)
    enable = subprocess.run(["/usr/bin/qgis_process.bin", "plugins", "enable", "s2masks"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    return env, authcfg


def files_containing(folder, secret):
    found = []
    for path in Path(folder).rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(str(path))
    return found


def qgis_process(env, *arguments):
    return subprocess.run(["/usr/bin/qgis_process.bin", "run", *arguments], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.qgis_process
def test_key_from_authcfg_is_used_and_never_printed(profile_with_key, pc_double, tmp_path):
    env, authcfg = profile_with_key
    out = tmp_path / "out"
    result = qgis_process(env, "s2masks:preprocesss2improvedmasks", "--", f"EXTENT={AREA}", "START_DATE=2022-10-01",
                          "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}", f"AUTHCFG={authcfg}",
                          f"CACHE_FOLDER={tmp_path / 'cache'}", f"OUTPUT_FOLDER={out}",
                          f"FOOTPRINTS={out / 'used.gpkg'}", f"STATISTICS={out / 'statistics.gpkg'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COUNT:\t1" in result.stdout
    # the key was read from the Authentication Manager and sent to the STAC API ...
    sent = {r[2].get("Ocp-Apim-Subscription-Key") for r in pc_double.requests_to("/api/stac/v1")}
    assert sent == {SENTINEL}
    # ... and appears nowhere: output, profile (processing log included), auth database, outputs
    assert SENTINEL not in result.stdout + result.stderr
    for folder in (env["QGIS_CUSTOM_CONFIG_PATH"], env["QGIS_AUTH_DB_DIR_PATH"], out, tmp_path / "cache"):
        assert files_containing(folder, SENTINEL) == []
    assert sorted(p.suffix for p in out.iterdir())  # the outputs were written and searched


@pytest.mark.qgis_process
def test_key_from_the_environment_is_never_printed(profile_with_key, pc_double, tmp_path):
    env, _ = profile_with_key
    env = dict(env, PC_SDK_SUBSCRIPTION_KEY=SENTINEL)
    out = tmp_path / "out"
    result = qgis_process(env, "s2masks:preprocesss2", "--", f"EXTENT={AREA}", "START_DATE=2022-10-01",
                          "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}", f"CACHE_FOLDER={tmp_path / 'cache'}",
                          f"OUTPUT_FOLDER={out}", f"FOOTPRINTS={out / 'used.gpkg'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert SENTINEL not in result.stdout + result.stderr
    for folder in (env["QGIS_CUSTOM_CONFIG_PATH"], out):
        assert files_containing(folder, SENTINEL) == []
    # a key from the environment is not handed to a STAC API other than Planetary Computer's
    assert all(r[2].get("Ocp-Apim-Subscription-Key") is None for r in pc_double.requests)


@pytest.mark.qgis_process
def test_deprecated_pc_key_is_only_in_qgis_process_own_echo(profile_with_key, pc_double, tmp_path):
    """qgis_process prints the arguments it was given ("Inputs") before any plugin runs; that
    echo cannot be changed by the plugin, so PC_KEY is deprecated. Nothing else shows the key."""
    env, _ = profile_with_key
    out = tmp_path / "out.gpkg"
    result = qgis_process(env, "s2masks:listsentinel2products", "--", f"EXTENT={AREA}", "START_DATE=2022-10-01",
                          "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}", f"PC_KEY={SENTINEL}", f"OUTPUT={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    inputs_block = result.stdout.split("Inputs", 1)[1].split("\n\n\n", 1)[0]
    assert f"PC_KEY:\t{SENTINEL}" in inputs_block
    assert (result.stdout + result.stderr).count(SENTINEL) == 1  # only QGIS's own echo
    assert "PC_KEY is deprecated" in result.stdout + result.stderr
    assert files_containing(env["QGIS_CUSTOM_CONFIG_PATH"], SENTINEL) == []
    assert SENTINEL.encode() not in out.read_bytes()
