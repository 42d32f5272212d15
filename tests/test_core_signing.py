"""Signing asset hrefs with the planetary-computer package against the double's token endpoint."""

import pytest
from planetary_computer import sas

from s2masks.core import signing
from s2masks.core.errors import SearchError


@pytest.fixture(autouse=True)
def fresh_token_cache():
    sas.TOKEN_CACHE.clear()
    yield
    sas.TOKEN_CACHE.clear()
    signing.configure(None, sas.Settings.get().sas_url)


def test_sign_item_appends_token(pc_double, items_2024):
    signed = signing.sign_item(items_2024[0], pc_key="secret", sas_url=pc_double.sas_url)
    href = signed["assets"]["B02"]["href"]
    assert href.startswith(items_2024[0]["assets"]["B02"]["href"] + "?st=")
    assert "sig=loopback-double-signature" in href
    assert "?" not in items_2024[0]["assets"]["B02"]["href"]  # the input stays unsigned
    token_requests = pc_double.requests_to("/api/sas/v1/token/sentinel2l2a01/sentinel2-l2")
    assert len(token_requests) == 1  # one token for every asset of the container
    assert token_requests[0][2].get("Ocp-Apim-Subscription-Key") == "secret"


def test_refused_token_mentions_the_key(pc_double, items_2024):
    pc_double.inject("/api/sas/v1/token", "status", times=1, status=403)
    with pytest.raises(SearchError, match=r"HTTP 403.*pc_key"):
        signing.sign_item(items_2024[0], pc_key="wrong", sas_url=pc_double.sas_url)
