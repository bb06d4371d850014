"""Click options for running a model, written once here and reused by `bench`, `inspect`,
`convert` and `train`: each group is a decorator that hands the command one typed object
(ForeignOptions, RuntimeOptions, RuntimeSweep, ResizeOverrides), its values checked as
click reads them. `infer`'s own groups (its job, its engine) are in infer/cli.py."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from cnnbench.infer.decode.resize import (
    CROP_PCT_RANGE,
    CropMode,
    Interpolation,
    ResizePolicy,
    crop_pct_ok,
)
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


def option_group(
    name: str, params: Callable[[], list[click.Option]], build: Callable[..., Any]
) -> Callable[[Callable], Callable]:
    """A decorator that adds `params` (made fresh for each command) where it stands and
    hands the command one argument, `name`, built by `build` from their values (as
    keyword arguments) instead of one argument per option. Each option checks its own
    range as click reads it, so `build` only assembles."""

    def decorate(f: Callable) -> Callable:
        options = params()
        names = [option.name for option in options if option.name]

        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in names}
            return f(*args, **{name: build(**values)}, **kwargs)

        # click reverses the list when it makes the command: the group shows in order
        command.__click_params__ = [  # type: ignore[attr-defined]  # click's own attribute
            *getattr(f, "__click_params__", ()),
            *reversed(options),
        ]
        return command

    return decorate


def _size(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[int, int] | None:
    return parse_size(text)


def _floats(
    ctx: click.Context, param: click.Parameter, text: str | None
) -> tuple[float, ...] | None:
    return parse_floats(text)


def _std(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[float, ...] | None:
    values = parse_floats(text)
    if values is not None and 0 in values:
        numbers = ",".join(f"{v:g}" for v in values)
        raise click.UsageError(f"--std has a 0 ({numbers}): std divides", ctx)
    return values


def _scale(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.UsageError(f"--scale must be positive, got {value:g}", ctx)
    return value


def _crop_pct(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not crop_pct_ok(value):
        raise click.UsageError(f"--crop-pct must be in {CROP_PCT_RANGE}, got {value:g}", ctx)
    return value


def resize_params() -> list[click.Option]:
    """--crop-mode, --crop-pct, --interpolation: how a decoded image becomes the input size."""
    return [
        click.Option(
            ["--crop-mode"],
            type=click.Choice(list(CropMode), case_sensitive=False),
            help="center: keep the aspect ratio, shorter side to size/crop-pct, centre crop; "
            "squash: the whole image to size/crop-pct, centre crop.",
        ),
        click.Option(
            ["--crop-pct"],
            type=float,
            callback=_crop_pct,
            help=f"Resize to size/F before the centre crop, F in {CROP_PCT_RANGE} "
            "(ImageNet evaluation: 0.875).",
        ),
        click.Option(
            ["--interpolation"],
            type=click.Choice(list(Interpolation), case_sensitive=False),
            help="Resize filter. area: OpenCV INTER_AREA when shrinking, bilinear otherwise; "
            "bilinear-aa/bicubic-aa: Pillow's antialiasing filters on a full-size decode "
            "(torchvision's pixels).",
        ),
    ]


@dataclass(frozen=True)
class ResizeOverrides:
    """--crop-mode, --crop-pct, --interpolation as given (None: not given)."""

    crop_mode: CropMode | None = None
    crop_pct: float | None = None
    interpolation: Interpolation | None = None

    def applied_to(self, base: ResizePolicy) -> ResizePolicy:
        return base.overridden(self.crop_mode, self.crop_pct, self.interpolation)


def _resize_overrides(
    crop_mode: str | None, crop_pct: float | None, interpolation: str | None
) -> ResizeOverrides:
    return ResizeOverrides(
        CropMode(crop_mode) if crop_mode else None,
        crop_pct,
        Interpolation(interpolation) if interpolation else None,
    )


resize_options = option_group("resize", resize_params, _resize_overrides)
"""The resize options as one `resize: ResizeOverrides` argument (`train`)."""


def foreign_params(labels: bool = True) -> list[click.Option]:
    """Every option that says how to feed a model without a cnnbench spec and read its
    output, in the order help shows them: the one list infer, bench, inspect and convert
    take (convert keeps its own --labels, which Keras input takes too)."""
    shape = [
        click.Option(
            ["--layout"],
            type=click.Choice(list(Layout), case_sensitive=False),
            help="Foreign models: input layout.",
        ),
        click.Option(
            ["--size"],
            callback=_size,
            help="Foreign models: input size N or HxW (needed when height/width are dynamic).",
        ),
    ]
    pixels = [
        click.Option(
            ["--preset"],
            type=click.Choice(list(Preset), case_sensitive=False),
            help="Models without a cnnbench spec: how their pixels are prepared "
            "(see docs/models.md); the options after it override its parts.",
        ),
        click.Option(
            ["--mean"],
            callback=_floats,
            help="Per-channel mean after --scale, e.g. 0.485,0.456,0.406.",
        ),
        click.Option(
            ["--std"],
            callback=_std,
            help="Per-channel std after --scale, e.g. 0.229,0.224,0.225 (no zeros).",
        ),
        click.Option(
            ["--scale"],
            type=float,
            callback=_scale,
            help="Multiply 0..255 pixels by this first (e.g. 0.00392157); positive.",
        ),
        click.Option(["--bgr"], is_flag=True, default=None, help="Feed BGR instead of RGB."),
    ]
    output = [
        click.Option(
            ["--output-name"],
            help="The output to read (default: the one shaped [batch, classes]).",
        ),
        click.Option(
            ["--scores"],
            type=click.Choice(list(ScoreMode), case_sensitive=False),
            default=ScoreMode.AUTO.value,
            show_default=True,
            help="auto: softmax unless the output rows already are probabilities.",
        ),
    ]
    label_file = click.Option(
        ["--labels"],
        type=click.Path(exists=True, dir_okay=False),
        help="Foreign models: labels file, one per line.",
    )
    return [*shape, *pixels, *resize_params(), *output, *([label_file] if labels else [])]


FOREIGN_NAMES = tuple(option.name or "" for option in foreign_params())
"""The parameter names of the foreign options (for checks of which were given)."""


def foreign_from(
    *,
    layout: str | None = None,
    size: tuple[int, int] | None = None,
    preset: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    scale: float | None = None,
    bgr: bool | None = None,
    crop_mode: str | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    output_name: str | None = None,
    scores: str | None = None,
    labels: str | None = None,
) -> ForeignOptions:
    """The ForeignOptions from the group's values, as click passes them (checked)."""
    resize = _resize_overrides(crop_mode, crop_pct, interpolation)
    return ForeignOptions(
        layout=Layout(layout) if layout else None,
        size=size,
        mean=mean,
        std=std,
        scale=scale,
        bgr=bgr or None,
        labels_path=labels,
        preset=Preset(preset) if preset else None,
        crop_mode=resize.crop_mode,
        crop_pct=resize.crop_pct,
        interpolation=resize.interpolation,
        output_name=output_name,
        scores=ScoreMode(scores or ScoreMode.AUTO),
    )


def foreign_preprocessing_options(f: Callable | None = None, *, labels: bool = True) -> Callable:
    """The foreign options (FOREIGN_NAMES) as one `foreign: ForeignOptions` argument.
    `@foreign_preprocessing_options` or, for a command with a --labels of its own,
    `@foreign_preprocessing_options(labels=False)`."""
    group = option_group("foreign", lambda: foreign_params(labels), foreign_from)
    return group(f) if f is not None else group


def default_trt_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnnbench", "tensorrt")


def runtime_params(many: bool = False) -> list[click.Option]:
    """--provider, --device-id, --threads, --precision-hint, --trt-cache, --fp16. With
    `many`, --provider and --precision-hint take comma-separated lists and --provider
    defaults to every provider that loads (`bench`)."""
    hint = "OpenVINO: inference precision; auto = the device's default (bf16 where the CPU has it)."
    if many:
        provider = click.Option(
            ["--provider", "providers"],
            callback=parse_providers,
            help="Comma-separated: cpu,cuda,tensorrt,openvino. Default: every provider that loads.",
        )
        precision = click.Option(
            ["--precision-hint", "precision_hints"],
            default="auto",
            show_default=True,
            callback=parse_precision_hints,
            help=hint + " Comma-separated: one configuration each, e.g. f32,bf16.",
        )
    else:
        provider = click.Option(
            ["--provider"],
            type=click.Choice(list(Provider), case_sensitive=False),
            default=Provider.AUTO,
            show_default=True,
            help="auto = CUDA when a CUDA session really loads, else CPU.",
        )
        precision = click.Option(
            ["--precision-hint"],
            type=click.Choice(PRECISION_HINTS, case_sensitive=False),
            default="auto",
            show_default=True,
            help=hint + " The provider line says the precision that really ran.",
        )
    return [
        provider,
        click.Option(
            ["--device-id"],
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="GPU index for cuda/tensorrt.",
        ),
        click.Option(
            ["--threads"],
            type=click.IntRange(min=0),
            default=0,
            help="ONNX Runtime intra-op threads (0 = all cores).",
        ),
        precision,
        click.Option(
            ["--trt-cache"],
            type=click.Path(file_okay=False),
            default=default_trt_cache,
            show_default="~/.cache/cnnbench/tensorrt",
            help="TensorRT: engine and timing cache folder (the first run builds, later ones "
            "load).",
        ),
        click.Option(
            ["--fp16"],
            is_flag=True,
            help="TensorRT: allow fp16 kernels (faster, small accuracy loss).",
        ),
    ]


def _runtime(
    provider: str,
    device_id: int,
    threads: int,
    precision_hint: str,
    trt_cache: str,
    fp16: bool,
) -> RuntimeOptions:
    return RuntimeOptions(
        provider=Provider(provider),
        device_id=device_id,
        threads=threads,
        trt_cache=trt_cache,
        trt_fp16=fp16,
        precision_hint=precision_hint,
    )


runtime_options = option_group("runtime", runtime_params, _runtime)
"""The runtime options as one `runtime: RuntimeOptions` argument (`infer`)."""


@dataclass(frozen=True)
class RuntimeSweep:
    """`bench`'s runtime options: the providers and precision hints to measure (None:
    every provider that loads) and the rest of the runtime, the same for each."""

    providers: tuple[Provider, ...] | None
    precision_hints: tuple[str, ...]
    runtime: RuntimeOptions


def _sweep(
    providers: tuple[Provider, ...] | None,
    precision_hints: tuple[str, ...],
    device_id: int,
    threads: int,
    trt_cache: str,
    fp16: bool,
) -> RuntimeSweep:
    runtime = RuntimeOptions(Provider.CPU, device_id, threads, trt_cache=trt_cache, trt_fp16=fp16)
    return RuntimeSweep(providers, precision_hints, runtime)


runtime_sweep_options = option_group("runtimes", lambda: runtime_params(many=True), _sweep)
"""The runtime options with lists, as one `runtimes: RuntimeSweep` argument (`bench`)."""


def given_options(names: tuple[str, ...]) -> list[str]:
    """Those of the current command's `names` given on the command line, as --options."""
    ctx = click.get_current_context()
    return [
        f"--{name.replace('_', '-')}"
        for name in names
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
