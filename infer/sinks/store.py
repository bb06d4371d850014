"""A folder of whole files, on the local disk or in an object store (`s3://...`).

What the parts of an output need and no more: list the names, put a file so that a reader
sees all of it or none (a rename on a disk; one PUT in an object store, where an object
appears only once its upload is complete), read one back, remove. Object stores go through
fsspec and the store's own library (s3fs for `s3://`: credentials and endpoint the way it
takes them, e.g. `AWS_ENDPOINT_URL`); listings are re-read, never served from fsspec's
cache, so a resumed run sees what is really there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from cnnbench.files import atomic_open
from cnnbench.infer.errors import InferError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


def is_url(path: str) -> bool:
    """`scheme://...` (not a Windows drive letter)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem for a URL and the path inside it, or one line naming the
    extra that brings the store's library."""
    import fsspec

    scheme = url.partition("://")[0].lower()
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        extra = EXTRAS.get(scheme)
        hint = f"pip install 'cnnbench[{extra}]'" if extra else "use a local path or s3://"
        raise InferError(f"cannot write {url}: no library for {scheme}:// ({e}); {hint}") from e
    return fs, path.rstrip("/")


class Store:
    """The files directly inside one folder or object-store prefix."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self.fs: Any = None
        self.root = os.path.abspath(location)
        if is_url(location):
            self.fs, self.root = filesystem(location)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.fs else os.path.join(self.root, name)

    def url(self, name: str) -> str:
        return f"{self.location}/{name}"

    def names(self) -> set[str]:
        """The names there now; none when the folder does not exist."""
        if self.fs is None:
            return set(os.listdir(self.root)) if os.path.isdir(self.root) else set()
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return set()
        return {p.rstrip("/").rsplit("/", 1)[-1] for p in found if p.rstrip("/") != self.root}

    def is_file(self) -> bool:
        """Whether the location itself is a file (an object), not a folder."""
        if self.fs is None:
            return os.path.isfile(self.root)
        self.fs.invalidate_cache(self.root)
        return bool(self.fs.isfile(self.root))

    def make(self) -> None:
        if self.fs is None:
            os.makedirs(self.root, exist_ok=True)  # object stores have no folders to make

    def put(self, name: str, data: bytes) -> None:
        """The whole file or nothing, for any reader, at any moment."""
        if self.fs is not None:
            self.fs.pipe_file(self.path(name), data)
            return
        with atomic_open(self.path(name), "wb") as f:
            f.write(data)

    def get(self, name: str) -> bytes:
        if self.fs is not None:
            return bytes(self.fs.cat_file(self.path(name)))
        with open(self.path(name), "rb") as f:
            return f.read()

    def remove(self, name: str) -> None:
        if self.fs is not None:
            self.fs.rm_file(self.path(name))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))

    def remove_all(self) -> None:
        """The folder and everything in it, or the file at its place."""
        if self.fs is None:
            if os.path.isdir(self.root):
                shutil.rmtree(self.root)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root)
            return
        for name in self.names():
            self.remove(name)
        if self.is_file():
            self.fs.rm_file(self.root)
