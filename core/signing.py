"""Sign Planetary Computer asset hrefs just before they are read.

The listing stores unsigned hrefs: a SAS token expires within the hour, so a footprint
layer saved today must still be usable tomorrow.

Tokens come from Planetary Computer's SAS token endpoint, with the same request and reply as the
planetary-computer package (GET <endpoint>/<account>/<container> -> {"token": ..., "msft:expiry":
...}, the subscription key in Ocp-Apim-Subscription-Key), but through the plugin's own bounded
request (core/search.py `fetch`): a timeout per attempt, few attempts, pauses honouring
Retry-After, one deadline, the proxies given. The endpoint and the key default to the
PC_SDK_SAS_URL and PC_SDK_SUBSCRIPTION_KEY settings that planetary-computer reads (environment,
then ~/.planetarycomputer/settings.env). Tokens are cached per container until shortly before
they expire; threads that need the same token wait for one request instead of each sending theirs,
and share its failure.
"""

import copy
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from .errors import SearchError
from .search import (
    SUBSCRIPTION_KEY_HEADER,
    HTTPStatusError,
    RequestPolicy,
    fetch,
    pc_setting,
    subscription_key,
)

DEFAULT_SAS_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
# Hosts whose assets need a SAS token: Azure Blob Storage (planetary-computer's rule).
BLOB_HOST_SUFFIXES = (".blob.core.windows.net",)
PUBLIC_BLOB_HOSTS = ("ai4edatasetspublicassets.blob.core.windows.net",)  # thumbnails: never signed
RENEW_BEFORE = timedelta(minutes=2)  # a token closer than this to its expiry is renewed


@dataclass(frozen=True)
class TokenEndpoint:
    """Where and how tokens are requested: the endpoint URL (None: PC_SDK_SAS_URL, else the public
    one) and the RequestPolicy of the token request (timeout, attempts, pauses, proxies)."""

    url: Optional[str] = None
    policy: RequestPolicy = field(default_factory=RequestPolicy)

    @property
    def resolved_url(self):
        return sas_endpoint(self.url)


def sas_endpoint(explicit=None):
    """The token endpoint: `explicit`, else PC_SDK_SAS_URL, else Planetary Computer's."""
    return (explicit or pc_setting("PC_SDK_SAS_URL") or DEFAULT_SAS_URL).rstrip("/")


def _as_endpoint(endpoint):
    if isinstance(endpoint, TokenEndpoint):
        return endpoint
    return TokenEndpoint(url=endpoint)


def blob_container(href):
    """(account, container) of an asset href that needs a SAS token, else None (other hosts,
    public assets, hrefs that carry a token already)."""
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    if host in PUBLIC_BLOB_HOSTS or not any(host.endswith(suffix) for suffix in BLOB_HOST_SUFFIXES):
        return None
    if {"st", "se", "sp"} & set(parse_qs(parts.query)):
        return None  # already signed
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 2:
        return None
    return host.split(".")[0], segments[0]


def is_signable(href):
    return blob_container(href) is not None


@dataclass
class _Token:
    token: str
    expiry: datetime
    fetched: float  # time.monotonic() when it arrived

    def fresh(self):
        return self.expiry - datetime.now(timezone.utc) > RENEW_BEFORE


class _TokenCache:
    """Tokens per (token URL, key); one request at a time per entry, its failure shared with the
    threads that waited for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._locks = {}
        self._tokens = {}
        self._failures = {}

    def clear(self):
        with self._lock:
            self._tokens.clear()
            self._failures.clear()

    def get(self, url, key, request, renew=False):
        cache_key = (url, hashlib.sha256((key or "").encode()).hexdigest())
        asked = time.monotonic()
        with self._lock:
            entry_lock = self._locks.setdefault(cache_key, threading.Lock())
        with entry_lock:
            token = self._tokens.get(cache_key)
            # after a refused read, a token that arrived while this thread waited is already new
            if token is not None and token.fresh() and (not renew or token.fetched >= asked):
                return token.token
            failure = self._failures.get(cache_key)
            if failure is not None and failure[0] >= asked:
                raise SearchError(str(failure[1]))  # another thread has just tried and failed
            try:
                token = request()
            except SearchError as err:
                self._failures[cache_key] = (time.monotonic(), err)
                raise
            self._failures.pop(cache_key, None)
            self._tokens[cache_key] = token
            return token.token


TOKEN_CACHE = _TokenCache()


def clear_token_cache():
    TOKEN_CACHE.clear()


def get_token(account, container, pc_key=None, endpoint=None, fresh=False, should_cancel=None):
    """A SAS token for one container (cached until shortly before it expires)."""
    endpoint = _as_endpoint(endpoint)
    key = subscription_key(pc_key)
    url = f"{endpoint.resolved_url}/{account}/{container}"
    return TOKEN_CACHE.get(url, key, lambda: _request_token(url, key, endpoint.policy, should_cancel), renew=fresh)


def _request_token(url, key, policy, should_cancel):
    headers = {SUBSCRIPTION_KEY_HEADER: key} if key else None
    try:
        _, reply = fetch("GET", url, policy, headers=headers, label="The Planetary Computer token endpoint",
                         should_cancel=should_cancel,
                         hint="Check your network and proxy settings (and PC_SDK_SAS_URL if you set it), raise "
                              "the download timeout, or try again later.")
    except HTTPStatusError as err:
        hint = (" Check the Planetary Computer subscription key (the AUTHCFG authentication configuration, or "
                "PC_SDK_SUBSCRIPTION_KEY)." if err.status in (401, 403) else "")
        raise SearchError(f"Planetary Computer refused an access token (HTTP {err.status}) at {url}.{hint}") from err
    token = reply.get("token") if isinstance(reply, dict) else None
    if not token:
        raise SearchError(f"The token endpoint {url} answered without a token; is PC_SDK_SAS_URL a Planetary "
                          "Computer SAS token endpoint?")
    return _Token(token, _expiry(reply.get("msft:expiry")), time.monotonic())


def _expiry(text):
    """The token's expiry; an unreadable one counts as 'soon' (a few minutes from now)."""
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc) + RENEW_BEFORE + timedelta(minutes=3)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def sign_href(href, pc_key=None, sas_url=None, fresh=False, should_cancel=None):
    """One signed href (unchanged when it needs no token).

    `sas_url` is the token endpoint: a URL, or a TokenEndpoint (URL and request policy). `fresh`
    asks for a new token (after HTTP 403 on an expired one), unless another thread already got one.
    """
    container = blob_container(href)
    if container is None:
        return href
    token = get_token(*container, pc_key=pc_key, endpoint=sas_url, fresh=fresh, should_cancel=should_cancel)
    return f"{href}{'&' if '?' in href else '?'}{token}"


def sign_item(item, pc_key=None, sas_url=None, should_cancel=None):
    """A copy of the STAC item dict with every Azure Blob asset href signed."""
    signed = copy.deepcopy(item)
    for asset in signed.get("assets", {}).values():
        if isinstance(asset, dict) and asset.get("href"):
            asset["href"] = sign_href(asset["href"], pc_key, sas_url, should_cancel=should_cancel)
    return signed
