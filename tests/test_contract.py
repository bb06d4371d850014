"""The model contract's spec: round trip, and validation that names the bad key."""

from __future__ import annotations

import json

import pytest

from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.contract import SPEC_KEY, ModelSpec, read_spec

GOOD = {"input_size": [28, 28], "channels": 1, "labels": ["a", "b"], "architecture": "x"}


def test_round_trip() -> None:
    spec = ModelSpec(
        input_size=(32, 48),
        channels=3,
        labels=("cat", "dög"),
        architecture="mlp",
        versions={"onnx": "1"},
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert read_spec({SPEC_KEY: spec.to_json()}) == spec
    assert read_spec({}) is None


def test_unknown_keys_are_ignored() -> None:
    spec = ModelSpec.from_json(json.dumps(GOOD | {"future_key": 1}))
    assert spec.labels == ("a", "b")
    assert spec.num_classes == 2


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"input_size": [28]}, "input_size"),
        ({"input_size": [28, -1]}, "input_size"),
        ({"channels": 4}, "channels"),
        ({"labels": []}, "labels"),
        ({"labels": "ab"}, "labels"),
        ({"format_version": 99}, "format_version"),
        ({"channel_order": "XYZ"}, "channel_order"),
        ({"opset": "17"}, "opset"),
        ({"architecture": 5}, "architecture"),
    ],
)
def test_malformed_spec_names_the_key(change: dict, key: str) -> None:
    with pytest.raises(InferError, match=key):
        ModelSpec.from_json(json.dumps(GOOD | change))


@pytest.mark.parametrize("missing", ["input_size", "channels", "labels"])
def test_missing_key_is_named(missing: str) -> None:
    data = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(InferError, match=missing):
        ModelSpec.from_json(json.dumps(data))


def test_not_json() -> None:
    with pytest.raises(InferError, match="not valid JSON"):
        ModelSpec.from_json("{oops")
