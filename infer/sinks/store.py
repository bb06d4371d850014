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
from collections.abc import Callable
from typing import Any, TypeVar

from cnnbench.files import atomic_open
from cnnbench.infer.errors import InferError
from cnnbench.infer.sources import stores

T = TypeVar("T")


class Store:
    """The files directly inside one folder or object-store prefix."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self.fs: Any = None
        self.root = os.path.abspath(location)
        if stores.is_url(location):
            self.fs, self.root = stores.filesystem(location), stores.store_path(self.location)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.fs else os.path.join(self.root, name)

    def _remote(self, call: Callable[[], T], name: str = "") -> T:
        """An object-store call, retried when the failure is transient; a failure that
        stays is one line."""
        url = f"{self.location}/{name}" if name else self.location
        try:
            return stores.with_retries(call, url)
        except stores.StoreError as e:
            raise InferError(
                f"cannot write the output: {e}; the blocks committed are kept: once it "
                "answers, run the same command with --resume"
            ) from e

    def names(self) -> set[str]:
        """The names there now; none when the folder does not exist."""
        if self.fs is None:
            return set(os.listdir(self.root)) if os.path.isdir(self.root) else set()

        def listing() -> list[str]:
            self.fs.invalidate_cache(self.root)
            try:
                return list(self.fs.ls(self.root, detail=False))
            except FileNotFoundError:
                self._bucket_there()
                return []

        return {p.rstrip("/").rsplit("/", 1)[-1] for p in self._remote(listing)} - {""}

    def _bucket_there(self) -> None:
        """One line when the bucket or container of the output does not exist: it was
        'cannot write the output: not found: ...; once it answers, run the same command
        with --resume', as if the store had stopped answering (and GCS's said the
        request's path, 'b/absent/o')."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
        except FileNotFoundError as e:
            what = stores.bucket_word(stores.store_protocol(self.location))
            raise InferError(
                f"cannot write {self.location}: no such {what} {bucket}: create it, or "
                "choose another -o/--errors"
            ) from e

    def is_file(self) -> bool:
        """The location is itself a file or object (where a folder of parts would go)."""
        if self.fs is None:
            return os.path.isfile(self.root)
        return bool(self._remote(lambda: self.fs.isfile(self.root)))

    def make(self) -> None:
        if self.fs is None:
            os.makedirs(self.root, exist_ok=True)  # object stores have no folders to make

    def put(self, name: str, data: bytes) -> None:
        """The whole file or nothing, for any reader, at any moment."""
        if self.fs is not None:
            timeout = stores.upload_timeout(len(data))
            self._remote(lambda: self.fs.pipe_file(self.path(name), data, timeout=timeout), name)
            return
        with atomic_open(self.path(name), "wb") as f:
            f.write(data)

    def get(self, name: str) -> bytes:
        if self.fs is not None:
            return bytes(self._remote(lambda: self.fs.cat_file(self.path(name)), name))
        with open(self.path(name), "rb") as f:
            return f.read()

    def remove(self, name: str) -> None:
        if self.fs is not None:
            self._remote(lambda: self.fs.rm_file(self.path(name)), name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))

    def remove_all(self) -> None:
        """The folder and everything in it, or a file in its place."""
        if self.fs is not None:
            for name in self.names():
                self.remove(name)
        elif os.path.isdir(self.root):
            shutil.rmtree(self.root)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root)
