"""gendertool build: rendering, determinism, incremental rewrites, toolchain errors, manifest.

No toolchain runs here (none is reachable on these machines): the compile paths are driven
by a small stand-in `pio` script (GENDERTOOL_PIO) that prints what PlatformIO prints, and
the manifest is built from build folders written by the tests, with a real ESP32-S3
bootloader image made by esptool so merge_bin's header patching is exercised.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest

from gendertool.project import build as builder

from gendertool.project import idf

from gendertool.project import manifest as build_manifest

from gendertool.project import partitions

from gendertool.project import platformio
from gendertool.errors import BuildError

REPO = Path(__file__).resolve().parent.parent
BOARDS = ("xiao_esp32s3", "xiao_esp32s3_sense")


# --------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bootloader_image(path: Path) -> bytes:
    """A minimal but valid ESP32-S3 image (esptool's own writer), flash params zeroed."""
    from esptool.bin_image import ESP32S3FirmwareImage, ImageSegment

    img = ESP32S3FirmwareImage()
    img.entrypoint = 0x403C8000
    seg = ImageSegment(0x3FCE3000, bytes(range(64)))
    seg.name = ".dram0.data"
    img.segments.append(seg)
    img.flash_mode = 0
    img.flash_size_freq = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(str(path))
    return path.read_bytes()


def pt_entry(ptype: int, subtype: int, offset: int, size: int, label: str) -> bytes:
    # ESP-IDF partition table record: magic AA 50, type, subtype, offset LE32, size LE32,
    # label[16], flags LE32 (written out field by field, independent of the parser).
    return (
        b"\xaa\x50"
        + bytes([ptype, subtype])
        + offset.to_bytes(4, "little")
        + size.to_bytes(4, "little")
        + label.encode().ljust(16, b"\x00")
        + (0).to_bytes(4, "little")
    )


def partition_table(app_offset: int = 0x10000) -> bytes:
    entries = pt_entry(1, 2, 0x9000, 0x6000, "nvs") + pt_entry(1, 1, 0xF000, 0x1000, "phy_init")
    entries += pt_entry(0, 0, app_offset, 0x2C0000, "factory")
    return (entries + b"\xeb\xeb" + b"\xff" * 14 + bytes(16)).ljust(0xC00, b"\xff")


def flasher_args(app_file: str, *, app_offset: str = "0x10000", mode: str = "dio", freq: str = "80m", size: str = "8MB") -> dict:
    """flasher_args.json as ESP-IDF 5.x's components/esptool_py/flasher_args.json.in renders it."""
    return {
        "write_flash_args": ["--flash_mode", mode, "--flash_size", size, "--flash_freq", freq],
        "flash_settings": {"flash_mode": mode, "flash_size": size, "flash_freq": freq},
        "flash_files": {
            "0x0": "bootloader/bootloader.bin",
            app_offset: app_file,
            "0x8000": "partition_table/partition-table.bin",
        },
        "bootloader": {"offset": "0x0", "file": "bootloader/bootloader.bin", "encrypted": "false"},
        "app": {"offset": app_offset, "file": app_file, "encrypted": "false"},
        "partition-table": {"offset": "0x8000", "file": "partition_table/partition-table.bin", "encrypted": "false"},
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": True, "chip": "esp32s3"},
    }


def fake_idf_build(out: Path) -> Path:
    b = out / "build"
    bootloader_image(b / "bootloader" / "bootloader.bin")
    (b / "partition_table").mkdir(parents=True)
    (b / "partition_table" / "partition-table.bin").write_bytes(partition_table())
    (b / "gendertool.bin").write_bytes(b"\xe9" + bytes(range(256)) * 8)
    (b / "gendertool.elf").write_bytes(b"\x7fELF" + bytes(60))
    (b / "flasher_args.json").write_text(json.dumps(flasher_args("gendertool.bin")))
    (b / "project_description.json").write_text(json.dumps({"app_elf": "gendertool.elf", "app_bin": "gendertool.bin"}))
    return b


def fake_pio_build(out: Path, env: str, *, with_flasher_args: bool) -> Path:
    b = out / ".pio" / "build" / env
    bootloader_image(b / "bootloader.bin")
    (b / "partitions.bin").write_bytes(partition_table(app_offset=0x20000))
    (b / "firmware.bin").write_bytes(b"\xe9" + b"\x5a" * 3000)
    (b / "firmware.elf").write_bytes(b"\x7fELF" + bytes(60))
    if with_flasher_args:
        (b / "flasher_args.json").write_text(json.dumps(flasher_args("gendertool.bin", app_offset="0x20000")))
    else:
        (b / "config").mkdir()
        (b / "config" / "sdkconfig.json").write_text(
            json.dumps(
                {
                    "BOOTLOADER_OFFSET_IN_FLASH": 0,
                    "PARTITION_TABLE_OFFSET": 0x8000,
                    "ESPTOOLPY_FLASHMODE": "dio",
                    "ESPTOOLPY_FLASHFREQ": "80m",
                    "ESPTOOLPY_FLASHSIZE": "8MB",
                }
            )
        )
    return b


FAKE_PIO = r'''
import os, sys
args = sys.argv[1:]
mode = os.environ["FAKE_PIO_MODE"]
with open(os.environ["FAKE_PIO_CALLS"], "a") as fp:
    fp.write(" ".join(args) + "\n")
if args[:2] == ["pkg", "list"]:
    if mode != "not-installed":
        print("└── espressif32 @ 6.13.0 (required: platformio/espressif32 @ 6.13.0)")
    sys.exit(0)
if args[:2] == ["pkg", "install"]:
    print("Platform Manager: Installing platformio/espressif32 @ 6.13.0")
    print("HTTPClientError: ")
    sys.exit(1)
if args[0] == "run":
    print("Processing xiao_esp32s3 (platform: espressif32 @ 6.13.0; board: seeed_xiao_esp32s3; framework: espidf)")
    if mode == "slow-compile-error":  # a long silent step, then a failure
        import time
        time.sleep(1.5)
        print("[1/3] Building CXX object main.cc.obj")
        time.sleep(0.6)
        mode = "compile-error"
    if mode == "tool-download-fails":
        print("Tool Manager: Installing espressif/toolchain-xtensa-esp-elf @ 14.2.0+20251107")
        print("HTTPClientError: ")
        sys.exit(1)
    if mode == "compile-error":
        print("Compiling .pio/build/xiao_esp32s3/main/main.cc.o")
        print("main/main.cc:3:1: error: 'foo' does not name a type")
        print("*** [.pio/build/xiao_esp32s3/main/main.cc.o] Error 1")
        sys.exit(1)
    if mode == "success":
        print("Compiling .pio/build/xiao_esp32s3/main/main.cc.o")
        print("RAM:   [=         ]   9.9% (used 32404 bytes from 327680 bytes)")
        print("Flash: [=         ]  12.3% (used 1031250 bytes from 8388608 bytes)")
        sys.exit(0)
sys.exit(3)
'''


@pytest.fixture
def registry(monkeypatch):
    """A listening socket standing in for PlatformIO's registry: it can be reached."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    monkeypatch.setenv(platformio.PIO_REGISTRY_ENV, f"127.0.0.1:{s.getsockname()[1]}")
    yield s
    s.close()


@pytest.fixture
def fake_pio(tmp_path, monkeypatch, registry):
    script = tmp_path / "fake_pio.py"
    script.write_text(FAKE_PIO)
    calls = tmp_path / "pio_calls.txt"
    monkeypatch.setenv(platformio.PIO_CMD_ENV, f"{sys.executable} {script}")
    monkeypatch.setenv("FAKE_PIO_CALLS", str(calls))

    def use(mode: str) -> Path:
        monkeypatch.setenv("FAKE_PIO_MODE", mode)
        return calls

    return use


def _closed_target() -> str:
    from conftest import closed_port_url

    return closed_port_url().removeprefix("socket://")


def ini(path: Path):
    from platformio.project.config import ProjectConfig

    return ProjectConfig(str(path), parse_extra=False, expand_interpolations=True)


def sdkconfig(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


# --------------------------------------------------------------------------- CLI options


def test_build_help(cli):
    r = cli("build", "--help")
    assert r.exit_code == 0
    for opt in ("--model", "--board", "--out", "--backend", "--input", "--labels", "--no-compile", "--jobs"):
        assert opt in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--backend", "make"), "unknown backend 'make'; choose one of: pio, idf"),
        (("--board", "esp8266"), "unknown board 'esp8266'; valid boards:"),
        (("--input", "webcam"), "unknown input source 'webcam'; choose one of: sample, upload, camera"),
        (("--jobs", "0"), "--jobs must be at least 1"),
        (("--input", "camera", "--board", "xiao_esp32s3"), "board xiao_esp32s3 has no camera"),
    ],
)
def test_bad_options_are_one_clear_error(cli, tmp_path, args, message):
    r = cli("build", "--no-compile", "--out", tmp_path / "out", *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("board", BOARDS)
def test_no_compile_renders_a_complete_project(cli, tmp_path, board):
    out = tmp_path / board
    r = cli("build", "--no-compile", "--board", board, "--out", out)
    assert r.exit_code == 0, r.output
    assert str(out) in r.stdout and board in r.stdout and "--no-compile" in r.stdout
    for rel in ("platformio.ini", "CMakeLists.txt", "sdkconfig.defaults", "partitions.csv", "main/CMakeLists.txt", "main/idf_component.yml"):
        assert (out / rel).is_file(), rel
    assert not (out / build_manifest.MANIFEST_NAME).exists()
    assert not (out / builder.LOG_NAME).exists()
    written = int(r.stdout.split("files")[1].split("written")[0])
    assert written == len(tree(out))


def test_no_compile_is_deterministic(cli, tmp_path):
    assert cli("build", "--no-compile", "--out", tmp_path / "a", "--labels", 'wo"man,m\\an').exit_code == 0
    assert cli("build", "--no-compile", "--out", tmp_path / "b", "--labels", 'wo"man,m\\an').exit_code == 0
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys() and a == b
    assert not any(str(tmp_path).encode() in data for data in a.values())


def test_rerender_rewrites_nothing_and_model_change_only_model_files(tmp_path, default_model):
    model = tmp_path / "m.tflite"
    shutil.copy(default_model, model)
    sidecar = default_model.with_suffix(".json")
    if sidecar.is_file():
        shutil.copy(sidecar, model.with_suffix(".json"))
    out = tmp_path / "out"
    first = builder.build(model, out_dir=out, compile=False)
    from gendertool.project.render import firmware_files

    static = {out / rel for rel in firmware_files()}
    assert static and static <= set(first.written)
    mtimes = {p: p.stat().st_mtime_ns for p in first.written}

    os.utime(model)  # touched, same bytes
    again = builder.build(model, out_dir=out, compile=False)
    assert again.written == []
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    changed = builder.build(model, out_dir=out, compile=False, labels=["left", "right"])
    assert changed.written, "new labels must change the generated settings"
    assert not set(changed.written) & static, "static firmware sources must not be rewritten"
    assert any(b'"left"' in p.read_bytes() for p in changed.written)
    assert len(changed.written) < len(first.written)


def test_no_compile_drops_a_stale_manifest(cli, tmp_path):
    out = tmp_path / "out"
    assert cli("build", "--no-compile", "--out", out).exit_code == 0
    (out / build_manifest.MANIFEST_NAME).write_text("{}")
    assert cli("build", "--no-compile", "--out", out).exit_code == 0  # nothing changed: keep it
    assert (out / build_manifest.MANIFEST_NAME).exists()
    assert cli("build", "--no-compile", "--out", out, "--labels", "x,y").exit_code == 0
    assert not (out / build_manifest.MANIFEST_NAME).exists()


# --------------------------------------------------------------------------- platformio.ini


def test_top_level_platformio_ini_parses_and_pins_the_platform():
    cfg = ini(REPO / "platformio.ini")
    assert cfg.envs() == list(BOARDS)
    assert cfg.default_envs() == ["xiao_esp32s3"]
    for env in cfg.envs():
        assert cfg.get(f"env:{env}", "platform") == f"espressif32 @ {platformio.PIO_PLATFORM_VERSION}"
        assert cfg.get(f"env:{env}", "board") == "seeed_xiao_esp32s3"
        assert cfg.get(f"env:{env}", "framework") == ["espidf"]
        assert cfg.get(f"env:{env}", "extra_scripts") == ["pre:scripts/pio_prebuild.py"]
        assert cfg.get(f"env:{env}", "custom_gendertool_board") == env
    assert (REPO / "scripts" / "pio_prebuild.py").is_file()


@pytest.mark.parametrize("board", BOARDS)
def test_rendered_platformio_ini_parses_and_matches_sdkconfig(tmp_path, board):
    from gendertool.boards import get_board

    brd = get_board(board)
    out = tmp_path / "out"
    builder.build(None, board=board, out_dir=out, compile=False)
    text = (out / "platformio.ini").read_text()
    assert text.startswith("; Generated by gendertool") and "sha256" in text.splitlines()[1].lower()
    cfg = ini(out / "platformio.ini")
    assert cfg.envs() == [board]
    sec = f"env:{board}"
    assert cfg.get(sec, "platform") == f"espressif32 @ {platformio.PIO_PLATFORM_VERSION}"
    assert cfg.get(sec, "board") == brd.pio_board
    assert cfg.get(sec, "framework") == ["espidf"]
    assert cfg.getraw("platformio", "src_dir") == "main"
    assert (out / "main" / "CMakeLists.txt").is_file()  # PlatformIO's espidf builder needs it in src_dir

    # What PlatformIO passes to esptool must agree with what ESP-IDF is configured for.
    sdk = sdkconfig(out / "sdkconfig.defaults")
    part = cfg.get(sec, "board_build.partitions")
    assert sdk["CONFIG_PARTITION_TABLE_CUSTOM"] == "y"
    assert sdk["CONFIG_PARTITION_TABLE_CUSTOM_FILENAME"] == f'"{part}"' and (out / part).is_file()
    assert sdk[f"CONFIG_ESPTOOLPY_FLASHMODE_{cfg.get(sec, 'board_build.flash_mode').upper()}"] == "y"
    assert sdk[f"CONFIG_ESPTOOLPY_FLASHFREQ_{int(cfg.get(sec, 'board_build.f_flash').rstrip('L')) // 1_000_000}M"] == "y"
    assert sdk[f"CONFIG_ESPTOOLPY_FLASHSIZE_{cfg.get(sec, 'board_upload.flash_size')}"] == "y"
    assert cfg.get(sec, "board_upload.flash_size") == f"{brd.flash_size_mb}MB"
    assert sdk.get("CONFIG_SPIRAM") == "y" and sdk.get("CONFIG_SPIRAM_MODE_OCT") == "y"


def test_prebuild_script_renders_deterministically(tmp_path):
    script = runpy.run_path(str(REPO / "scripts" / "pio_prebuild.py"), run_name="pio_prebuild")
    assert "main" in script  # loaded without SCons: nothing ran
    a = script["render"](tmp_path / "p1", "xiao_esp32s3", board="xiao_esp32s3")
    b = script["render"](tmp_path / "p2", "xiao_esp32s3", board="xiao_esp32s3")
    assert a == tmp_path / "p1" / ".pio" / "gendertool" / "xiao_esp32s3"
    assert tree(a) == tree(b) and (a / "platformio.ini").is_file()
    assert ini(a / "platformio.ini").envs() == ["xiao_esp32s3"]

    cmd = script["nested_command"]("/py", a, "xiao_esp32s3", ["checkprogsize", "upload", "__debug"], upload_port="/dev/ttyACM0")
    assert cmd == ["/py", "-m", "platformio", "run", "-d", str(a), "-e", "xiao_esp32s3", "-t", "upload", "--upload-port", "/dev/ttyACM0"]


def test_prebuild_script_reports_a_bad_board(tmp_path):
    script = runpy.run_path(str(REPO / "scripts" / "pio_prebuild.py"), run_name="pio_prebuild")
    with pytest.raises(SystemExit, match="gendertool: unknown board 'nope'"):
        script["render"](tmp_path, "nope", board="nope")


# --------------------------------------------------------------------------- missing toolchain


def _one_error(r, out: Path) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert str(out) in r.stderr.replace("\n", "")
    assert not (out / build_manifest.MANIFEST_NAME).exists()
    return errors[0]


def test_pio_platform_cannot_be_installed(cli, tmp_path, fake_pio):
    calls = fake_pio("not-installed")
    out = tmp_path / "out"
    r = cli("build", "--out", out)
    msg = _one_error(r, out)
    assert "espressif32 @ 6.13.0" in r.stderr and "could not be installed" in r.stderr and "HTTPClientError" in r.stderr
    assert msg
    assert (out / "platformio.ini").is_file()  # the rendered project is left for another machine
    log = (out / builder.LOG_NAME).read_text()
    assert "Platform Manager: Installing" in log
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("pkg list -g --only-platforms")
    assert lines[1] == "pkg install -g -p platformio/espressif32@6.13.0"
    assert len(lines) == 2  # pio run is not attempted


def test_offline_platform_install_fails_fast(cli, tmp_path, fake_pio, monkeypatch):
    import time

    calls = fake_pio("not-installed")
    target = _closed_target()
    monkeypatch.setenv(platformio.PIO_REGISTRY_ENV, target)
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = cli("build", "--out", out)
    assert time.monotonic() - t0 < 20  # no minute of retries
    msg = _one_error(r, out)
    assert "is not installed and its registry cannot be reached" in msg and target in msg
    assert "pio run -d" in msg  # where the rendered project can be built
    assert [ln.split()[:2] for ln in calls.read_text().splitlines()] == [["pkg", "list"]]  # no install attempted
    assert (out / "platformio.ini").is_file()


def test_registry_probe(registry, monkeypatch):
    assert platformio.registry_unreachable() is None  # the stand-in listens
    target = _closed_target()
    monkeypatch.setenv(platformio.PIO_REGISTRY_ENV, target)
    assert platformio.registry_unreachable().startswith(target + ": ")
    # behind a proxy PlatformIO talks to the proxy: that is what must answer
    monkeypatch.delenv(platformio.PIO_REGISTRY_ENV)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{target}")
    assert platformio.registry_unreachable().startswith(target + ": ")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{registry.getsockname()[1]}")
    assert platformio.registry_unreachable() is None


def test_piped_build_prints_each_step_and_a_heartbeat(cli, tmp_path, fake_pio, monkeypatch):
    from gendertool.cli import build as cli_build

    monkeypatch.setattr(cli_build, "HEARTBEAT_S", 0.3)
    fake_pio("slow-compile-error")
    out = tmp_path / "out"
    r = cli("build", "--out", out)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    steps = [ln for ln in lines if ln.startswith("- ")]
    assert steps[0] == "- checking the model" and "- compiling with PlatformIO (pio run)" in steps
    assert len(steps) == len(set(steps))  # one line per step
    beats = [ln for ln in lines if ln.startswith("  ... still compiling with PlatformIO (pio run): ")]
    assert len(beats) >= 3, r.stderr  # ~2 s of pio run at one beat per 0.3 s
    assert "toolchain lines" in beats[0] and "at [1/3]" in beats[-1]
    assert not any("\x1b" in ln or "\r" in ln for ln in lines)  # plain lines, no redraws


def test_heartbeat_line_says_how_far():
    from gendertool.cli.build import _BuildView

    view = _BuildView()
    view.stage("compiling with PlatformIO (pio run)")
    view.started -= 75
    for text in ("Compiling a.o", "[7/980] Building CXX object x.obj"):
        view.line(text)
    line = view.heartbeat_line(now=view.step_started + 12)
    assert line == "  ... still compiling with PlatformIO (pio run): 0:12 in this step, 1:27 in all, 2 toolchain lines, at [7/980]"


def test_pio_toolchain_download_fails(cli, tmp_path, fake_pio):
    fake_pio("tool-download-fails")
    out = tmp_path / "out"
    r = cli("build", "--out", out, "--jobs", "2")
    _one_error(r, out)
    assert "could not install the ESP32-S3 toolchain packages" in r.stderr
    assert "toolchain-xtensa-esp-elf" in r.stderr


def test_pio_not_found(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(platformio.PIO_CMD_ENV, str(tmp_path / "no-such-pio"))
    out = tmp_path / "out"
    r = cli("build", "--out", out)
    _one_error(r, out)
    assert "PlatformIO not found" in r.stderr


def test_compile_error_is_reported_with_log(cli, tmp_path, fake_pio):
    fake_pio("compile-error")
    out = tmp_path / "out"
    r = cli("build", "--out", out)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "pio run failed (exit 1)" in r.stderr and "'foo' does not name a type" in r.stderr
    assert str(out / builder.LOG_NAME) in r.stderr.replace("\n", "")
    assert "main/main.cc:3:1: error" in (out / builder.LOG_NAME).read_text()


def test_idf_backend_without_esp_idf(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("IDF_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "out"
    r = cli("build", "--backend", "idf", "--out", out)
    _one_error(r, out)
    assert "ESP-IDF not found: IDF_PATH is not set and idf.py is not on PATH" in r.stderr
    assert "v5.5.3" in r.stderr


def test_idf_backend_with_broken_idf_path(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("IDF_PATH", str(tmp_path / "esp-idf"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "out"
    r = cli("build", "--backend", "idf", "--out", out)
    _one_error(r, out)
    assert "tools/idf.py does not exist" in r.stderr


def test_idf_version_is_read_and_compared(tmp_path):
    cmake = tmp_path / "tools" / "cmake"
    cmake.mkdir(parents=True)
    (cmake / "version.cmake").write_text("set(IDF_VERSION_MAJOR 5)\nset(IDF_VERSION_MINOR 4)\nset(IDF_VERSION_PATCH 1)\n")
    version = idf.idf_version_from_path(tmp_path)
    assert version == (5, 4, 1)
    warning = idf.idf_version_warning(version, "here")
    assert "v5.4.1" in warning and "v5.5.3" in warning and "minor release" in warning
    assert "minor release" not in idf.idf_version_warning((5, 5, 1), "here")
    assert idf.idf_version_warning(idf.IDF_VERSION, "here") is None
    assert "cannot read" in idf.idf_version_warning(idf.idf_version_from_path(tmp_path / "nope"), "nope")


# --------------------------------------------------------------------------- manifest


def _check_merged(out: Path, manifest: dict, flash: tuple[str, str, str]) -> None:
    from esptool.targets import CHIP_DEFS

    merged = (out / manifest["merged"]["path"]).read_bytes()
    chip = CHIP_DEFS["esp32s3"]
    mode, freq, size = flash
    assert merged[0] == chip.ESP_IMAGE_MAGIC
    assert merged[2] == {"qio": 0, "qout": 1, "dio": 2, "dout": 3}[mode]
    assert merged[3] == chip.parse_flash_size_arg(size) + chip.parse_flash_freq_arg(freq)
    for img in manifest["images"]:
        data = (out / img["path"]).read_bytes()
        start = img["offset"]
        if img["name"] != "bootloader":  # the bootloader header is patched, the rest is copied
            assert merged[start : start + len(data)] == data
    gap = manifest["images"][0]
    boot_len = len((out / gap["path"]).read_bytes())
    assert set(merged[boot_len : manifest["images"][1]["offset"]]) == {0xFF}


def test_manifest_from_idf_build(tmp_path):
    out = tmp_path / "proj"
    fake_idf_build(out)
    output = idf.read_idf_build(out / "build")
    manifest = build_manifest.write_manifest(
        out, output, board="xiao_esp32s3", chip="esp32s3", backend="idf",
        model={"name": "m", "sha256": "ab" * 32}, sizes=builder.Sizes(1, 2, 3),
    )
    assert json.loads((out / build_manifest.MANIFEST_NAME).read_text()) == manifest
    assert manifest["schema"] == 1 and manifest["chip"] == "esp32s3" and manifest["backend"] == "idf"
    assert manifest["flash"] == {"mode": "dio", "freq": "80m", "size": "8MB"}
    assert manifest["images"] == [
        {"name": "bootloader", "offset": 0, "path": "build/bootloader/bootloader.bin"},
        {"name": "partition-table", "offset": 0x8000, "path": "build/partition_table/partition-table.bin"},
        {"name": "app", "offset": 0x10000, "path": "build/gendertool.bin"},
    ]
    assert manifest["merged"] == {"offset": 0, "path": build_manifest.MERGED_NAME}
    assert manifest["elf"] == "build/gendertool.elf"
    assert manifest["sizes"] == {"flash_bytes": 1, "dram_bytes": 2, "iram_bytes": 3}
    _check_merged(out, manifest, ("dio", "80m", "8MB"))

    # The flasher reads it as written.
    from gendertool.project.manifest import plan_flash

    plan = plan_flash(out)
    assert [(i.name, i.offset) for i in plan.images] == [("bootloader", 0), ("partition-table", 0x8000), ("app", 0x10000)]
    assert (plan.flash_mode, plan.flash_freq, plan.flash_size) == ("dio", "80m", "8MB")
    assert plan_flash(out, merged=True).images[0].offset == 0


@pytest.mark.parametrize("with_flasher_args", [True, False], ids=["flasher_args", "sdkconfig+partitions"])
def test_manifest_from_pio_build(tmp_path, with_flasher_args):
    out = tmp_path / "proj"
    fake_pio_build(out, "xiao_esp32s3", with_flasher_args=with_flasher_args)
    output = platformio.read_pio_build(out / ".pio" / "build" / "xiao_esp32s3")
    manifest = build_manifest.write_manifest(
        out, output, board="xiao_esp32s3", chip="esp32s3", backend="pio", model={"name": "m", "sha256": "0" * 64}, sizes=None
    )
    base = ".pio/build/xiao_esp32s3/"
    assert manifest["images"] == [
        {"name": "bootloader", "offset": 0, "path": base + "bootloader.bin"},
        {"name": "partition-table", "offset": 0x8000, "path": base + "partitions.bin"},
        {"name": "app", "offset": 0x20000, "path": base + "firmware.bin"},
    ]
    assert manifest["elf"] == base + "firmware.elf"
    assert manifest["sizes"] == {"flash_bytes": None, "dram_bytes": None, "iram_bytes": None}
    _check_merged(out, manifest, ("dio", "80m", "8MB"))


def test_newer_esp_idf_flasher_args_spelling(tmp_path):
    """Newer ESP-IDF registers the table as "partition_table" and writes hyphenated esptool args."""
    out = tmp_path / "proj"
    b = fake_idf_build(out)
    fa = json.loads((b / "flasher_args.json").read_text())
    fa["partition_table"] = fa.pop("partition-table")
    fa["write_flash_args"] = ["--flash-mode", "dio", "--flash-size", "8MB", "--flash-freq", "80m"]
    (b / "flasher_args.json").write_text(json.dumps(fa))
    names = [(i.name, i.offset) for i in idf.read_idf_build(b).images]
    assert names == [("bootloader", 0), ("partition-table", 0x8000), ("app", 0x10000)]
    p = fake_pio_build(tmp_path / "pio", "e", with_flasher_args=True)
    fa = json.loads((p / "flasher_args.json").read_text())
    fa["partition_table"] = fa.pop("partition-table")
    (p / "flasher_args.json").write_text(json.dumps(fa))
    assert [i.offset for i in platformio.read_pio_build(p).images] == [0, 0x8000, 0x20000]


def test_incomplete_builds_are_errors(tmp_path):
    b = fake_idf_build(tmp_path / "idf")
    (b / "gendertool.bin").unlink()
    with pytest.raises(BuildError, match="gendertool.bin but .* does not exist"):
        idf.read_idf_build(b)
    with pytest.raises(BuildError, match="flasher_args.json is missing"):
        idf.read_idf_build(tmp_path / "nothing")
    p = fake_pio_build(tmp_path / "pio", "e", with_flasher_args=False)
    (p / "config" / "sdkconfig.json").unlink()
    with pytest.raises(BuildError, match="neither flasher_args.json nor config/sdkconfig.json"):
        platformio.read_pio_build(p)
    (p / "firmware.bin").unlink()
    with pytest.raises(BuildError, match="has no firmware.bin"):
        platformio.read_pio_build(p)


def test_partition_table_parsing():
    table = partitions.parse_partition_table(partition_table(app_offset=0x30000))
    assert [(p["label"], p["type"], p["subtype"], p["offset"]) for p in table] == [
        ("nvs", 1, 2, 0x9000), ("phy_init", 1, 1, 0xF000), ("factory", 0, 0, 0x30000)
    ]
    assert partitions.boot_app_partition(table)["offset"] == 0x30000
    ota = [{"type": 0, "subtype": 0x11, "offset": 0x200000}, {"type": 0, "subtype": 0x10, "offset": 0x100000}]
    assert partitions.boot_app_partition(ota)["offset"] == 0x100000  # ota_0 when there is no factory app
    with pytest.raises(BuildError, match="no partition entries"):
        partitions.parse_partition_table(b"\xff" * 64)
    with pytest.raises(BuildError, match="no app partition"):
        partitions.boot_app_partition([{"type": 1, "subtype": 2, "offset": 0x9000}])


# --------------------------------------------------------------------------- sizes


def test_pio_size_lines():
    lines = [
        "Advanced Memory Usage is available via \"PlatformIO Home > Project Inspect\"",
        "RAM:   [=         ]   9.9% (used 32404 bytes from 327680 bytes)",
        "Flash: [==        ]  12.3% (used 1031250 bytes from 8388608 bytes)",
    ]
    s = platformio.parse_pio_sizes(lines)
    assert (s.flash_bytes, s.flash_total, s.dram_bytes, s.dram_total, s.iram_bytes) == (1031250, 8388608, 32404, 327680, None)
    assert platformio.parse_pio_sizes(["nothing here"]) == builder.Sizes()


@pytest.mark.parametrize("abbrev", [True, False], ids=["abbreviated", "full-names"])
def test_idf_size_json2(abbrev):
    report = {
        "version": "1.0",
        "layout": [
            {"name": "IRAM", "total": 16384, "used": 16383, "free": 1, "parts": {".text": {"size": 15356}, ".vectors": {"size": 1027}}},
            {"name": "Flash Code", "total": 33554400, "used": 700000, "free": 0, "parts": {".text": {"size": 700000}}},
            {"name": "Flash Data", "total": 33554400, "used": 300000, "free": 0, "parts": {".rodata": {"size": 300000}}},
            {"name": "DIRAM", "total": 341760, "used": 90000, "free": 251760,
             "parts": {".iram0.text": {"size": 40000}, ".dram0.data": {"size": 20000}, ".dram0.bss": {"size": 30000}}},
        ],
    }
    if abbrev:  # esp-idf-size's default output: .iram0.text -> .text, .dram0.bss -> .bss, ...
        diram = report["layout"][3]
        diram["parts"] = {".text": {"size": 40000}, ".data": {"size": 20000}, ".bss": {"size": 30000}}
    lines = ["Executing action: size", *json.dumps(report, indent=4).splitlines()]
    s = idf.parse_idf_size_json(lines)
    assert (s.flash_bytes, s.dram_bytes, s.iram_bytes, s.dram_total) == (1_000_000, 50_000, 56_383, 341760)
    assert idf.parse_idf_size_json(["no json"]) is None


# --------------------------------------------------------------------------- a whole run with a stand-in toolchain


def test_build_with_stand_in_pio_writes_manifest_and_reports_sizes(cli, tmp_path, fake_pio):
    """Wiring only: after `pio run` exits 0 the build folder is read, sizes parsed, manifest written."""
    calls = fake_pio("success")
    out = tmp_path / "out"
    fake_pio_build(out, "xiao_esp32s3", with_flasher_args=True)
    r = cli("build", "--out", out, "--jobs", "3")
    assert r.exit_code == 0, r.output
    assert f"pkg list -g --only-platforms -p {platformio.PIO_PLATFORM_SPEC}" in calls.read_text()
    assert f"run -d {out} -e xiao_esp32s3 -j 3" in calls.read_text()
    manifest = json.loads((out / build_manifest.MANIFEST_NAME).read_text())
    assert manifest["backend"] == "pio" and manifest["board"] == "xiao_esp32s3"
    assert manifest["model"]["sha256"] in (out / "platformio.ini").read_text()
    assert manifest["sizes"] == {"flash_bytes": 1031250, "dram_bytes": 32404, "iram_bytes": None}
    assert "manifest" in r.stdout and str(out / build_manifest.MANIFEST_NAME) in r.stdout.replace("\n", "")
    assert "Processing xiao_esp32s3" in (out / builder.LOG_NAME).read_text()


def test_prebuild_script_main_renders_then_delegates(tmp_path, monkeypatch):
    """main(env) as PlatformIO runs it: options from the env, render, nested `pio run`, exit code."""
    import types

    script = runpy.run_path(str(REPO / "scripts" / "pio_prebuild.py"), run_name="pio_prebuild")
    fake_scons = types.ModuleType("SCons.Script")
    fake_scons.ARGUMENTS = {"PIOVERBOSE": "0"}
    fake_scons.COMMAND_LINE_TARGETS = ["upload"]
    monkeypatch.setitem(sys.modules, "SCons.Script", fake_scons)
    calls = []
    monkeypatch.setattr(script["subprocess"], "call", lambda cmd: calls.append(cmd) or 7)

    class Env:
        options = {"custom_gendertool_board": "xiao_esp32s3_sense", "custom_gendertool_input": "camera",
                   "custom_gendertool_model": "", "custom_gendertool_labels": "f,m"}
        values = {"$PIOENV": "sense", "$PROJECT_DIR": str(tmp_path), "$PYTHONEXE": "/py", "$UPLOAD_PORT": ""}
        exited = None

        def subst(self, key):
            return self.values[key]

        def GetProjectOption(self, name, default=None):
            return self.options.get(name, default)

        def Exit(self, code):
            Env.exited = code

    script["main"](Env())
    out = tmp_path / ".pio" / "gendertool" / "sense"
    assert Env.exited == 7
    assert calls == [["/py", "-m", "platformio", "run", "-d", str(out), "-e", "xiao_esp32s3_sense", "-t", "upload"]]
    assert ini(out / "platformio.ini").envs() == ["xiao_esp32s3_sense"]
    settings = (out / "main" / "model_settings.cc").read_text()
    assert '"f"' in settings and '"m"' in settings


FAKE_IDF = r'''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_IDF_CALLS"], "a") as fp:
    fp.write(" ".join(args) + "\n")
action = args[4]
if os.environ["FAKE_IDF_MODE"] == "no-env" and action == "set-target":
    print("ERROR: ESP-IDF Python virtual environment not found. Please run the install script.")
    sys.exit(1)
if action == "build":
    print("[1/2] Building C object esp-idf/main/CMakeFiles/__idf_main.dir/main.cc.obj")
    print("[2/2] Generating binary image from built executable")
    print("gendertool.bin binary size 0x10a2b0 bytes. Smallest app partition is 0x2c0000 bytes.")
    sys.exit(0)
if action == "size":
    print("Executing action: size")
    print(json.dumps({"version": "1.0", "layout": [
        {"name": "DIRAM", "total": 341760, "used": 60000, "free": 0, "parts": {".data": {"size": 20000}, ".bss": {"size": 30000}, ".text": {"size": 10000}}},
        {"name": "IRAM", "total": 16384, "used": 16000, "free": 384, "parts": {".text": {"size": 16000}}},
        {"name": "Flash Code", "total": 1, "used": 800000, "free": 0, "parts": {}},
        {"name": "Flash Data", "total": 1, "used": 290000, "free": 0, "parts": {}}]}, indent=4))
    sys.exit(0)
sys.exit(0)
'''


@pytest.fixture
def fake_idf(tmp_path, monkeypatch):
    idf = tmp_path / "esp-idf"
    (idf / "tools" / "cmake").mkdir(parents=True)
    (idf / "tools" / "idf.py").write_text(FAKE_IDF)
    monkeypatch.setenv("IDF_PATH", str(idf))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    calls = tmp_path / "idf_calls.txt"
    monkeypatch.setenv("FAKE_IDF_CALLS", str(calls))

    def use(mode: str, version: tuple[int, int, int]) -> Path:
        monkeypatch.setenv("FAKE_IDF_MODE", mode)
        (idf / "tools" / "cmake" / "version.cmake").write_text(
            "".join(f"set(IDF_VERSION_{k} {v})\n" for k, v in zip(("MAJOR", "MINOR", "PATCH"), version))
        )
        return calls

    return use


def test_idf_environment_not_exported_and_version_warning(cli, tmp_path, fake_idf):
    calls = fake_idf("no-env", (5, 4, 1))
    out = tmp_path / "out"
    r = cli("build", "--backend", "idf", "--out", out)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "warning: ESP-IDF v5.4.1 found" in r.stderr and "v5.5.3" in r.stderr
    assert "idf.py set-target esp32s3 failed (exit 1)" in r.stderr and "export.sh" in r.stderr
    assert calls.read_text().splitlines() == [f"-C {out} -B {out / 'build'} set-target esp32s3"]


def test_build_with_stand_in_idf_py_writes_manifest(cli, tmp_path, fake_idf):
    """Wiring only: idf.py build + size, then flasher_args.json -> manifest, json2 -> sizes."""
    calls = fake_idf("ok", idf.IDF_VERSION)
    out = tmp_path / "out"
    fake_idf_build(out)
    (out / "build" / "CMakeCache.txt").write_text("")  # configured before: no set-target
    r = cli("build", "--backend", "idf", "--out", out)
    assert r.exit_code == 0, r.output
    assert "warning: ESP-IDF" not in r.stderr  # the pinned version: no version warning
    assert calls.read_text().splitlines() == [
        f"-C {out} -B {out / 'build'} build",
        f"-C {out} -B {out / 'build'} size --format json2",
    ]
    manifest = json.loads((out / build_manifest.MANIFEST_NAME).read_text())
    assert manifest["backend"] == "idf"
    assert [i["path"] for i in manifest["images"]] == [
        "build/bootloader/bootloader.bin", "build/partition_table/partition-table.bin", "build/gendertool.bin"
    ]
    assert manifest["sizes"] == {"flash_bytes": 1_090_000, "dram_bytes": 50_000, "iram_bytes": 26_000}
    assert "[2/2]" in (out / builder.LOG_NAME).read_text()


def test_build_says_the_internal_ram_margin_with_the_measured_static_ram(cli, tmp_path, fake_pio):
    """issue 20, item 7: after a compile the size report's .data/.bss (PlatformIO: RAM 32,404 bytes)
    replaces the stand-in link's 28,275 in the internal-RAM budget."""
    fake_pio("success")
    out = tmp_path / "out"
    fake_pio_build(out, "xiao_esp32s3", with_flasher_args=True)
    r = cli("build", "--out", out)
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.replace("│", " ").split())
    assert f"internal RAM: about {230_218 + 28_275 - 32_404:,} bytes for the arena" in text
    assert "(static .data/.bss measured by the build, IRAM code estimated)" in text
