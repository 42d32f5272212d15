"""Search Sentinel-2 L2A items on a STAC API (Planetary Computer by default).

Differences from FarmVibes' list_sentinel2_products_pc, on purpose:
- the query uses the area itself (`intersects`), not its bounding box;
- an optional maximum `eo:cloud_cover` skips scenes nobody wants;
- every request has a timeout and is retried with backoff on 429/5xx, lost connections,
  timeouts and truncated replies; the final error names the URL and what happened;
- nothing is downloaded per item (the absolute orbit comes from `s2:datatake_id`).
"""

import functools
import json
import time
from datetime import date, datetime, timezone

from .errors import Cancelled, InputError, SearchError

PLANETARY_COMPUTER_STAC = "https://planetarycomputer.microsoft.com/api/stac/v1"
SENTINEL2_L2A = "sentinel-2-l2a"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The first Sentinel-2 L2A products on Planetary Computer date from mid-2015.
SENTINEL2_START = date(2015, 6, 23)


def validate_date_range(start, end, today=None):
    """Refuse reversed ranges and dates in the future, with the dates in the message."""
    today = today or datetime.now(timezone.utc).date()
    if end < start:
        raise InputError(f"The end date {end.isoformat()} is before the start date {start.isoformat()}. Swap them.")
    if start > today:
        raise InputError(
            f"The start date {start.isoformat()} is in the future (today is {today.isoformat()} UTC); "
            "there are no acquisitions yet."
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
    """StacApiIO with one retry policy for every request pystac-client makes.

    urllib3's retries do not cover a body cut short or a reply that is not JSON, and
    they end in messages a user cannot act on; this loop covers both and words the
    final error. (The methods of RetryingStacApiIO, whose other base is StacApiIO.)
    """

    def __init__(self, timeout, attempts, backoff, headers=None, should_cancel=None):
        super().__init__(headers=headers, timeout=timeout, max_retries=None)
        self.attempts = max(1, int(attempts))
        self.backoff = backoff
        self.should_cancel = should_cancel or (lambda: False)

    def request(self, href, method=None, headers=None, parameters=None):
        from pystac_client.exceptions import APIError

        for attempt in range(1, self.attempts + 1):
            if self.should_cancel():
                raise Cancelled("Search cancelled.")
            try:
                text = super().request(href, method=method, headers=headers, parameters=parameters)
                json.loads(text)  # a cut-off reply is retried like a dropped connection
                return text
            except APIError as err:
                status = getattr(err, "status_code", None)
                problem = self._describe(err, status)
                if status is not None and status not in RETRY_STATUSES:
                    # pystac-client reads a 404 on a collection as "no such collection"
                    final = APIError(f"{href} answered {problem}")
                    final.status_code = status
                    raise final from err
            except ValueError as err:
                problem = f"the reply was cut short or is not JSON ({err})"
            if attempt < self.attempts:
                self._sleep(self.backoff * 2 ** (attempt - 1))
        raise SearchError(
            f"{href} failed after {self.attempts} attempts: {problem}. "
            "Check the STAC API URL and your network, or try again later."
        )

    def _describe(self, err, status):
        import requests

        if status is not None:
            body = str(err).strip().replace("\n", " ")
            return f"HTTP {status}" + (f" ({body[:200]})" if body else "")
        cause = err.__context__
        if isinstance(cause, requests.Timeout):
            return f"no answer within the {self.timeout} s timeout"
        if isinstance(cause, requests.exceptions.ChunkedEncodingError):
            return "the reply was cut short: the connection closed before its end"
        if isinstance(cause, requests.ConnectionError):
            return f"could not connect ({cause})"
        return str(err) or type(cause).__name__

    def _sleep(self, seconds):
        """Sleeps in small steps so Cancel stays responsive during backoff."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.should_cancel():
                raise Cancelled("Search cancelled.")
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


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
    page_size=100,
    log=None,
    should_cancel=None,
):
    """All items of `collection` intersecting `geometry` (GeoJSON, WGS84) between two dates.

    Returns the raw item dicts in the order the API gives them (every page is read).
    """
    from pystac_client.exceptions import APIError

    log = log or (lambda message: None)
    should_cancel = should_cancel or (lambda: False)
    validate_date_range(start, end)
    if max_cloud_cover is not None and not 0 <= max_cloud_cover <= 100:
        raise InputError(f"The maximum cloud cover {max_cloud_cover} is not a percentage between 0 and 100.")
    headers = {"Ocp-Apim-Subscription-Key": pc_key} if pc_key else None
    stac_io = retrying_stac_api_io_class()(timeout, attempts, backoff, headers=headers, should_cancel=should_cancel)
    try:
        return _search(url, stac_io, collection, geometry, start, end, max_cloud_cover, page_size, log, should_cancel)
    except APIError as err:
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
    return items


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
