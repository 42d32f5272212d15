"""Every wait is bounded: *Preprocess Sentinel-2 with improved masks* with DL_TIMEOUT=10 against a
lasting fault (the token endpoint answering 503 every time, a refused connection, a server that
accepts and never answers; at the token endpoint, the STAC API and the COG host) fails in under
90 s with a message naming the host, and leaves nothing in the output folder."""

import re
import time

import pytest
from pc_server import SilentServer, closed_port
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

from s2masks.core import signing

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the T29UNU fixture scene
LIMIT_S = 90


@pytest.fixture
def signed_assets(monkeypatch):
    """The double's asset hrefs treated as Azure Blob Storage: every band needs a SAS token."""
    monkeypatch.setattr(signing, "BLOB_HOST_SUFFIXES", signing.BLOB_HOST_SUFFIXES + ("127.0.0.1",))
    signing.clear_token_cache()
    yield monkeypatch
    signing.clear_token_cache()


@pytest.fixture
def silent_server():
    with SilentServer() as server:
        yield server


def run_workflow(double, tmp_path, **overrides):
    import processing

    out = tmp_path / "out"
    parameters = {"EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": double.url,
                  "DL_TIMEOUT": 10, "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT_FOLDER": str(out),
                  "FOOTPRINTS": str(out / "used.gpkg"), "STATISTICS": str(out / "statistics.gpkg")}
    parameters.update(overrides)
    started = time.monotonic()
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("s2masks:preprocesss2improvedmasks", parameters, context=QgsProcessingContext(),
                       feedback=QgsProcessingFeedback())
    elapsed = time.monotonic() - started
    print(f"\n{elapsed:.1f} s: {caught.value}")
    assert elapsed < LIMIT_S
    assert not out.exists() or list(out.iterdir()) == []
    return str(caught.value), elapsed


def host_of(base):
    return re.escape(base.replace("http://", ""))


def test_token_endpoint_503_every_time(s2masks_provider, pc_double, signed_assets, tmp_path):
    signed_assets.setenv("PC_SDK_SAS_URL", pc_double.sas_url)
    pc_double.inject("/api/sas/v1/token", "status", times=10 ** 6, status=503, retry_after="2")
    message, elapsed = run_workflow(pc_double, tmp_path)
    assert re.search(rf"token endpoint \({host_of(pc_double.base)}\): GET .* failed after 4 attempts: HTTP 503",
                     message)
    assert "pauses of 2, 2, 4 s" in message  # Retry-After: 2 honoured where it is longer than the pause
    assert elapsed >= 8
    assert len(pc_double.requests_to("/api/sas/v1/token")) == 4  # one request for all bands, not one each


def test_token_endpoint_refuses_connections(s2masks_provider, pc_double, signed_assets, tmp_path):
    port = closed_port()
    signed_assets.setenv("PC_SDK_SAS_URL", f"http://127.0.0.1:{port}/api/sas/v1/token")
    message, _ = run_workflow(pc_double, tmp_path)
    assert re.search(rf"token endpoint \(127\.0\.0\.1:{port}\): .* failed after 4 attempts: could not connect "
                     r"\(connection refused\)", message)


def test_token_endpoint_never_answers(s2masks_provider, pc_double, signed_assets, silent_server, tmp_path):
    signed_assets.setenv("PC_SDK_SAS_URL", silent_server.base + "/api/sas/v1/token")
    message, elapsed = run_workflow(pc_double, tmp_path)
    assert re.search(rf"token endpoint \({host_of(silent_server.base)}\): .* failed after 4 attempts: no answer "
                     r"within the 10 s timeout", message)
    assert 40 <= elapsed
    assert silent_server.accepted == 4  # the bands waited for one request's attempts


def test_stac_api_never_answers(s2masks_provider, pc_double, silent_server, tmp_path):
    """The workflow's STAC search is bounded by DL_TIMEOUT too."""
    message, elapsed = run_workflow(pc_double, tmp_path, STAC_URL=silent_server.base + "/api/stac/v1")
    assert re.search(rf"The STAC API \({host_of(silent_server.base)}\): GET .* failed after 4 attempts: no answer "
                     r"within the 10 s timeout", message)
    assert 40 <= elapsed


def test_cog_host_never_answers(s2masks_provider, pc_double, silent_server, tmp_path):
    pc_double.blob_base = silent_server.base + "/blob"
    message, _ = run_workflow(pc_double, tmp_path)
    assert re.search(rf"Band \w+ of .*: no answer within dl_timeout.*\(http://{host_of(silent_server.base)}/blob/",
                     message)
