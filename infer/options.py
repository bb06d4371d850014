"""Click options for running a model, written once here and reused by `bench`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import click

from cnnbench.infer.decode.resize import CropMode, Interpolation
from cnnbench.infer.engines.job import Engine, RayOptions
from cnnbench.infer.runtime.preprocess import ForeignOptions, Layout, Preset
from cnnbench.infer.runtime.scores import ScoreMode
from cnnbench.infer.runtime.session import Provider, RuntimeOptions

PRECISION_HINTS = ("auto", "f32", "bf16")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'224' or '224x192' (height x width) -> (h, w)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 1:
        raise click.BadParameter(f"expected N or HxW with positive integers, got {text!r}")
    return (values[0], values[-1])


def parse_floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}")
    return values


def parse_providers(
    ctx: click.Context | None, param: click.Parameter | None, text: str | None
) -> tuple[Provider, ...] | None:
    """'cpu,cuda' -> (CPU, CUDA); None, 'all' or 'auto' -> None (every provider that loads)."""
    if text is None or text.strip().lower() in ("all", "auto"):
        return None
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = [p.value for p in Provider if p is not Provider.AUTO]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown provider {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(known)} (comma-separated) or all"
        )
    return tuple(dict.fromkeys(Provider(n) for n in names))


def runtime_options(f: Callable | None = None, *, provider_list: bool = False) -> Callable:
    """--provider, --device-id, --threads. With `provider_list`, --provider takes a
    comma-separated list and defaults to every provider that loads (`bench`)."""
    if f is None:
        return lambda g: runtime_options(g, provider_list=provider_list)
    provider = (
        click.option(
            "--provider",
            "providers",
            callback=parse_providers,
            help="Comma-separated: cpu,cuda,tensorrt,openvino. Default: every provider that loads.",
        )
        if provider_list
        else click.option(
            "--provider",
            type=click.Choice(list(Provider), case_sensitive=False),
            default=Provider.AUTO,
            show_default=True,
            help="auto = CUDA when a CUDA session really loads, else CPU.",
        )
    )
    for option in reversed(
        [
            provider,
            click.option(
                "--device-id",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="GPU index for cuda/tensorrt.",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=0),
                default=0,
                help="ONNX Runtime intra-op threads (0 = all cores).",
            ),
            precision_hint_option(provider_list),
        ]
    ):
        f = option(f)
    return f


def parse_precision_hints(
    ctx: click.Context | None, param: click.Parameter | None, text: str
) -> tuple[str, ...]:
    """'f32,bf16' -> ('f32', 'bf16'); each of f32, bf16, auto."""
    hints = tuple(dict.fromkeys(h.strip().lower() for h in text.split(",") if h.strip()))
    bad = [h for h in hints if h not in PRECISION_HINTS]
    if bad or not hints:
        raise click.BadParameter(
            f"unknown precision hint {', '.join(bad) or repr(text)}; choose from "
            f"{', '.join(PRECISION_HINTS)} (comma-separated)"
        )
    return hints


def precision_hint_option(many: bool) -> Callable:
    """--precision-hint: OpenVINO's INFERENCE_PRECISION_HINT (a list for `bench`)."""
    text = "OpenVINO: inference precision; auto = the device's default (bf16 where the CPU "
    if many:
        return click.option(
            "--precision-hint",
            "precision_hints",
            default="auto",
            show_default=True,
            callback=parse_precision_hints,
            help=text + "has it). Comma-separated: one configuration each, e.g. f32,bf16.",
        )
    return click.option(
        "--precision-hint",
        type=click.Choice(PRECISION_HINTS, case_sensitive=False),
        default="auto",
        show_default=True,
        help=text + "has it). The provider line says the precision that really ran.",
    )


def shape_options(f: Callable) -> Callable:
    """--layout and --size, for foreign models that do not say their input."""
    f = click.option(
        "--size", help="Foreign models: input size N or HxW (needed when height/width are dynamic)."
    )(f)
    return click.option(
        "--layout",
        type=click.Choice(list(Layout), case_sensitive=False),
        help="Foreign models: input layout.",
    )(f)


def resize_options(f: Callable) -> Callable:
    """--crop-mode, --crop-pct, --interpolation: how a decoded image becomes the input size."""
    for option in (
        click.option(
            "--interpolation",
            type=click.Choice(list(Interpolation), case_sensitive=False),
            help="Resize filter. area: OpenCV INTER_AREA when shrinking, bilinear otherwise.",
        ),
        click.option(
            "--crop-pct",
            type=float,
            help="Resize to size/F before the centre crop (ImageNet evaluation: 0.875).",
        ),
        click.option(
            "--crop-mode",
            type=click.Choice(list(CropMode), case_sensitive=False),
            help="center: keep the aspect ratio, shorter side to size/crop-pct, centre crop; "
            "squash: the whole image to size/crop-pct, centre crop.",
        ),
    ):
        f = option(f)
    return f


def preprocess_options(f: Callable) -> Callable:
    """--preset and its parts (--mean, --std, --scale, --bgr and the resize options)."""
    f = resize_options(f)
    for option in (
        click.option("--bgr", is_flag=True, default=None, help="Feed BGR instead of RGB."),
        click.option(
            "--scale", type=float, help="Multiply 0..255 pixels by this first (e.g. 0.00392157)."
        ),
        click.option("--std", help="Per-channel std after --scale, e.g. 0.229,0.224,0.225."),
        click.option("--mean", help="Per-channel mean after --scale, e.g. 0.485,0.456,0.406."),
        click.option(
            "--preset",
            type=click.Choice(list(Preset), case_sensitive=False),
            help="Models without a cnnbench spec: how their pixels are prepared "
            "(see docs/models.md); the options after it override its parts.",
        ),
    ):
        f = option(f)
    return f


def output_options(f: Callable) -> Callable:
    """--output-name, --scores: which output is the classifier and how it becomes scores."""
    f = click.option(
        "--scores",
        type=click.Choice(list(ScoreMode), case_sensitive=False),
        default=ScoreMode.AUTO.value,
        show_default=True,
        help="auto: softmax unless the output rows already are probabilities.",
    )(f)
    return click.option(
        "--output-name", help="The output to read (default: the one shaped [batch, classes])."
    )(f)


def foreign_options(
    *,
    layout: str | None = None,
    size: str | None = None,
    preset: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    scale: float | None = None,
    bgr: bool | None = None,
    crop_mode: str | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    labels: str | None = None,
    output_name: str | None = None,
    scores: str | None = None,
) -> ForeignOptions:
    """The ForeignOptions from a command's options, as click passes them (those a command
    does not have stay None)."""
    return ForeignOptions(
        layout=Layout(layout) if layout else None,
        size=parse_size(size),
        mean=parse_floats(mean),
        std=parse_floats(std),
        scale=scale,
        bgr=bgr or None,
        labels_path=labels,
        preset=Preset(preset) if preset else None,
        crop_mode=CropMode(crop_mode) if crop_mode else None,
        crop_pct=crop_pct,
        interpolation=Interpolation(interpolation) if interpolation else None,
        output_name=output_name,
        scores=ScoreMode(scores or ScoreMode.AUTO),
    )


def default_trt_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnnbench", "tensorrt")


def tensorrt_options(f: Callable) -> Callable:
    """--trt-cache, --fp16 (TensorRT only)."""
    f = click.option(
        "--fp16", is_flag=True, help="TensorRT: allow fp16 kernels (faster, small accuracy loss)."
    )(f)
    return click.option(
        "--trt-cache",
        type=click.Path(file_okay=False),
        default=default_trt_cache,
        show_default="~/.cache/cnnbench/tensorrt",
        help="TensorRT: engine and timing cache folder (the first run builds, later ones load).",
    )(f)


def make_runtime(provider: str, device_id: int, threads: int, **extra: Any) -> RuntimeOptions:
    return RuntimeOptions(
        provider=Provider(provider), device_id=device_id, threads=threads, **extra
    )


def ray_options(f: Callable) -> Callable:
    """--engine and the options of the Ray engine."""
    for option in (
        click.option(
            "--block-size",
            type=click.IntRange(min=1),
            default=RayOptions.block_size,
            show_default=True,
            help="Ray: files per block (the unit of shards and --resume).",
        ),
        click.option(
            "--num-gpus-per-worker",
            type=click.FloatRange(min=0),
            help="Ray: GPUs per inference actor. Default: 1 with --provider cuda or "
            "tensorrt, else 0.",
        ),
        click.option(
            "--address",
            help="Ray: cluster address, auto or HOST:PORT or "
            "ray://HOST:PORT. Default: $RAY_ADDRESS, else a running cluster, else a "
            "local one started for the run.",
        ),
        click.option(
            "--engine",
            type=click.Choice(list(Engine), case_sensitive=False),
            default=Engine.LOCAL.value,
            show_default=True,
            help="local: this machine; ray: a Ray Data job (pip install 'cnnbench[ray]').",
        ),
    ):
        f = option(f)
    return f
