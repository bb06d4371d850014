"""`infer --engine ray` over gs:// and az:// prefixes: the workers read the objects
themselves (the driver ships the listing), through the same store libraries as the local
engine, and give its rows. Real servers on 127.0.0.1 (gcp-storage-emulator, Azurite);
the cluster is started after their endpoints are in the environment, so its workers
reach them the way a real cluster's nodes reach a store: through their own environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import AzuriteServer, GcsServer, azurite_blob, errors_of, local_ray, paths

from cnnbench.cli import cli

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """Both stores' servers, their endpoints in os.environ, then a 2-CPU Ray cluster
    that inherits them; everything ended and the environment restored afterwards."""
    root = tmp_path_factory.mktemp("stores")
    servers: dict[str, Any] = {"gs": GcsServer(root / "gcs.log")}
    binary = azurite_blob()
    if isinstance(binary, Path):  # npm absent: the Azure half is skipped in its test
        (root / "azure").mkdir()
        servers["az"] = AzuriteServer(binary, root / "azure", root / "azurite.log")
    saved = dict(os.environ)
    try:
        for server in servers.values():
            os.environ.update(server.env)
        with local_ray(object_store_mb=200) as address:
            yield address, servers
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for server in servers.values():
            server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_ray_workers_read_store_prefixes(
    cluster: tuple[str, dict[str, Any]], scheme: str, tiny_model: Path, photos: Path, tmp_path: Path
) -> None:
    address, servers = cluster
    if scheme not in servers:
        pytest.skip(str(azurite_blob()))
    servers[scheme].upload("photos", photos, "set/")
    servers[scheme].put("photos", {"set/gone.jpg": b"not a jpeg"})
    prefix = f"{scheme}://photos/set/"
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    run = CliRunner().invoke
    args = ["infer", str(tiny_model), prefix, "--no-progress"]
    assert run(cli, [*args, "-o", str(local)]).exit_code == 0
    ray = [*args, "-o", str(remote), "--engine", "ray", "--address", address, "--block-size", "3"]
    result = run(cli, ray)
    assert result.exit_code == 0, result.output
    assert remote.read_bytes() == local.read_bytes()
    assert errors_of(remote).read_bytes() == errors_of(local).read_bytes()
    images = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))
    assert sorted(paths(remote)) == images
    assert "\ngone.jpg,not an image" in errors_of(remote).read_text()
