"""The network settings of a run, read from QGIS and handed to core/ as plain values.

- Proxies: QGIS's proxy settings (Settings > Options > Network: 'proxy/...' in QgsSettings,
  credentials inline or from the authentication configuration 'proxy/authcfg', hosts excluded
  from the proxy), else the HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY environment variables
  in lower or upper case. core/ applies them to requests (STAC search, token endpoint, a STAC item
  by URL) and to GDAL (COG reads) alike, so the two never disagree.
- The Planetary Computer subscription key: from an authentication configuration of QGIS's
  Authentication Manager (method 'API Header' with the header Ocp-Apim-Subscription-Key, QGIS 3.24
  and later; or 'Basic' with the key as password, for QGIS 3.22), never from a plain parameter
  that QGIS would print.
"""

from urllib.parse import quote, urlsplit

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingException, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

from ..core import search

# QGIS proxy types that carry HTTP (QgsNetworkAccessManager::setupDefaultProxyAndCache).
_HTTP_PROXY_TYPES = {"HttpProxy": "http", "HttpCachingProxy": "http", "Socks5Proxy": "socks5h"}
API_HEADER_METHOD = "APIHeader"
BASIC_METHOD = "Basic"


def _tr(text):
    return QCoreApplication.translate("S2Masks", text)


def proxies(settings=None, environ=None):
    """The proxies for this run: QGIS's when it names an HTTP or SOCKS5 proxy, else the environment's."""
    settings = settings or QgsSettings()
    from_environment = search.proxies_from_environment(environ)
    if not _bool(settings.value("proxy/proxyEnabled", False)):
        return from_environment
    kind = str(settings.value("proxy/proxyType", "") or "")
    host = str(settings.value("proxy/proxyHost", "") or "").strip()
    scheme = _HTTP_PROXY_TYPES.get(kind)
    if scheme is None or not host:
        # DefaultProxy is the system's proxy: on Linux the environment variables
        return from_environment
    user = str(settings.value("proxy/proxyUser", "") or "")
    password = str(settings.value("proxy/proxyPassword", "") or "")
    authcfg = str(settings.value("proxy/authcfg", "") or "")
    if authcfg:
        user, password = _basic_credentials(authcfg, user, password)
    port = str(settings.value("proxy/proxyPort", "") or "").strip()
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    url = f"{scheme}://{credentials}{host}" + (f":{port}" if port and port != "0" else "")
    excluded = _hosts(settings.value("proxy/noProxyUrls", [])) + _hosts(settings.value("proxy/proxyExcludedUrls", []))
    no_proxy = tuple(dict.fromkeys(excluded + from_environment.no_proxy))
    return search.Proxies(http=url, https=url, no_proxy=no_proxy, source="QGIS proxy settings")


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _hosts(value):
    """Host names from QGIS's URL lists ('|'-separated text or a list of URL prefixes)."""
    if not value:
        return ()
    entries = value if isinstance(value, (list, tuple)) else [value]
    hosts = []
    for entry in entries:
        for prefix in str(entry).split("|"):
            prefix = prefix.strip()
            if not prefix:
                continue
            host = urlsplit(prefix).hostname if "://" in prefix else prefix.split("/")[0]
            if host:
                hosts.append(host)
    return tuple(hosts)


def _basic_credentials(authcfg, user, password):
    """User and password of the proxy's authentication configuration (method Basic)."""
    method, values = _load_config(authcfg, _tr("the proxy"))
    if method != BASIC_METHOD:
        return user, password
    return values.get("username", user), values.get("password", password)


def _load_config(authcfg, purpose):
    """(method, config map) of an authentication configuration, decrypted."""
    manager = QgsApplication.authManager()
    if manager is None or manager.isDisabled():
        raise QgsProcessingException(_tr(
            "QGIS's authentication system is disabled, so the authentication configuration {} for {} cannot be "
            "read. Check the authentication database (Settings > Options > Authentication).").format(authcfg, purpose))
    config = QgsAuthMethodConfig()
    result = manager.loadAuthenticationConfig(authcfg, config, True)
    if isinstance(result, tuple):  # newer bindings return (ok, config)
        ok, config = result[0], result[-1]
    else:
        ok = result
    if not ok or not config.isValid():
        raise QgsProcessingException(_tr(
            "Could not read the authentication configuration {} for {}: check its id in Settings > Options > "
            "Authentication and that the master password is set (QGIS asks for it; qgis_process reads it from "
            "the file named by QGIS_AUTH_PASSWORD_FILE).").format(authcfg, purpose))
    return config.method(), dict(config.configMap())


def subscription_key_from_auth_config(authcfg):
    """The Planetary Computer subscription key held by an authentication configuration."""
    purpose = _tr("the Planetary Computer subscription key")
    method, values = _load_config(authcfg, purpose)
    if method == API_HEADER_METHOD:
        for header, value in values.items():
            if header.strip().lower() == search.SUBSCRIPTION_KEY_HEADER.lower() and str(value).strip():
                return str(value).strip()
        if len(values) == 1 and str(next(iter(values.values()))).strip():
            return str(next(iter(values.values()))).strip()
        raise QgsProcessingException(_tr(
            "The authentication configuration {} (API Header) has no header {}. Add that header with your "
            "Planetary Computer subscription key as its value.").format(authcfg, search.SUBSCRIPTION_KEY_HEADER))
    if method == BASIC_METHOD:
        key = str(values.get("password", "") or "").strip()
        if key:
            return key
        raise QgsProcessingException(_tr(
            "The authentication configuration {} (Basic) has an empty password; put the Planetary Computer "
            "subscription key in the password field.").format(authcfg))
    raise QgsProcessingException(_tr(
        "The authentication configuration {} uses the method {}; the subscription key needs 'API Header' (header "
        "{}) or, on QGIS 3.22, 'Basic' (the key as password).").format(authcfg, method, search.SUBSCRIPTION_KEY_HEADER))
