"""Whether the Hugging Face hub answers, asked once, briefly, before the first model load.

Offline, ``from_pretrained`` retries for about a minute before it looks in the cache, and
an endpoint that accepts connections but never answers hangs it for good. One request with
a short timeout decides instead: no answer, and the hub libraries are switched to their
offline mode (``HF_HUB_OFFLINE``) for the rest of the process, saying so once.
"""

from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import first_line

TIMEOUT = 3.0  # seconds: the hub answers a HEAD in well under one


def offline_unless_reachable(name: str) -> None:
    """Switches to the hub's offline mode when ``name`` would be fetched from a hub that
    does not answer; nothing for a local folder or when offline mode is already on."""
    if Path(name).expanduser().is_dir() or _offline_already():
        return
    _ask_once()


def _offline_already() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _ask_once() -> None:
    from huggingface_hub import constants

    try:  # any HTTP answer, an error status included, means the hub is there
        urllib.request.urlopen(
            urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=TIMEOUT
        )
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:  # no route, no name, refused, timed out
        os.environ["HF_HUB_OFFLINE"] = "1"  # for what is imported later (datasets)
        constants.HF_HUB_OFFLINE = True  # read at import by the libraries already loaded
        print(
            f"note: {constants.ENDPOINT} does not answer ({first_line(error)}): using the "
            "local Hugging Face cache only",
            file=sys.stderr,
        )


__all__ = ["TIMEOUT", "offline_unless_reachable"]
