"""Sign Planetary Computer asset hrefs just before they are read.

The listing stores unsigned hrefs: a SAS token expires within the hour, so a footprint
layer saved today must still be usable tomorrow.
"""

import copy

from .errors import SearchError


def configure(pc_key=None, sas_url=None):
    """Subscription key and token endpoint for the planetary-computer package.

    The package keeps these settings process-wide; an empty key means anonymous access.
    `sas_url` defaults to the PC_SDK_SAS_URL environment variable, else the public endpoint.
    """
    from planetary_computer.settings import Settings

    settings = Settings.get()
    settings.subscription_key = pc_key or None
    if sas_url:
        settings.sas_url = sas_url.rstrip("/")


def sign_item(item, pc_key=None, sas_url=None):
    """A copy of the STAC item dict with every Azure Blob asset href signed."""
    import planetary_computer
    import requests
    from planetary_computer.settings import Settings

    configure(pc_key, sas_url)
    try:
        return planetary_computer.sign(copy.deepcopy(item))
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        hint = " Check the Planetary Computer subscription key (pc_key)." if status in (401, 403) else ""
        raise SearchError(
            f"Planetary Computer refused an access token (HTTP {status}) at {Settings.get().sas_url}.{hint}"
        ) from err
    except requests.RequestException as err:
        raise SearchError(
            f"Could not get a Planetary Computer access token from {Settings.get().sas_url}: {err}"
        ) from err


def sign_href(href, pc_key=None, sas_url=None, fresh=False):
    """One signed href; `fresh` drops cached tokens first (after a 403 on an expired token)."""
    import planetary_computer
    import requests

    configure(pc_key, sas_url)
    if fresh:
        from planetary_computer import sas

        sas.TOKEN_CACHE.clear()
    try:
        return planetary_computer.sign_url(href)
    except requests.RequestException as err:
        raise SearchError(f"Could not get a Planetary Computer access token for {href.split('?')[0]}: {err}") from err
