"""Search Sentinel-2 L2A items on a STAC API (Planetary Computer by default).

Differences from FarmVibes' list_sentinel2_products_pc, on purpose:
- the query uses the area itself (`intersects`), not its bounding box;
- an optional maximum `eo:cloud_cover` skips scenes nobody wants;
- every request has a connect and read timeout and a bound on the whole reply, and is retried a
  few times with doubling pauses (honouring Retry-After, capped) on 429/5xx, lost connections,
  timeouts and truncated replies, within one deadline; the final error names the URL, its host
  and what was tried;
- requests go through the proxies it is given (QGIS's settings or the environment, see
  algorithms/network.py);
- nothing is downloaded per item (the absolute orbit comes from `s2:datatake_id`).

The bounded request (`fetch`, `RequestPolicy`, `Proxies`) lives here and is shared by every
request the plugin makes with `requests`: the token endpoint (core/signing.py) and a STAC item
fetched by URL use it too.
"""

import copy
import email.utils
import functools
import ipaddress
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from .errors import Cancelled, InputError, SearchError

PLANETARY_COMPUTER_STAC = "https://planetarycomputer.microsoft.com/api/stac/v1"
SENTINEL2_L2A = "sentinel-2-l2a"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The first Sentinel-2 L2A products on Planetary Computer date from mid-2015.
SENTINEL2_START = date(2015, 6, 23)


# -- Bounded HTTP requests, shared by every network step ----------------------------------
# One policy for every request the plugin makes with `requests` (STAC pages, the SAS token
# endpoint, a STAC item by URL); core/cogread.py gives GDAL's COG reads the same values. Each
# attempt has a connect and a read timeout and a bound on the whole reply; attempts are few and
# spaced by doubling pauses that honour Retry-After up to RETRY_AFTER_CAP; and the whole request
# gives up within RequestPolicy.deadline (about attempts x timeout plus the pauses), with a message
# naming the URL, its host and what was tried.

RETRY_AFTER_CAP = 30.0  # s: the longest pause a Retry-After header can ask for
SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
PLANETARY_COMPUTER_HOSTS = ("planetarycomputer.microsoft.com",)
_PC_SETTINGS_FILE = "~/.planetarycomputer/settings.env"  # read by the planetary-computer package too


class NetworkError(SearchError):
    """A request failed after every attempt, or within its deadline; the message says what was tried."""


class HTTPStatusError(SearchError):
    """The server answered with a status that retrying cannot change (4xx other than 429)."""

    def __init__(self, message, status, url):
        super().__init__(message)
        self.status = status
        self.url = url


@dataclass(frozen=True)
class Proxies:
    """The proxy servers to use, as plain values (algorithms/network.py builds them from QGIS's
    proxy settings and the HTTP(S)_PROXY / NO_PROXY environment variables, in either case).

    `http` and `https` are proxy URLs (`http://user:password@host:port`, `socks5h://...`) or None
    for a direct connection; `no_proxy` lists hosts reached directly, as NO_PROXY does (a name
    matches itself and its subdomains, `*` matches every host, an address range as 10.0.0.0/8).
    """

    http: Optional[str] = None
    https: Optional[str] = None
    no_proxy: Tuple[str, ...] = ()
    source: str = ""

    def for_url(self, url):
        """The proxy URL for one request URL, or None (direct)."""
        parts = urlsplit(url)
        if bypasses_proxy(parts.hostname or "", parts.port, self.no_proxy):
            return None
        return self.https if parts.scheme == "https" else self.http

    def requests_proxies(self, url):
        proxy = self.for_url(url)
        return {"http": proxy, "https": proxy} if proxy else {}

    def describe(self):
        """For the log: the proxies without their credentials."""
        used = sorted({hide_credentials(p) for p in (self.http, self.https) if p})
        if not used:
            return "no proxy" + (f" ({self.source})" if self.source else "")
        text = ", ".join(used) + (f" ({self.source})" if self.source else "")
        return text + (f"; direct to {', '.join(self.no_proxy)}" if self.no_proxy else "")


def hide_credentials(url):
    """A URL without the user and password it may carry (proxy URLs do)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def normalise_proxy_url(value):
    """`host:port` -> `http://host:port`; empty -> None."""
    value = (value or "").strip()
    if not value:
        return None
    return value if "://" in value else "http://" + value


def split_no_proxy(value):
    return tuple(entry.strip() for entry in (value or "").replace(";", ",").split(",") if entry.strip())


def proxies_from_environment(environ=None):
    """HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, in lower or upper case (lower case wins,
    as in curl and Python's urllib). Upper-case HTTP_PROXY is ignored in a CGI process (httpoxy)."""
    environ = os.environ if environ is None else environ
    cgi = "REQUEST_METHOD" in environ

    def value(name):
        for key in (name.lower(), name.upper()):
            if key == "HTTP_PROXY" and cgi:
                continue
            if environ.get(key, "").strip():
                return environ[key].strip()
        return None

    fallback = value("all_proxy")
    found = Proxies(http=normalise_proxy_url(value("http_proxy") or fallback),
                    https=normalise_proxy_url(value("https_proxy") or fallback),
                    no_proxy=split_no_proxy(value("no_proxy")), source="environment")
    if environ is os.environ and not (found.http or found.https) and sys.platform in ("win32", "darwin"):
        # Windows and macOS keep the system's proxy in their own settings (the registry, System
        # Configuration), which Python's urllib reads; requests did too, curl (GDAL) does not.
        import urllib.request

        system = urllib.request.getproxies()
        if system.get("http") or system.get("https"):
            return Proxies(http=normalise_proxy_url(system.get("http")), https=normalise_proxy_url(system.get("https")),
                           no_proxy=found.no_proxy, source="system settings")
    return found


def bypasses_proxy(host, port, no_proxy):
    """Whether `host` is reached directly under the NO_PROXY rules of curl and requests."""
    host = host.lower().strip("[]")
    for entry in no_proxy:
        entry = entry.strip().lower()
        if entry == "*":
            return True
        entry_port = None
        if entry.count(":") == 1 and not entry.startswith("["):  # host:port (not an IPv6 address)
            entry, _, entry_port = entry.partition(":")
        entry = entry.strip("[]").lstrip(".")
        if entry_port and port is not None and entry_port != str(port):
            continue
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
            continue
        except ValueError:
            pass
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def subscription_key(explicit=None, environ=None):
    """The Planetary Computer subscription key: `explicit`, else PC_SDK_SUBSCRIPTION_KEY from the
    environment or ~/.planetarycomputer/settings.env (where the planetary-computer package reads it)."""
    if explicit:
        return explicit
    return pc_setting("PC_SDK_SUBSCRIPTION_KEY", environ)


def pc_setting(name, environ=None):
    """A PC_SDK_* setting from the environment, else from ~/.planetarycomputer/settings.env."""
    environ = os.environ if environ is None else environ
    if environ.get(name, "").strip():
        return environ[name].strip()
    path = os.path.expanduser(_PC_SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            value = value.split(" #", 1)[0].strip().strip("'\"")
            return value or None
    return None


def is_planetary_computer(url):
    host = (urlsplit(url).hostname or "").lower()
    return any(host == known or host.endswith("." + known) for known in PLANETARY_COMPUTER_HOSTS)


@dataclass(frozen=True)
class RequestPolicy:
    """Timeout per attempt (connect and read, and the whole reply), attempts, first pause
    (doubling), the cap on Retry-After, and the proxies (None: requests' own environment rules)."""

    timeout: float = 30.0
    attempts: int = 4
    backoff: float = 1.0
    retry_after_cap: float = RETRY_AFTER_CAP
    proxies: Optional[Proxies] = None

    @property
    def pauses(self):
        return [self.backoff * 2 ** index for index in range(max(1, int(self.attempts)) - 1)]

    @property
    def deadline(self):
        """Seconds after which a request gives up, whatever the server does."""
        return max(1, int(self.attempts)) * self.timeout + sum(self.pauses) + 1.0


def make_session(policy):
    """A requests.Session for `policy`: no urllib3 retries (the loop in `fetch` retries), and with
    explicit proxies, the environment's are not consulted (its CA bundle still is)."""
    import requests

    session = requests.Session()
    configure_session(session, policy)
    return session


def configure_session(session, policy):
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if policy.proxies is not None:
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return session


class _ReplyTooSlow(Exception):
    pass


def fetch(method, url, policy, *, session=None, headers=None, json_body=None, params=None, label="",
          should_cancel=None, hint="Check the URL, your network and proxy settings, or try again later."):
    """One request under `policy`: returns (text, parsed JSON) of a 2xx reply.

    Retries HTTP 429/5xx, timeouts, refused or dropped connections and replies that are cut short
    or not JSON. Raises HTTPStatusError for other statuses, NetworkError when every attempt failed
    or the deadline passed, Cancelled when `should_cancel()` turns true.
    """
    import requests

    should_cancel = should_cancel or (lambda: False)
    own_session = session is None
    session = session or make_session(policy)
    attempts = max(1, int(policy.attempts))
    started = time.monotonic()
    deadline = started + policy.deadline
    proxy = policy.proxies.for_url(url) if policy.proxies is not None else None
    problems, pauses, gave_up = [], [], ""
    try:
        for attempt in range(1, attempts + 1):
            if should_cancel():
                raise Cancelled(f"{label or 'Request'} cancelled.")
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            per_try = min(policy.timeout, remaining)
            retry_after = None
            try:
                kwargs = {}
                if policy.proxies is not None:
                    kwargs["proxies"] = policy.proxies.requests_proxies(url)

                def attempt_request(per_try=per_try, kwargs=kwargs):
                    reply = session.request(method, url, headers=headers, json=json_body, params=params,
                                            timeout=(per_try, per_try), stream=True, **kwargs)
                    try:
                        return reply, _read_body(reply, time.monotonic() + per_try)
                    finally:
                        reply.close()

                response, content = call_cancellable(attempt_request, should_cancel, label)
            except _ReplyTooSlow:
                problem = f"the reply did not arrive in full within the {policy.timeout:g} s timeout"
            except requests.Timeout:
                problem = f"no answer within the {policy.timeout:g} s timeout"
            except requests.exceptions.ChunkedEncodingError:
                problem = "the reply was cut short: the connection closed before its end"
            except requests.exceptions.ProxyError as err:
                problem = f"could not go through the proxy {hide_credentials(proxy or '?')} ({_root_cause(err)})"
            except requests.ConnectionError as err:
                cause = _root_cause(err)
                if "timed out" in cause.lower():
                    problem = f"no answer within the {policy.timeout:g} s timeout"
                else:
                    problem = f"could not connect ({cause})"
            except requests.RequestException as err:
                problem = f"{type(err).__name__}: {_root_cause(err)}"
            else:
                status = response.status_code
                text = content.decode(response.encoding or "utf-8", errors="replace")
                if 200 <= status < 300:
                    try:
                        return text, json.loads(text)
                    except ValueError as err:
                        problem = f"the reply was cut short or is not JSON ({err})"
                elif status in RETRY_STATUSES:
                    problem = f"HTTP {status}" + _body_excerpt(text)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                else:
                    raise HTTPStatusError(f"{method} {url} answered HTTP {status}{_body_excerpt(text)}", status, url)
            problems.append(problem)
            if attempt == attempts:
                break
            pause = policy.pauses[attempt - 1]
            asked = retry_after is not None and retry_after > pause
            if retry_after is not None:
                pause = max(pause, min(retry_after, policy.retry_after_cap))
            if time.monotonic() + pause >= deadline:
                gave_up = (f"; it asked to wait {retry_after:g} s (Retry-After), past the time limit" if asked
                           else "; the time limit was reached")
                break
            pauses.append(pause)
            _sleep(pause, should_cancel, label)
    finally:
        if own_session:
            session.close()
    raise NetworkError(_failure_message(method, url, policy, proxy, problems, pauses, gave_up,
                                        time.monotonic() - started, label, hint))


def call_cancellable(function, should_cancel, label="", poll=0.05):
    """function() in a daemon thread, waited for while checking should_cancel() every `poll` s:
    Cancel returns at once (Cancelled) and leaves the call to end by itself, which its own
    timeout bounds (a request blocked in the network cannot be interrupted otherwise)."""
    outcome = {}
    done = threading.Event()

    def run():
        try:
            outcome["value"] = function()
        except BaseException as err:  # handed to the caller
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=run, name="s2masks-request", daemon=True).start()
    while not done.wait(poll):
        if should_cancel():
            raise Cancelled(f"{label or 'Request'} cancelled.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _read_body(response, deadline):
    chunks = []
    for chunk in response.iter_content(64 * 1024):
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _ReplyTooSlow()
    return b"".join(chunks)


def _root_cause(err):
    """The innermost reason of a requests/urllib3 error, in words (refused, name not found...)."""
    seen = err
    for _ in range(6):
        inner = getattr(seen, "reason", None) or (seen.args[0] if getattr(seen, "args", None) else None)
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
        return "connection refused"
    if "Name or service not known" in str(seen) or "getaddrinfo failed" in str(seen) \
            or "nodename nor servname" in str(seen):
        return "host name not found"
    text = str(seen)
    return text[:300] if text else type(seen).__name__


def _body_excerpt(text):
    text = " ".join((text or "").split())
    return f" ({text[:200]})" if text else ""


def parse_retry_after(value):
    """Seconds to wait from a Retry-After header (a number of seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _failure_message(method, url, policy, proxy, problems, pauses, gave_up, elapsed, label, hint):
    host = urlsplit(url).netloc
    count = len(problems)
    if not problems:
        summary = "no attempt fitted in the time limit"
    else:
        summary = problems[-1]
        earlier = [p for p in dict.fromkeys(problems[:-1]) if p != summary]
        if count > 1 and not earlier:
            summary += " (every attempt)"
        elif earlier:
            summary += f" (before that: {'; '.join(earlier)})"
    tried = (f"{count} attempt{'s' if count != 1 else ''} in {elapsed:.0f} s, {policy.timeout:g} s timeout each"
             + (f", pauses of {', '.join(f'{p:g}' for p in pauses)} s" if pauses else "")
             + (f", through the proxy {hide_credentials(proxy)}" if proxy else ""))
    prefix = f"{label} ({host}): " if label else ""
    return (f"{prefix}{method} {url} failed after {count} attempt{'s' if count != 1 else ''}: {summary}{gave_up}. "
            f"Tried: {tried}. {hint}")


def _sleep(seconds, should_cancel, label=""):
    """Sleeps in small steps so Cancel stays responsive during a pause."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if should_cancel():
            raise Cancelled(f"{label or 'Request'} cancelled.")
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def validate_date_range(start, end, today=None):
    """Refuse reversed ranges and dates in the future, with the dates in the message."""
    today = today or datetime.now(timezone.utc).date()
    if end < start:
        raise InputError(f"The end date {end.isoformat()} is before the start date {start.isoformat()}. Swap them.")
    if start > today:
        raise InputError(
            f"The start date {start.isoformat()} is in the future (today is {today.isoformat()} UTC); "
            "there are no acquisitions yet. Choose dates up to today."
        )
    if end > today:
        raise InputError(
            f"The end date {end.isoformat()} is in the future (today is {today.isoformat()} UTC). "
            f"Set it to {today.isoformat()} or earlier."
        )
    if end < SENTINEL2_START:
        raise InputError(
            f"The range ends on {end.isoformat()}, before Sentinel-2 L2A data exists "
            f"({SENTINEL2_START.isoformat()}). Choose later dates."
        )


def stac_datetime(start, end):
    """Both whole days, inclusive, in UTC."""
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"


@functools.lru_cache(maxsize=None)
def retrying_stac_api_io_class():
    """RetryingStacApiIO, made on first use: its base class, StacApiIO, comes from pystac-client,
    which is imported only when a search runs (the plugin loads without it)."""
    from pystac_client.stac_api_io import StacApiIO

    return type("RetryingStacApiIO", (_RetryPolicy, StacApiIO),
                {"__module__": __name__, "__doc__": _RetryPolicy.__doc__})


def __getattr__(name):
    """`search.RetryingStacApiIO` still works; asking for it imports pystac-client."""
    if name == "RetryingStacApiIO":
        return retrying_stac_api_io_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _RetryPolicy:
    """StacApiIO whose every request goes through `fetch`: one RequestPolicy (timeouts, attempts,
    pauses honouring Retry-After, one deadline, proxies) for every request pystac-client makes.

    urllib3's retries do not cover a body cut short or a reply that is not JSON, and they end in
    messages a user cannot act on; `fetch` covers both and words the final error. (The methods of
    RetryingStacApiIO, whose other base is StacApiIO.)
    """

    def __init__(self, policy, headers=None, should_cancel=None):
        super().__init__(headers=headers, timeout=policy.timeout, max_retries=None)
        self.policy = policy
        self.attempts = max(1, int(policy.attempts))
        self.should_cancel = should_cancel or (lambda: False)
        configure_session(self.session, policy)

    def request(self, href, method=None, headers=None, parameters=None):
        from pystac_client.exceptions import APIError

        method = (method or "GET").upper()
        body = parameters if method in ("POST", "PUT", "PATCH") else None
        query = None if body is not None else (copy.deepcopy(parameters) or None)
        try:
            text, _ = fetch(method, href, self.policy, session=self.session, headers=headers, json_body=body,
                            params=query, label="The STAC API", should_cancel=self.should_cancel,
                            hint="Check the STAC API URL, your network and proxy settings, or try again later.")
        except Cancelled:
            raise Cancelled("Search cancelled.") from None
        except HTTPStatusError as err:
            # pystac-client reads a 404 on a collection as "no such collection"
            final = APIError(str(err))
            final.status_code = err.status
            raise final from err
        return text


def search_items(
    geometry,
    start,
    end,
    *,
    max_cloud_cover=None,
    url=PLANETARY_COMPUTER_STAC,
    collection=SENTINEL2_L2A,
    pc_key=None,
    timeout=30.0,
    attempts=4,
    backoff=1.0,
    proxies=None,
    page_size=100,
    log=None,
    should_cancel=None,
):
    """All items of `collection` intersecting `geometry` (GeoJSON, WGS84) between two dates.

    Returns the raw item dicts in the order the API gives them (every page is read). `pc_key` is
    sent as Ocp-Apim-Subscription-Key; `proxies` (a Proxies) replaces the environment's.
    """
    from pystac_client.exceptions import APIError

    log = log or (lambda message: None)
    should_cancel = should_cancel or (lambda: False)
    validate_date_range(start, end)
    if max_cloud_cover is not None and not 0 <= max_cloud_cover <= 100:
        raise InputError(f"The maximum cloud cover {max_cloud_cover} is not a percentage between 0 and 100.")
    headers = {SUBSCRIPTION_KEY_HEADER: pc_key} if pc_key else None
    policy = RequestPolicy(timeout=timeout, attempts=attempts, backoff=backoff, proxies=proxies)
    stac_io = retrying_stac_api_io_class()(policy, headers=headers, should_cancel=should_cancel)
    try:
        return _search(url, stac_io, collection, geometry, start, end, max_cloud_cover, page_size, log, should_cancel)
    except APIError as err:
        if getattr(err, "status_code", None) in (401, 403):
            raise SearchError(
                f"The STAC API at {url} refused access (HTTP {err.status_code}): {err}. Check the Planetary Computer "
                "subscription key (the AUTHCFG authentication configuration, or PC_SDK_SUBSCRIPTION_KEY): a wrong "
                "or expired key is refused; leave it empty for anonymous access.") from err
        raise SearchError(f"{err}. Check the STAC API URL.") from err


def _search(url, stac_io, collection, geometry, start, end, max_cloud_cover, page_size, log, should_cancel):
    client = _open_client(url, stac_io)
    if client.get_collection(collection) is None:
        raise SearchError(
            f"The STAC API at {url} has no collection '{collection}'. "
            f"Use a STAC API that serves Sentinel-2 L2A, such as {PLANETARY_COMPUTER_STAC}."
        )
    query = {"eo:cloud_cover": {"lte": max_cloud_cover}} if max_cloud_cover is not None else None
    search = client.search(
        collections=[collection],
        intersects=geometry,
        datetime=stac_datetime(start, end),
        query=query,
        limit=page_size,
        method="POST",
    )
    items = []
    for page_number, page in enumerate(search.pages_as_dicts(), start=1):
        items.extend(page.get("features", []))
        log(f"Page {page_number}: {len(items)} items so far")
        if should_cancel():
            raise Cancelled("Search cancelled.")
    return within_cloud_cover(items, max_cloud_cover, log)


def within_cloud_cover(items, max_cloud_cover, log=None):
    """The items whose eo:cloud_cover is at most `max_cloud_cover` (all when it is None).

    A server may ignore the query filter; what it returns anyway is left out here, as the filter
    would have (an item without eo:cloud_cover included), and the log says which.
    """
    if max_cloud_cover is None:
        return items
    kept, dropped = [], []
    for item in items:
        cover = (item.get("properties") or {}).get("eo:cloud_cover")
        (kept if isinstance(cover, (int, float)) and cover <= max_cloud_cover else dropped).append(item)
    if dropped and log is not None:
        log(f"The STAC API returned {len(dropped)} product(s) above the maximum cloud cover of "
            f"{max_cloud_cover:g}% (or without eo:cloud_cover): left out, as the filter asks: "
            + ", ".join(str(item.get("id")) for item in dropped))
    return kept


def _open_client(url, stac_io):
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        # Client.open resets the IO's timeout to its own argument, so pass it again.
        client = Client.open(url, stac_io=stac_io, timeout=stac_io.timeout)
    except (SearchError, Cancelled, APIError):
        raise
    except Exception as err:  # pystac raises STACTypeError and others for non-STAC replies
        raise SearchError(f"{url} is not a STAC API landing page: {err}") from err
    return client
