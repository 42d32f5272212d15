"""STAC search against the loopback Planetary Computer double (real recorded items)."""

import time
from datetime import date, timedelta

import pytest
import requests
from conftest import polygon
from pc_server import SilentServer

from s2masks.core import search
from s2masks.core.errors import Cancelled, InputError, SearchError

ARCTIC = polygon(90, 80, 100, 83)  # the four 2024-04-19 items
WORLD = polygon(-180, -85, 180, 85)
APRIL_2024 = (date(2024, 4, 1), date(2024, 4, 30))
FAST = {"backoff": 0.01}


def test_reads_every_page(pc_double):
    pages = []
    items = search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, page_size=1, log=pages.append, **FAST)
    assert sorted(item["properties"]["s2:mgrs_tile"] for item in items) == ["46XER", "46XES", "47XMJ", "47XML"]
    assert len(pages) == 4
    searches = pc_double.requests_to("/api/stac/v1/search")
    assert [method for method, *_ in searches] == ["POST"] * 4


def test_query_uses_intersects_datetime_and_collection(pc_double):
    search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, **FAST)
    import json

    body = json.loads(pc_double.requests_to("/api/stac/v1/search")[0][3])
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["intersects"]["type"] == "Polygon"
    assert body["datetime"] == "2024-04-01T00:00:00Z/2024-04-30T23:59:59Z"
    assert "bbox" not in body and "query" not in body


def test_datetime_range_includes_both_days(pc_double):
    day = date(2024, 4, 19)
    assert len(search.search_items(ARCTIC, day, day, url=pc_double.url, **FAST)) == 4
    assert search.search_items(ARCTIC, day + timedelta(days=1), day + timedelta(days=2), url=pc_double.url) == []


def test_area_elsewhere_finds_nothing(pc_double):
    assert search.search_items(polygon(10, 40, 11, 41), *APRIL_2024, url=pc_double.url) == []


def test_max_cloud_cover_filter(pc_double):
    everything = search.search_items(WORLD, date(2015, 7, 1), date(2025, 12, 31), url=pc_double.url)
    clear = search.search_items(WORLD, date(2015, 7, 1), date(2025, 12, 31), url=pc_double.url, max_cloud_cover=20)
    assert len(everything) == 8  # 7 recorded + the T29UNU fixture item
    assert {i["id"] for i in clear} == {i["id"] for i in everything if i["properties"]["eo:cloud_cover"] <= 20}
    assert 0 < len(clear) < len(everything)


def test_subscription_key_is_sent(pc_double):
    search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, pc_key="my-key")
    headers = pc_double.requests_to("/api/stac/v1/search")[0][2]
    assert headers.get("Ocp-Apim-Subscription-Key") == "my-key"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_is_retried(pc_double, status):
    pc_double.inject("/api/stac/v1/search", "status", times=2, status=status)
    assert len(search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, **FAST)) == 4
    assert len(pc_double.requests_to("/api/stac/v1/search")) == 3


def test_persistent_server_error_names_url_and_status(pc_double):
    pc_double.inject("/api/stac/v1/search", "status", times=10, status=503)
    with pytest.raises(SearchError, match=r"/api/stac/v1/search failed after 3 attempts: HTTP 503"):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, attempts=3, **FAST)


def test_failure_names_the_host_and_what_was_tried(pc_double):
    pc_double.inject("/api/stac/v1/search", "status", times=10, status=503)
    with pytest.raises(SearchError) as caught:
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, attempts=3, timeout=5, **FAST)
    message = str(caught.value)
    host = pc_double.base.replace("http://", "")
    assert f"The STAC API ({host}): POST {pc_double.url}/search failed after 3 attempts: HTTP 503" in message
    assert "(every attempt)" in message
    assert "Tried: 3 attempts in 0 s, 5 s timeout each, pauses of 0.01, 0.02 s." in message


def test_retry_after_is_honoured(pc_double):
    pc_double.inject("/api/stac/v1/search", "status", times=1, status=429, retry_after="1")
    started = time.monotonic()
    assert len(search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, **FAST)) == 4
    assert time.monotonic() - started >= 1.0  # not the 0.01 s pause


def test_retry_after_http_date():
    assert search.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert search.parse_retry_after("7") == 7.0 and search.parse_retry_after("soon") is None


def test_server_that_never_answers_is_bounded():
    with SilentServer() as silent:
        started = time.monotonic()
        with pytest.raises(SearchError, match=r"failed after 2 attempts: no answer within the 0.5 s timeout"):
            search.search_items(ARCTIC, *APRIL_2024, url=silent.base + "/api/stac/v1", timeout=0.5, attempts=2,
                                **FAST)
        assert time.monotonic() - started < search.RequestPolicy(timeout=0.5, attempts=2).deadline


def test_client_error_is_not_retried(pc_double):
    pc_double.inject("/api/stac/v1/search", "status", times=10, status=400)
    with pytest.raises(SearchError, match="HTTP 400"):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, **FAST)
    assert len(pc_double.requests_to("/api/stac/v1/search")) == 1


def test_slow_reply_times_out_then_retries(pc_double):
    pc_double.inject("/api/stac/v1/search", "slow", times=1, delay=3)
    assert len(search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, timeout=0.5, **FAST)) == 4
    pc_double.inject("/api/stac/v1/search", "slow", times=5, delay=3)
    with pytest.raises(SearchError, match="no answer within the 0.5 s timeout"):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, timeout=0.5, attempts=2, **FAST)


def test_truncated_reply_is_retried(pc_double):
    pc_double.inject("/api/stac/v1/search", "truncate", times=1)
    assert len(search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, **FAST)) == 4
    pc_double.inject("/api/stac/v1/search", "truncate", times=5)
    with pytest.raises(SearchError, match="failed after 2 attempts: the reply was cut short"):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, attempts=2, **FAST)


def test_unreachable_url():
    with pytest.raises(SearchError, match=r"http://127.0.0.1:9/api/stac/v1 failed after 2 attempts: could not connect"):
        search.search_items(ARCTIC, *APRIL_2024, url="http://127.0.0.1:9/api/stac/v1", attempts=2, **FAST)


def test_api_without_the_collection(pc_double_without_collection):
    with pytest.raises(SearchError, match="has no collection 'sentinel-2-l2a'"):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double_without_collection.url, **FAST)


def test_cancel_between_pages(pc_double):
    calls = []

    def cancel_after_first_page():
        calls.append(1)
        return len(pc_double.requests_to("/api/stac/v1/search")) >= 1

    with pytest.raises(Cancelled):
        search.search_items(ARCTIC, *APRIL_2024, url=pc_double.url, page_size=1,
                            should_cancel=cancel_after_first_page)
    assert len(pc_double.requests_to("/api/stac/v1/search")) == 1


@pytest.mark.parametrize("start, end, message", [
    (date(2024, 4, 30), date(2024, 4, 1), "before the start date"),
    (date.today() + timedelta(days=3), date.today() + timedelta(days=9), "start date .* is in the future"),
    (date(2024, 4, 1), date.today() + timedelta(days=2), "end date .* is in the future"),
    (date(2010, 1, 1), date(2011, 1, 1), "before Sentinel-2 L2A data exists"),
])
def test_bad_dates_fail_before_any_request(pc_double, start, end, message):
    with pytest.raises(InputError, match=message):
        search.search_items(ARCTIC, start, end, url=pc_double.url)
    assert pc_double.requests == []


def test_double_pages_get_searches_too(pc_double):
    """The double also pages GET searches, as Planetary Computer does."""
    url = pc_double.url + "/search?collections=sentinel-2-l2a&limit=3&bbox=90,80,100,83"
    ids = []
    while url:
        page = requests.get(url, timeout=5).json()
        ids += [f["id"] for f in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert len(ids) == 4 and len(set(ids)) == 4
