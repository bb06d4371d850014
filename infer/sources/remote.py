"""Inputs by URL: an object is one file, a prefix is a folder of the objects under it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from cnnbench.infer.sources import prefixes, stores
from cnnbench.infer.sources.items import Item, wanted


def url_items(
    url: str, head: str, extensions: tuple[str, ...] | None, skipped: Counter | None = None
) -> Iterator[Item]:
    """The objects under the prefix `url` (ending in '/') in key order, which is the
    order a folder scan gives, named `head` + their name relative to it; any other URL
    is one object, named `url`, read later. A listing that fails gives one error Item
    naming the prefix; one that gets no answer from the store stops the job
    (`stores.StoreDown`): the objects after it are listed by a --resume."""
    if not url.endswith("/"):
        yield Item(url, url)
        return
    try:
        for entry in prefixes.list_prefix(url):
            if wanted(entry.name, extensions, skipped):
                yield Item(entry.url, f"{head}{entry.name}", size=entry.size)
    except stores.NoAnswer as e:
        raise stores.StoreDown(f"the store stopped answering while {url} was listed: {e}") from e
    except stores.StoreError as e:
        yield Item(url, url.rstrip("/"), f"cannot list prefix: {e}")
