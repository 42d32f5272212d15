"""Proxies: built in one place (algorithms/network.py) from QGIS's settings or the environment, and
applied by core/ to requests (STAC search, token endpoint) and to GDAL (COG reads) alike.

A counting HTTP proxy on loopback forwards every plain-HTTP request to the Planetary Computer
double; a run passes the test when the double saw no request that did not come through it.
"""

import http.client
import subprocess
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from conftest import polygon
from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsSettings

from s2masks.algorithms import network
from s2masks.core import cogread, search, signing

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the T29UNU fixture scene
PROXY_KEYS = ("proxyEnabled", "proxyType", "proxyHost", "proxyPort", "proxyUser", "proxyPassword",
              "proxyExcludedUrls", "noProxyUrls", "authcfg")
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


class CountingProxy:
    """A forward HTTP proxy for plain-HTTP requests (absolute URIs), counting what it forwards."""

    def __init__(self):
        self.requests = []  # (method, absolute URL, headers)
        self._lock = threading.Lock()
        self._httpd = None

    def start(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, dict(self.headers)))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "proxy-authorization", "connection")}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""),
                                     body=body, headers=headers)
                    reply = upstream.getresponse()
                    payload = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                length = reply.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _forward

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def paths(self):
        return [urlsplit(url).path for _, url, _ in self.requests]


@pytest.fixture
def counting_proxy():
    proxy = CountingProxy().start()
    yield proxy
    proxy.stop()


@pytest.fixture
def clean_environment(monkeypatch):
    for name in PROXY_VARIABLES + ("PC_SDK_SAS_URL", "PC_SDK_SUBSCRIPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    signing.clear_token_cache()
    yield monkeypatch
    signing.clear_token_cache()


@pytest.fixture
def qgis_proxy_settings(qgis_app):
    """QGIS's proxy settings ('proxy/...'), restored afterwards."""
    settings = QgsSettings()
    saved = {key: settings.value(f"proxy/{key}") for key in PROXY_KEYS if settings.contains(f"proxy/{key}")}
    for key in PROXY_KEYS:
        settings.remove(f"proxy/{key}")
    yield settings
    for key in PROXY_KEYS:
        settings.remove(f"proxy/{key}")
    for key, value in saved.items():
        settings.setValue(f"proxy/{key}", value)


def use_qgis_proxy(settings, proxy_url, **extra):
    parts = urlsplit(proxy_url)
    settings.setValue("proxy/proxyEnabled", True)
    settings.setValue("proxy/proxyType", "HttpProxy")
    settings.setValue("proxy/proxyHost", parts.hostname)
    settings.setValue("proxy/proxyPort", str(parts.port))
    for key, value in extra.items():
        settings.setValue(f"proxy/{key}", value)


# -- where the settings come from --------------------------------------------------------------

@pytest.mark.parametrize("environ, http, https, no_proxy", [
    ({"HTTP_PROXY": "http://upper:8080"}, "http://upper:8080", None, ()),
    ({"http_proxy": "lower:3128", "HTTP_PROXY": "http://upper:8080"}, "http://lower:3128", None, ()),
    ({"HTTPS_PROXY": "http://secure:3128", "NO_PROXY": "localhost, .example.org,10.0.0.0/8"},
     None, "http://secure:3128", ("localhost", ".example.org", "10.0.0.0/8")),
    ({"ALL_PROXY": "socks5h://socks:1080", "https_proxy": "http://s:1"}, "socks5h://socks:1080", "http://s:1", ()),
    ({"HTTP_PROXY": "http://injected:1", "REQUEST_METHOD": "GET"}, None, None, ()),  # httpoxy
])
def test_proxies_from_the_environment_in_either_case(environ, http, https, no_proxy):
    proxies = search.proxies_from_environment(environ)
    assert (proxies.http, proxies.https, proxies.no_proxy) == (http, https, no_proxy)


@pytest.mark.parametrize("host, port, entries, bypass", [
    ("127.0.0.1", 80, ("127.0.0.1",), True),
    ("blob.example.org", None, (".example.org",), True),
    ("example.org", None, ("example.org",), True),
    ("badexample.org", None, ("example.org",), False),
    ("10.1.2.3", None, ("10.0.0.0/8",), True),
    ("anything", None, ("*",), True),
    ("127.0.0.1", 8080, ("127.0.0.1:9000",), False),
    ("127.0.0.1", 9000, ("127.0.0.1:9000",), True),
])
def test_no_proxy_rules(host, port, entries, bypass):
    assert search.bypasses_proxy(host, port, entries) is bypass


def test_credentials_never_in_descriptions_and_split_for_gdal():
    proxies = search.Proxies(http="http://me:s%40cret@proxy:3128", https="http://me:s%40cret@proxy:3128",
                             no_proxy=("internal",), source="QGIS proxy settings")
    assert "cret" not in proxies.describe() and "http://proxy:3128" in proxies.describe()
    options = cogread.gdal_proxy_options(proxies)
    assert options == {"GDAL_HTTP_PROXY": "http://proxy:3128", "GDAL_HTTPS_PROXY": "http://proxy:3128",
                       "GDAL_HTTP_PROXYUSERPWD": "me:s@cret"}
    # GDAL goes direct when every file is on a host reached without the proxy
    assert cogread.gdal_proxy_options(proxies, ["http://internal/a.tif"]) == {"GDAL_HTTP_PROXY": "",
                                                                              "GDAL_HTTPS_PROXY": ""}
    assert cogread.gdal_proxy_options(proxies, ["http://internal/a.tif", "http://other/b.tif"]) == options
    # an empty proxy for GDAL means none, even if QGIS or the environment set one
    assert cogread.gdal_proxy_options(search.Proxies()) == {"GDAL_HTTP_PROXY": "", "GDAL_HTTPS_PROXY": ""}


def test_qgis_proxy_settings(qgis_proxy_settings, clean_environment):
    settings = qgis_proxy_settings
    clean_environment.setenv("NO_PROXY", "from-env.example")
    use_qgis_proxy(settings, "http://proxy.example:3128", proxyUser="me", proxyPassword="p@ss word",
                   noProxyUrls=["http://intranet.example/wms"], proxyExcludedUrls="https://a.example|https://b.example")
    proxies = network.proxies()
    assert proxies.http == proxies.https == "http://me:p%40ss%20word@proxy.example:3128"
    assert proxies.no_proxy == ("intranet.example", "a.example", "b.example", "from-env.example")
    assert proxies.source == "QGIS proxy settings"
    settings.setValue("proxy/proxyType", "Socks5Proxy")
    assert network.proxies().http.startswith("socks5h://")


def test_qgis_default_or_disabled_proxy_means_the_environment(qgis_proxy_settings, clean_environment):
    clean_environment.setenv("HTTP_PROXY", "http://upper.example:8080")
    assert network.proxies().http == "http://upper.example:8080"
    use_qgis_proxy(qgis_proxy_settings, "http://proxy.example:3128")
    qgis_proxy_settings.setValue("proxy/proxyType", "DefaultProxy")  # the system's: the environment on Linux
    assert network.proxies().http == "http://upper.example:8080"
    qgis_proxy_settings.setValue("proxy/proxyEnabled", False)
    assert network.proxies().source == "environment"


# -- core/ applies them ---------------------------------------------------------------------

def test_search_goes_through_the_proxy(pc_double, counting_proxy, clean_environment):
    proxies = search.Proxies(http=counting_proxy.url)
    items = search.search_items(polygon(90, 80, 100, 83), date(2024, 4, 1), date(2024, 4, 30), url=pc_double.url,
                                proxies=proxies, page_size=2)
    assert len(items) == 4
    assert len(counting_proxy.requests) == len(pc_double.requests) >= 4  # landing, collection, 2 pages
    assert all(url.startswith(pc_double.base) for _, url, _ in counting_proxy.requests)


def test_explicit_proxies_replace_the_environment(pc_double, counting_proxy, clean_environment):
    clean_environment.setenv("http_proxy", counting_proxy.url)
    search.search_items(polygon(90, 80, 100, 83), date(2024, 4, 1), date(2024, 4, 30), url=pc_double.url,
                        proxies=search.Proxies(http=counting_proxy.url, no_proxy=("127.0.0.1",)))
    assert counting_proxy.requests == [] and pc_double.requests


def test_unreachable_proxy_is_named(pc_double, clean_environment):
    from pc_server import closed_port

    proxies = search.Proxies(http=f"http://user:secret@127.0.0.1:{closed_port()}")
    with pytest.raises(search.SearchError, match=r"could not go through the proxy http://127\.0\.0\.1:\d+") as caught:
        search.search_items(polygon(90, 80, 100, 83), date(2024, 4, 1), date(2024, 4, 30), url=pc_double.url,
                            proxies=proxies, attempts=2, backoff=0.01)
    assert "secret" not in str(caught.value)


# -- a whole run: STAC search, token requests and COG reads --------------------------------

def run_preprocess(double, tmp_path, monkeypatch, **extra):
    """Preprocess Sentinel-2 (list, select, download) with the double's asset hrefs treated as
    Azure Blob Storage, so that every band is signed at the double's token endpoint."""
    import processing

    monkeypatch.setattr(signing, "BLOB_HOST_SUFFIXES", signing.BLOB_HOST_SUFFIXES + ("127.0.0.1",))
    monkeypatch.setenv("PC_SDK_SAS_URL", double.sas_url)
    parameters = {"EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": double.url,
                  "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT_FOLDER": str(tmp_path / "out"),
                  "FOOTPRINTS": "TEMPORARY_OUTPUT", "DL_TIMEOUT": 30}
    parameters.update(extra)
    return processing.run("s2masks:preprocesss2", parameters, context=QgsProcessingContext(),
                          feedback=QgsProcessingFeedback())


def assert_everything_went_through(proxy, double):
    paths = proxy.paths()
    assert any(p.startswith("/api/stac/v1/search") for p in paths)  # STAC search
    assert any(p.startswith("/api/sas/v1/token/") for p in paths)  # token endpoint
    assert any(p.startswith("/blob/") for p in paths)  # COG reads (GDAL)
    direct = len(double.requests) - len(proxy.requests)
    assert direct == 0, f"{direct} requests reached the double without the proxy"


def test_run_with_qgis_proxy_settings(s2masks_provider, pc_double, counting_proxy, qgis_proxy_settings,
                                      clean_environment, tmp_path):
    use_qgis_proxy(qgis_proxy_settings, counting_proxy.url)
    result = run_preprocess(pc_double, tmp_path, clean_environment)
    assert result["COUNT"] == 1
    assert_everything_went_through(counting_proxy, pc_double)


def test_run_with_upper_case_http_proxy(s2masks_provider, pc_double, counting_proxy, qgis_proxy_settings,
                                        clean_environment, tmp_path):
    """HTTP_PROXY in upper case, which curl (GDAL) ignores by itself, reaches the COG reads too."""
    clean_environment.setenv("HTTP_PROXY", counting_proxy.url)
    result = run_preprocess(pc_double, tmp_path, clean_environment)
    assert result["COUNT"] == 1
    assert_everything_went_through(counting_proxy, pc_double)


def test_run_with_no_proxy_for_the_host(s2masks_provider, pc_double, counting_proxy, qgis_proxy_settings,
                                        clean_environment, tmp_path):
    use_qgis_proxy(qgis_proxy_settings, counting_proxy.url, noProxyUrls=[pc_double.base])
    result = run_preprocess(pc_double, tmp_path, clean_environment)
    assert result["COUNT"] == 1
    assert counting_proxy.requests == []
    assert any(r[1].startswith("/blob/") for r in pc_double.requests)


@pytest.mark.qgis_process
def test_qgis_process_run_with_upper_case_http_proxy(enabled_qgis_process_env, pc_double, counting_proxy, tmp_path):
    env = {k: v for k, v in enabled_qgis_process_env.items() if k not in PROXY_VARIABLES}
    env["HTTP_PROXY"] = counting_proxy.url
    result = subprocess.run(
        ["/usr/bin/qgis_process.bin", "run", "s2masks:preprocesss2", "--", f"EXTENT={AREA}",
         "START_DATE=2022-10-01", "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}",
         f"CACHE_FOLDER={tmp_path / 'cache'}", f"OUTPUT_FOLDER={tmp_path / 'out'}",
         f"FOOTPRINTS={tmp_path / 'selected.gpkg'}"],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = counting_proxy.paths()
    assert any(p.startswith("/api/stac/v1/search") for p in paths) and any(p.startswith("/blob/") for p in paths)
    assert len(pc_double.requests) == len(counting_proxy.requests)
