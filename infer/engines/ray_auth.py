"""Token authentication between this driver and a Ray cluster given by address: the one
place that works around Ray 2.60's asymmetry, with Ray's private API.

`ray start` with RAY_AUTH_MODE unset turns token authentication on when a token is at hand
(`~/.ray/auth_token`, which every local `ray.init()` writes, so nearly every Ray user has
one), but `ray.init(address=HOST:PORT)` never does (both call
`maybe_enable_token_auth_if_token_available`, ray.init for `auto` only). The same user on
the same machine got ~20 s of C++ `gcs_client.cc ... Unauthenticated` lines, then "Failed
to connect to Ray cluster". The other way round, a driver in token mode connects to a
cluster without it, runs tasks, and then every actor is cancelled ("The actor never ran").

So, before ray.init: one RPC to the cluster's GCS (GetClusterId, the first thing Ray's own
client asks) without a token says whether the cluster wants one, and one with this
driver's token whether it takes that one; milliseconds, no C++ lines. With RAY_AUTH_MODE
unset the driver then does what `ray start` does; where the modes or the tokens differ,
one line says so and what to set. Any other answer (not a Ray GCS, TLS) is left to
ray.init, as before. Remove when ray.init(address=...) enables token authentication as
`ray start` does and fails fast on a refused token (Ray's docs announce token
authentication by default for every cluster in 2.61).
"""

from __future__ import annotations

import logging
import os

from cnnbench.infer.errors import InferError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
PROBE_TIMEOUT_S = 3.0
WHERE_TOKENS_ARE = (
    "RAY_AUTH_TOKEN, or a file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; "
    "`ray get-auth-token` on the head prints it"
)


def authenticate(address: str) -> None:
    """Make this driver's authentication match the cluster's GCS at `address` (HOST:PORT),
    or raise one line saying what to set."""
    mode = os.environ.get(AUTH_MODE)
    mode = mode.lower() if mode is not None else None
    if mode not in (None, "token", "disabled"):
        return  # another mode (Kubernetes tokens): Ray's own business
    without = _accepts(address, ())
    if without is None:
        return
    if without:
        if mode == "token":
            raise InferError(
                f"the Ray cluster at {address} does not use token authentication but "
                f"{AUTH_MODE}=token here (its actors would never run): set {AUTH_MODE}=disabled "
                f"for cnnbench, or restart the cluster with {AUTH_MODE}=token"
            )
        return
    if mode == "disabled":
        raise InferError(
            f"the Ray cluster at {address} uses token authentication but {AUTH_MODE}=disabled "
            f"here: set {AUTH_MODE}=token and give the cluster's token ({WHERE_TOKENS_ARE})"
        )
    header = _token_header()
    if not header:
        raise InferError(
            f"the Ray cluster at {address} uses token authentication and this driver has no "
            f"token: set {AUTH_MODE}=token and give the cluster's token ({WHERE_TOKENS_ARE})"
        )
    if not _accepts(address, header):
        raise InferError(
            f"the Ray cluster at {address} refused this driver's authentication token (from "
            f"{_token_source()}): give the cluster's token ({WHERE_TOKENS_ARE})"
        )
    if mode is None:  # what `ray start` does with the mode unset and a token at hand
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        # its warning says the *cluster* now has token auth: not what happened here
        logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _accepts(address: str, metadata: tuple) -> bool | None:
    """Whether the GCS at `address` answers GetClusterId with `metadata` (False: it refuses
    it as unauthenticated; None: any other failure, for ray.init to report)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]  # generated
            stub.GetClusterId(request, timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as e:
            return False if e.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return True


def _token_header() -> tuple:
    """This driver's token as gRPC metadata, whatever RAY_AUTH_MODE says (Ray's loader:
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); () when there is none."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # Cython
    from ray.exceptions import AuthenticationError

    try:
        header = AuthenticationTokenLoader.instance().get_token_for_http_header(
            ignore_auth_mode=True
        )
    except AuthenticationError as e:  # e.g. RAY_AUTH_TOKEN_PATH names no readable file
        raise InferError(f"cannot read this driver's Ray authentication token: {e}") from e
    return tuple(header.items())


def _token_source() -> str:
    """Where Ray's loader took the token from, in its order, for the user's line."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH, {path}"
    return "~/.ray/auth_token"
