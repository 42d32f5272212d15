"""Signing asset hrefs against the double's SAS token endpoint, through the plugin's own bounded
request: the reply shape of planetary-computer, the PC_SDK_* settings, the token cache, and
bounded failures (HTTP 503 every time, a refused connection, a server that never answers)."""

import threading
import time
from datetime import timedelta

import pytest
from pc_server import SilentServer, closed_port

from s2masks.core import search, signing
from s2masks.core.errors import SearchError

TOKEN_PATH = "/api/sas/v1/token/sentinel2l2a01/sentinel2-l2"


@pytest.fixture(autouse=True)
def fresh_token_cache(monkeypatch):
    monkeypatch.delenv("PC_SDK_SAS_URL", raising=False)
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.planetarycomputer/settings.env
    signing.clear_token_cache()
    yield
    signing.clear_token_cache()


def endpoint(url, timeout=2.0, attempts=4, backoff=0.05, **extra):
    return signing.TokenEndpoint(url, search.RequestPolicy(timeout=timeout, attempts=attempts, backoff=backoff,
                                                           **extra))


def test_sign_item_appends_token(pc_double, items_2024):
    signed = signing.sign_item(items_2024[0], pc_key="secret", sas_url=pc_double.sas_url)
    href = signed["assets"]["B02"]["href"]
    assert href.startswith(items_2024[0]["assets"]["B02"]["href"] + "?st=")
    assert "sig=loopback-double-signature" in href
    assert "?" not in items_2024[0]["assets"]["B02"]["href"]  # the input stays unsigned
    token_requests = pc_double.requests_to(TOKEN_PATH)
    assert len(token_requests) == 1  # one token for every asset of the container
    assert token_requests[0][2].get("Ocp-Apim-Subscription-Key") == "secret"


def test_only_blob_storage_is_signed(pc_double):
    for href in ("https://example.com/a.tif", "https://ai4edatasetspublicassets.blob.core.windows.net/x/y.png",
                 "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/a.tif?st=1&se=2&sp=rl&sig=x"):
        assert signing.sign_href(href, sas_url=pc_double.sas_url) == href
    assert pc_double.requests == []


def test_settings_come_from_the_pc_sdk_environment(pc_double, items_2024, monkeypatch):
    """PC_SDK_SAS_URL and PC_SDK_SUBSCRIPTION_KEY, as the planetary-computer package reads them."""
    monkeypatch.setenv("PC_SDK_SAS_URL", pc_double.sas_url + "/")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "from-environment")
    href = signing.sign_href(items_2024[0]["assets"]["B03"]["href"])
    assert "sig=loopback-double-signature" in href
    assert pc_double.requests_to(TOKEN_PATH)[0][2].get("Ocp-Apim-Subscription-Key") == "from-environment"


def test_settings_file_like_planetary_computer(pc_double, items_2024, monkeypatch, tmp_path):
    settings = tmp_path / ".planetarycomputer" / "settings.env"
    settings.parent.mkdir()
    settings.write_text(f"PC_SDK_SAS_URL={pc_double.sas_url}\nPC_SDK_SUBSCRIPTION_KEY='from-file'\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    signing.sign_href(items_2024[0]["assets"]["B03"]["href"])
    assert pc_double.requests_to(TOKEN_PATH)[0][2].get("Ocp-Apim-Subscription-Key") == "from-file"


def test_token_is_cached_until_shortly_before_expiry(pc_double, items_2024):
    b02, b03 = items_2024[0]["assets"]["B02"]["href"], items_2024[0]["assets"]["B03"]["href"]
    signing.sign_href(b02, sas_url=pc_double.sas_url)
    signing.sign_href(b03, sas_url=pc_double.sas_url)
    assert pc_double.tokens_issued == 1
    signing.sign_href(b02, sas_url=pc_double.sas_url, fresh=True)  # after a 403: a new token
    assert pc_double.tokens_issued == 2

    signing.clear_token_cache()
    pc_double.token_lifetime = signing.RENEW_BEFORE - timedelta(seconds=30)  # expires too soon to keep
    signing.sign_href(b02, sas_url=pc_double.sas_url)
    signing.sign_href(b03, sas_url=pc_double.sas_url)
    assert pc_double.tokens_issued == 4


def test_refused_token_mentions_the_key_and_is_not_retried(pc_double, items_2024):
    pc_double.inject("/api/sas/v1/token", "status", times=5, status=403)
    with pytest.raises(SearchError, match=r"HTTP 403.*subscription key.*AUTHCFG"):
        signing.sign_item(items_2024[0], pc_key="wrong", sas_url=pc_double.sas_url)
    assert len(pc_double.requests_to("/api/sas/v1/token")) == 1


def test_reply_without_token(pc_double, items_2024, tmp_path):
    (tmp_path / "sentinel2l2a01").mkdir()
    (tmp_path / "sentinel2l2a01" / "sentinel2-l2").write_text('{"msft:expiry": "2099-01-01T00:00:00Z"}')
    with pytest.raises(SearchError, match="answered without a token"):
        signing.sign_href(items_2024[0]["assets"]["B02"]["href"], sas_url=pc_double.serve_files("/blob/x", tmp_path))


def test_token_endpoint_503_every_time_is_bounded(pc_double, items_2024):
    pc_double.inject("/api/sas/v1/token", "status", times=1000, status=503)
    started = time.monotonic()
    with pytest.raises(SearchError) as caught:
        signing.sign_href(items_2024[0]["assets"]["B02"]["href"], sas_url=endpoint(pc_double.sas_url, attempts=3))
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "token endpoint (127.0.0.1:" in message
    assert "failed after 3 attempts: HTTP 503" in message and "(every attempt)" in message
    assert "Tried: 3 attempts" in message and "2 s timeout each" in message
    assert len(pc_double.requests_to("/api/sas/v1/token")) == 3
    assert elapsed < 2


def test_retry_after_is_honoured_and_capped(pc_double, items_2024):
    href = items_2024[0]["assets"]["B02"]["href"]
    pc_double.inject("/api/sas/v1/token", "status", times=1, status=503, retry_after="1")
    started = time.monotonic()
    signing.sign_href(href, sas_url=endpoint(pc_double.sas_url))
    assert 1.0 <= time.monotonic() - started < 3  # waited as asked, not the 0.05 s pause

    signing.clear_token_cache()
    pc_double.inject("/api/sas/v1/token", "status", times=1, status=503, retry_after="3600")
    started = time.monotonic()
    signing.sign_href(href, sas_url=endpoint(pc_double.sas_url, retry_after_cap=0.5))
    assert 0.5 <= time.monotonic() - started < 2  # capped


def test_retry_after_past_the_deadline_gives_up(pc_double, items_2024):
    pc_double.inject("/api/sas/v1/token", "status", times=1000, status=429, retry_after="30")
    started = time.monotonic()
    with pytest.raises(SearchError, match=r"HTTP 429.*asked to wait 30 s \(Retry-After\), past the time limit"):
        signing.sign_href(items_2024[0]["assets"]["B02"]["href"], sas_url=endpoint(pc_double.sas_url, timeout=1))
    assert time.monotonic() - started < 2  # the deadline (4 x 1 s + pauses) leaves no room for 30 s
    assert len(pc_double.requests_to("/api/sas/v1/token")) == 1


def test_connection_refused_is_bounded(items_2024):
    url = f"http://127.0.0.1:{closed_port()}/api/sas/v1/token"
    started = time.monotonic()
    with pytest.raises(SearchError, match=r"failed after 4 attempts: could not connect \(connection refused\)"):
        signing.sign_href(items_2024[0]["assets"]["B02"]["href"], sas_url=endpoint(url))
    assert time.monotonic() - started < 2


def test_server_that_never_answers_is_bounded(items_2024):
    with SilentServer() as silent:
        policy = endpoint(silent.base + "/api/sas/v1/token", timeout=1, attempts=3)
        started = time.monotonic()
        with pytest.raises(SearchError, match=r"failed after 3 attempts: no answer within the 1 s timeout"):
            signing.sign_href(items_2024[0]["assets"]["B02"]["href"], sas_url=policy)
        elapsed = time.monotonic() - started
    assert 3 <= elapsed < policy.policy.deadline + 1  # 3 x 1 s + pauses of 0.05 and 0.1 s


def test_threads_share_one_token_request_and_its_failure(items_2024):
    """Thirteen bands signed at once wait for one request; when it fails, all fail with it."""
    hrefs = [asset["href"] for asset in items_2024[0]["assets"].values() if "blob.core" in asset["href"]][:13]
    with SilentServer() as silent:
        policy = endpoint(silent.base + "/api/sas/v1/token", timeout=1, attempts=2)
        errors = []

        def sign(href):
            try:
                signing.sign_href(href, sas_url=policy)
            except SearchError as err:
                errors.append(err)

        threads = [threading.Thread(target=sign, args=(href,)) for href in hrefs]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert len(errors) == len(hrefs)
        assert silent.accepted == 2  # one thread's two attempts; the others waited for them
        assert elapsed < 2 * 2 + 1
