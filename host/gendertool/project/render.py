"""Render the firmware project: copy ``firmware/main`` and render every ``templates/**/*.j2``.

``render_project(model, board, out_dir)`` writes a complete ESP-IDF project (also buildable by
PlatformIO through the rendered ``platformio.ini``). Templates mirror their output paths with a
``.j2`` suffix; Jinja runs with ``StrictUndefined`` so a missing context key is an error, not
an empty string. Only files whose bytes changed are rewritten (rebuilds stay incremental), and
the output is deterministic: no dates, no absolute paths, sorted iteration.

The context (:func:`build_context`) is what every template sees; BUILD's
``templates/platformio.ini.j2`` uses the same one. Keys:

``gendertool_version``, ``project_name``, ``banner_text`` (lines), ``model`` (name, sha256,
size, input/output shape + quantisation, labels, ``labels_c`` (C string literals), operators,
``resolver_methods``, ``num_ops``, ``lut`` (3 rows of 256 int8), ``crop_fraction`` +
``crop_fraction_hex``, ``crop`` (the profile's mode) + ``crop_mode_cpp`` (its ``gt::CropMode``
enumerator), ``channel_order`` + ``channel_order_cpp`` (its ``gt::ChannelOrder``)), ``board`` (the :class:`~gendertool.boards.Board`), ``camera``
(:class:`~gendertool.boards.CameraPins` or None), ``input_source``, ``components`` (pinned
component versions), ``app`` (arena_bytes, inference_period_ms, selftest_tolerance,
app_partition_bytes, autostart, selftest_on_boot, model_in_psram, arena_placement),
``samples`` (name, name_c, width, height, rgb_hex, expected, expected_class),
``model_array`` (header, source from :func:`gendertool.project.carray.c_array_source`),
``sdkconfig_board`` (sorted board sdkconfig lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool import __version__
from gendertool import protocol as p
from gendertool.boards import BOARDS
from gendertool.errors import BuildError, GendertoolError, Interrupted
from gendertool.files import write_if_changed
from gendertool.model import espnn
from gendertool.model.info import arena_budget
from gendertool.model.preprocess import quant_lut
from gendertool.project.carray import (
    c_array_source,
    c_identifier,
    c_string,
    float_hex,
    int_rows,
    model_banner,
)
from gendertool.project.memory import check_fit
from gendertool.project.samples import (
    default_sample_paths,
    load_samples,
    sample_truth,
    samples_context,
)
from gendertool.resources import resource_path

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import jinja2

    from gendertool.boards import Board
    from gendertool.model.info import ModelInfo
    from gendertool.protocol import Hello


PROJECT_NAME = "gendertool"
# Preprocessing.crop -> gt::CropMode enumerator (firmware/main/image_preprocess.h)
CROP_MODES_CPP = {"center": "kCenterSquare", "none": "kWholeFrame"}
# Preprocessing.channel_order -> gt::ChannelOrder enumerator
CHANNEL_ORDERS_CPP = {"rgb": "kRgb", "bgr": "kBgr"}
INPUT_SOURCES = p.SOURCES  # the firmware's `source` command values (docs/protocol.md)

# Component versions the rendered idf_component.yml pins (reasons in firmware/README.md):
# - ESP-IDF 5.5.x: the release line of PlatformIO espressif32 6.13.0's framework-espidf; refdata
#   idf-v5.5.5 is what every API name and Kconfig symbol is checked against.
# - esp-tflite-micro 1.3.8: newest 1.3.x tag; refdata's TFLM names come from v1.3.8-11; the tag's
#   manifest asks for idf >= 5.0 (master, after the tag: >= 5.1); 5.5 meets both.
# - esp-nn 1.1.2: the last release before the 1.2.x kernel rewrites that regressed ESP32-S3
#   inference 2-12x (esp-nn #26: 0.5 s -> 6.5 s on 1.2.3; #36: 2x on 1.2.6 and 1.3.1) and
#   before the FULLY_CONNECTED misalignment bug of the 1.2.4+ dispatcher (#34, out_ch = 2 like
#   ours). esp-tflite-micro accepts it (esp-nn >= 1.1.1). ESPHome pins the same 1.1.2.
# - esp32-camera 2.1.5: newest 2.x tag (refdata's esp32-camera names), idf >= 5.1; it pulls in
#   espressif/esp_jpeg ^1.3.1 itself (listed in the docs' pin tables, not pinned here).
COMPONENTS = {
    "idf": ">=5.5.0,<5.6.0",
    "idf_series": "5.5",
    "esp_tflite_micro": "1.3.8",
    "esp_nn": "1.1.2",
    "esp32_camera": "2.1.5",
}

# Base firmware (ESP-IDF, TFLM with ESP-NN, esp32-camera, app) without model and samples; the
# app partition is this + model + samples, rounded up to 64 KiB with room to spare.
FIRMWARE_BASE_BYTES = 1_536 * 1024
PARTITION_ALIGN = 64 * 1024
MIN_APP_PARTITION = 1024 * 1024

OPTION_KEYS = {
    "samples",  # list of image paths for the built-in samples (default: firmware/samples)
    "arena_bytes",  # tensor arena override
    "inference_period_ms",
    "selftest_tolerance",
    "autostart",
    "selftest_on_boot",
    "model_in_psram",
    "arena_placement",  # "auto" | "internal" | "psram"
    "esp_nn",  # False: CONFIG_NN_ANSI_C (esp-nn's plain C kernels) instead of CONFIG_NN_OPTIMIZED
}


@dataclass
class RenderResult:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. the arena fits only in PSRAM
    memory: Any = None  # the MemoryFit the render was checked against (project.memory)

    @property
    def files(self) -> list[Path]:
        return sorted(self.written + self.unchanged)


# ---------------------------------------------------------------------------------------------
# C literals










# ---------------------------------------------------------------------------------------------
# Jinja


def make_environment(templates_dir: Path | None = None) -> "jinja2.Environment":
    """The Jinja environment every gendertool template renders in (StrictUndefined)."""
    import jinja2


    root = templates_dir or resource_path("templates")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["c_string"] = c_string
    env.filters["c_ident"] = c_identifier
    env.filters["float_hex"] = float_hex
    env.filters["hex8"] = lambda v: f"0x{int(v):x}"
    env.globals["banner"] = _banner
    return env


def _banner(lines: list[str], prefix: str) -> str:
    """The generated-file banner as comment lines (``prefix`` = "//", "#", ";")."""
    return "".join(f"{prefix} {line}".rstrip() + "\n" for line in lines)


def _banner_lines(model: "ModelInfo") -> list[str]:

    return model_banner(model.name, model.sha256, model.size).splitlines()


def _check_options(options: dict | None) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - OPTION_KEYS)
    if unknown:
        raise GendertoolError(f"unknown render option(s): {', '.join(unknown)}; valid: {', '.join(sorted(OPTION_KEYS))}")
    return options


def app_partition_size(model: "ModelInfo", board: "Board", sample_bytes: int = 0) -> int:
    """App partition for this model on this board (64 KiB aligned, BuildError if it cannot fit)."""
    need = FIRMWARE_BASE_BYTES + model.size + sample_bytes
    size = max(MIN_APP_PARTITION, -(-need * 5 // 4 // PARTITION_ALIGN) * PARTITION_ALIGN)
    if size > board.app_partition_bytes:
        if need <= board.app_partition_bytes:
            return board.app_partition_bytes // PARTITION_ALIGN * PARTITION_ALIGN
        raise BuildError(
            f"model {model.name} ({model.size:,} bytes) + firmware (~{FIRMWARE_BASE_BYTES:,} bytes) do not fit the "
            f"{board.name} app partition ({board.app_partition_bytes:,} bytes of {board.flash_size_mb} MB flash)"
        )
    return size


def check_input_source(input_source: str, board: "Board | None" = None) -> None:
    """The one check of a firmware input source (and, given a board, that it has the camera)."""
    if input_source not in INPUT_SOURCES:
        raise BuildError(f"unknown input source {input_source!r}; choose one of: {', '.join(INPUT_SOURCES)}")
    if board is not None and input_source == "camera" and not board.has_camera:
        cams = ", ".join(sorted(b for b, v in _boards().items() if v.has_camera))
        raise BuildError(f"board {board.name} has no camera; use --board {cams} or --input sample|upload")


def build_context(model: "ModelInfo", board: "Board", *, input_source: str = "sample", options: dict | None = None) -> dict:
    """Everything the templates see (documented in the module docstring)."""

    options = _check_options(options)
    check_input_source(input_source, board)
    inp, out = model.input, model.output
    if inp.dtype != "int8" or out.dtype != "int8" or len(inp.shape) != 4 or inp.shape[-1] != 3:
        raise GendertoolError(f"model {model.name}: the firmware needs an int8 [1,H,W,3] input and int8 output")
    missing = [op.name for op in model.operators if not op.resolver_method]
    if missing:
        raise GendertoolError(f"model {model.name}: TFLM cannot register operator(s) {', '.join(missing)}")

    arena = options.get("arena_bytes", model.arena_bytes)
    scratch = model.espnn_scratch_bytes
    if "arena_bytes" not in options and not options.get("esp_nn", True) and model.arena_host_bytes:
        # CONFIG_NN_ANSI_C: esp-nn's plain C kernels request (almost) no scratch; re-plan

        scratch = max((e.bytes for e in espnn.model_scratch(model.graph, optimized=False)), default=0)
        arena = arena_budget(model.graph, model.arena_host_bytes, esp_nn=False).firmware_bytes
    if not arena:
        raise GendertoolError(f"model {model.name}: tensor arena size unknown (load it with measure_arena=True)")
    arena = -(-int(arena) // 16) * 16
    placement = options.get("arena_placement", "auto")
    if placement not in ("auto", "internal", "psram"):
        raise GendertoolError(f"arena_placement must be auto, internal or psram, not {placement!r}")
    # Before anything else is computed or written: an arena that fits nowhere stops here.

    memory = check_fit(model, board, arena_bytes=arena, arena_placement=placement,
                       model_in_psram=bool(options.get("model_in_psram", False)))  # fmt: skip
    memory.raise_if_unfit()

    sample_paths = [Path(p) for p in (options["samples"] if "samples" in options else default_sample_paths())]
    images = load_samples(sample_paths)
    check_hello_fits(model, board, arena, [name for name, _ in images])
    samples = samples_context(model, images, model.arena_host_bytes)
    sample_bytes = sum(s["width"] * s["height"] * 3 for s in samples)

    lut = quant_lut(model.preprocessing, inp.scale, inp.zero_point)
    crop = model.preprocessing.crop
    if crop not in CROP_MODES_CPP:
        raise GendertoolError(f"model {model.name}: the firmware has no crop mode {crop!r}")
    order = model.preprocessing.channel_order
    if order not in CHANNEL_ORDERS_CPP:
        raise GendertoolError(f"model {model.name}: the firmware has no channel order {order!r}")
    header, source = c_array_source(model.data, "g_model_data", model_banner(model.name, model.sha256, model.size))

    return {
        "gendertool_version": __version__,
        "project_name": PROJECT_NAME,
        "banner_text": _banner_lines(model),
        "model": {
            "name": model.name,
            "name_c": c_string(model.name),
            "sha256": model.sha256,
            "size": model.size,
            "input_shape": list(inp.shape),
            "input_scale": inp.scale,
            "input_zero_point": inp.zero_point,
            "output_shape": list(out.shape),
            "output_scale": out.scale,
            "output_zero_point": out.zero_point,
            "num_classes": int(out.shape[-1]),
            "labels": list(model.labels),
            "labels_c": [c_string(label) for label in model.labels],
            "operators": [{"name": op.name, "method": op.resolver_method, "count": op.count} for op in model.operators],
            "resolver_methods": list(dict.fromkeys(op.resolver_method for op in model.operators)),
            "lut": [[int(v) for v in row] for row in lut],
            "lut_rows": [int_rows(row) for row in lut],
            "crop_fraction": model.preprocessing.crop_fraction,
            "crop_fraction_hex": float_hex(model.preprocessing.crop_fraction),
            "crop": crop,
            "crop_mode_cpp": CROP_MODES_CPP[crop],
            "channel_order": order,
            "channel_order_cpp": CHANNEL_ORDERS_CPP[order],
            "arena_host_bytes": model.arena_host_bytes,
            "espnn_scratch_bytes": scratch,
        },
        "board": board,
        "camera": board.camera,
        "input_source": input_source,
        "components": dict(COMPONENTS),
        "app": {
            "arena_bytes": arena,
            "inference_period_ms": int(options.get("inference_period_ms", 1000)),
            "selftest_tolerance": int(options.get("selftest_tolerance", 1)),
            "autostart": bool(options.get("autostart", True)),
            "selftest_on_boot": bool(options.get("selftest_on_boot", True)),
            "model_in_psram": bool(options.get("model_in_psram", False)),
            "arena_placement": placement,
            "esp_nn": bool(options.get("esp_nn", True)),
            "app_partition_bytes": app_partition_size(model, board, sample_bytes),
        },
        "samples": samples,
        "model_array": {"header": header, "source": source},
        "sdkconfig_board": [f"{k}={v}" for k, v in sorted(board.sdkconfig.items())],
        "memory": memory,
    }


# ESP-IDF's IDF_VER is `git describe` (e.g. "v5.5.3", "v5.5.3-12-g0123abcd-dirty"): room for 32.
IDF_VERSION_WIDTH = 32


def firmware_hello(model: "ModelInfo", board: "Board", arena_bytes: int, sample_names: "Sequence[str]") -> "Hello":
    """The widest hello the rendered firmware can send (app_controller.cc SendHello): the
    rendered constants (model, labels, built-in sample names and their true classes), and
    the run-time figures at their widest (u32 heap sizes, an IDF_VERSION_WIDTH-character IDF
    version, source "sample", running false)."""

    widest_u32 = 0xFFFFFFFF
    return p.Hello(
        proto=p.PROTO_VERSION, fw=__version__, board=board.name, chip=board.idf_target, model=model.name,
        model_sha256=model.sha256, labels=tuple(model.labels), input=tuple(model.input.shape),
        in_scale=float(model.input.scale), in_zp=int(model.input.zero_point), out_scale=float(model.output.scale),
        out_zp=int(model.output.zero_point), arena_bytes=int(arena_bytes), arena_used=widest_u32,
        heap_internal=widest_u32, heap_psram=widest_u32, cpu_mhz=240, idf="v" + "9" * (IDF_VERSION_WIDTH - 1),
        tflm=COMPONENTS["esp_tflite_micro"], esp_nn=COMPONENTS["esp_nn"], samples=len(sample_names),
        sample_names=tuple(sample_names), sample_truth=tuple(sample_truth(n, model.labels) for n in sample_names),
        source="sample", running=False, simulated=False,
    )  # fmt: skip


def check_hello_fits(model: "ModelInfo", board: "Board", arena_bytes: int, sample_names: "Sequence[str]") -> int:
    """Refuse labels/names whose hello record would not fit one protocol line; return its length."""

    line = len(p.encode_record(firmware_hello(model, board, arena_bytes, sample_names))) - 1  # without "\n"
    if line > p.MAX_RECORD:
        longest = max(model.labels, key=len) if model.labels else ""
        raise GendertoolError(
            f"model {model.name}: the device's hello record would be {line:,} bytes, over the protocol's "
            f"{p.MAX_RECORD:,}-byte record line (docs/protocol.md; {p.MAX_LINE:,} with its line end), so the host "
            f"could not read it; shorten the labels ({len(model.labels)} labels, {sum(map(len, model.labels)):,} "
            f"characters, longest {len(longest):,}), the model name or the sample names"
        )
    return line


def _boards():

    return BOARDS


# ---------------------------------------------------------------------------------------------
# writing


def _write(path: Path, data: bytes, result: RenderResult) -> None:
    try:
        written = write_if_changed(path, data)
    except OSError as exc:
        raise BuildError(f"cannot write {path}: {exc.strerror or exc}") from None
    (result.written if written else result.unchanged).append(path)


def render_files(context: dict, env: "jinja2.Environment | None" = None) -> dict[str, bytes]:
    """Relative output path -> bytes for every template (without writing anything)."""
    env = env or make_environment()
    files: dict[str, bytes] = {}
    for name in sorted(env.list_templates(filter_func=lambda n: n.endswith(".j2"))):
        text = env.get_template(name).render(**context)
        files[name[: -len(".j2")]] = text.encode("utf-8")
    return files


def firmware_files() -> dict[str, bytes]:
    """Relative path -> bytes of the static firmware sources (firmware/main/**)."""

    root = resource_path("firmware")
    files: dict[str, bytes] = {}
    for path in sorted((root / "main").rglob("*")):
        if path.is_file() and not path.name.startswith(".") and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def render_project(
    model: "ModelInfo",
    board: "Board",
    out_dir: Path,
    *,
    input_source: str = "sample",
    options: dict | None = None,
) -> RenderResult:
    """Render the complete firmware project for ``model`` on ``board`` into ``out_dir``."""
    out_dir = Path(out_dir)
    context = build_context(model, board, input_source=input_source, options=options)
    files = firmware_files()
    rendered = render_files(context)
    clash = sorted(set(files) & set(rendered))
    if clash:
        raise BuildError(f"template and firmware source both produce {', '.join(clash)}")
    files.update(rendered)
    result = RenderResult(out_dir=out_dir, warnings=list(context["memory"].warnings), memory=context["memory"])
    try:
        for rel in sorted(files):
            _write(out_dir / rel, files[rel], result)
    except (BuildError, KeyboardInterrupt) as exc:
        # every file is written whole (temp + rename) and compared before writing, so running
        # the render again completes the project; say how far this one got
        state = (f"{len(result.files)} of {len(files)} project files are in place in {out_dir}, "
                 f"the rest are missing or from an earlier render; run the build again to complete it")
        if isinstance(exc, KeyboardInterrupt):

            raise Interrupted(f"while rendering: {state}") from None
        raise BuildError(f"{exc}; {state}") from None
    return result
