"""The rendered project against the upstream names it builds on (offline).

- every CONFIG_ key in sdkconfig.defaults* is a Kconfig symbol of ESP-IDF v5.5.5, esp-nn,
  esp32-camera (refdata) or of the rendered Kconfig.projbuild, and not a deprecated name;
- every ESP-IDF / esp32-camera / TFLM identifier the firmware uses is in refdata, and the
  explicit list below is exactly what the sources use (it cannot rot either way);
- main/idf_component.yml passes idf-component-manager's own manifest validation;
- main/Kconfig.projbuild passes esp-idf-kconfig's kconfcheck and parses with kconfiglib.
Tests reading ../shared skip cleanly when it is absent (refdata fixture).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gendertool.boards import BOARDS, get_board
from gendertool.project.render import render_project
from gendertool.resources import resource_path

FW_MAIN = resource_path("firmware") / "main"
PORTABLE = {"image_preprocess.h", "image_preprocess.cc", "inference_stats.h", "protocol.h", "protocol.cc", "app_controller.h",
            "app_controller.cc", "tx_queue.h", "tx_queue.cc", "arena_setup.h", "arena_setup.cc"}

# name -> (refdata list, upstream file it is declared in, checked there)
IDF = "idf-v5.5.5/idf_api_symbols.txt"
MEMBERS = "idf-v5.5.5/idf_api_members.txt"
TFLM = "tflm_api_symbols.txt"
KCONFIG = "idf-v5.5.5/kconfig_symbols.txt"
USJ = "esp-idf components/esp_driver_usb_serial_jtag/include/driver/usb_serial_jtag.h"
HEAP = "esp-idf components/heap/include/esp_heap_caps.h"
RTOS_TASK = "esp-idf components/freertos/FreeRTOS-Kernel/include/freertos/task.h"
RTOS_SEM = "esp-idf components/freertos/FreeRTOS-Kernel/include/freertos/semphr.h"
CAM = "esp32-camera driver/include/esp_camera.h"
CAM_SENSOR = "esp32-camera driver/include/sensor.h"
LEDC = "esp-idf components/hal/include/hal/ledc_types.h"
INTERP = "esp-tflite-micro tensorflow/lite/micro/micro_interpreter.h"
TFLM_C = "esp-tflite-micro tensorflow/lite/core/c/common.h"

API = {
    # ESP-IDF v5.5.5
    "usb_serial_jtag_driver_install": (IDF, USJ),
    "usb_serial_jtag_read_bytes": (IDF, USJ),
    "usb_serial_jtag_write_bytes": (IDF, USJ),
    "usb_serial_jtag_driver_config_t": (IDF, USJ),
    # issue 21: the camera driver started and stopped from a task pinned to CPU0, the caller waits for it
    "esp_camera_deinit": (IDF, CAM),
    "xTaskGetCurrentTaskHandle": (IDF, RTOS_TASK),
    "uxTaskPriorityGet": (IDF, RTOS_TASK),
    "xTaskNotifyGive": (IDF, RTOS_TASK),
    "ulTaskNotifyTake": (IDF, RTOS_TASK),
    "vTaskDelete": (IDF, RTOS_TASK),
    "TaskHandle_t": (IDF, RTOS_TASK),
    "BaseType_t": (IDF, "esp-idf components/freertos/FreeRTOS-Kernel/portable/xtensa/include/freertos/portmacro.h"),
    "pdPASS": (IDF, "esp-idf components/freertos/FreeRTOS-Kernel/include/freertos/projdefs.h"),
    "pdTRUE": (IDF, "esp-idf components/freertos/FreeRTOS-Kernel/include/freertos/projdefs.h"),
    "ESP_FAIL": (IDF, "esp-idf components/esp_common/include/esp_err.h"),
    "ESP_ERR_NO_MEM": (IDF, "esp-idf components/esp_common/include/esp_err.h"),
    "rx_buffer_size": (MEMBERS, USJ),
    "tx_buffer_size": (MEMBERS, USJ),
    "usb_serial_jtag_vfs_use_driver": (IDF, "esp-idf components/esp_driver_usb_serial_jtag/include/driver/usb_serial_jtag_vfs.h"),
    "esp_log_set_vprintf": (IDF, "esp-idf components/log/include/esp_log_write.h"),
    "ESP_LOGI": (IDF, "esp-idf components/log/include/esp_log.h"),
    "ESP_LOGW": (IDF, "esp-idf components/log/include/esp_log.h"),
    "ESP_LOGE": (IDF, "esp-idf components/log/include/esp_log.h"),
    "heap_caps_aligned_alloc": (IDF, HEAP),
    "heap_caps_malloc": (IDF, HEAP),
    "heap_caps_free": (IDF, HEAP),
    "heap_caps_get_free_size": (IDF, HEAP),
    "heap_caps_get_largest_free_block": (IDF, HEAP),
    "MALLOC_CAP_INTERNAL": (IDF, "esp-idf components/heap/include/esp_heap_caps.h"),
    "MALLOC_CAP_8BIT": (IDF, HEAP),
    "MALLOC_CAP_SPIRAM": (IDF, HEAP),
    "esp_timer_get_time": (IDF, "esp-idf components/esp_timer/include/esp_timer.h"),
    "esp_get_idf_version": (IDF, "esp-idf components/esp_common/include/esp_idf_version.h"),
    "esp_restart": (IDF, "esp-idf components/esp_system/include/esp_system.h"),
    "esp_err_t": (IDF, "esp-idf components/esp_common/include/esp_err.h"),
    "esp_err_to_name": (IDF, "esp-idf components/esp_common/include/esp_err.h"),
    "ESP_OK": (IDF, "esp-idf components/esp_common/include/esp_err.h"),
    "xTaskCreatePinnedToCore": (IDF, RTOS_TASK),
    "vTaskDelay": (IDF, RTOS_TASK),
    "SemaphoreHandle_t": (IDF, RTOS_SEM),
    "xSemaphoreCreateRecursiveMutex": (IDF, RTOS_SEM),
    "xSemaphoreTakeRecursive": (IDF, RTOS_SEM),
    "xSemaphoreGiveRecursive": (IDF, RTOS_SEM),
    "pdMS_TO_TICKS": (IDF, "esp-idf components/freertos/FreeRTOS-Kernel/include/freertos/projdefs.h"),
    "portMAX_DELAY": (IDF, "esp-idf components/freertos/FreeRTOS-Kernel/portable/xtensa/include/freertos/portmacro.h"),
    "LEDC_TIMER_0": (IDF, LEDC),
    "LEDC_CHANNEL_0": (IDF, LEDC),
    # esp32-camera 2.x (headers indexed into the same refdata list)
    "esp_camera_init": (IDF, CAM),
    "esp_camera_fb_get": (IDF, CAM),
    "esp_camera_fb_return": (IDF, CAM),
    "camera_config_t": (IDF, CAM),
    "camera_fb_t": (IDF, CAM),
    "CAMERA_FB_IN_PSRAM": (IDF, CAM),
    "CAMERA_GRAB_LATEST": (IDF, CAM),
    "PIXFORMAT_RGB565": (IDF, CAM_SENSOR),
    "FRAMESIZE_QVGA": (IDF, CAM_SENSOR),
    **{m: (MEMBERS, CAM) for m in (
        "pin_pwdn", "pin_reset", "pin_xclk", "pin_sccb_sda", "pin_sccb_scl", "pin_d7", "pin_d6", "pin_d5",
        "pin_d4", "pin_d3", "pin_d2", "pin_d1", "pin_d0", "pin_vsync", "pin_href", "pin_pclk", "xclk_freq_hz",
        "ledc_timer", "ledc_channel", "pixel_format", "frame_size", "jpeg_quality", "fb_count", "fb_location",
        "grab_mode", "buf", "width", "height", "format")},
    # esp-tflite-micro (TFLM)
    "MicroInterpreter": (TFLM, INTERP),
    "AllocateTensors": (TFLM, INTERP),
    "Invoke": (TFLM, INTERP),
    "input": (TFLM, INTERP),
    "output": (TFLM, INTERP),
    "arena_used_bytes": (TFLM, INTERP),
    "TFLITE_SCHEMA_VERSION": (TFLM, INTERP),
    "MicroMutableOpResolver": (TFLM, "esp-tflite-micro tensorflow/lite/micro/micro_mutable_op_resolver.h"),
    "MicroProfilerInterface": (TFLM, "esp-tflite-micro tensorflow/lite/micro/micro_profiler_interface.h"),
    "BeginEvent": (TFLM, "esp-tflite-micro tensorflow/lite/micro/micro_profiler_interface.h"),
    "EndEvent": (TFLM, "esp-tflite-micro tensorflow/lite/micro/micro_profiler_interface.h"),
    "GetModel": (TFLM, "esp-tflite-micro tensorflow/lite/schema/schema_generated.h"),
    "Model": (TFLM, "esp-tflite-micro tensorflow/lite/schema/schema_generated.h"),
    "version": (TFLM, "esp-tflite-micro tensorflow/lite/schema/schema_generated.h"),
    "TfLiteStatus": (TFLM, TFLM_C),
    "kTfLiteOk": (TFLM, TFLM_C),
    "kTfLiteError": (TFLM, TFLM_C),
    "kTfLiteInt8": (TFLM, TFLM_C),
    "TfLiteTensor": (TFLM, TFLM_C),
    "type": (TFLM, TFLM_C),
    "bytes": (TFLM, TFLM_C),
    "data": (TFLM, TFLM_C),
    "int8": (TFLM, TFLM_C),
    # Kconfig symbols read by the sources (besides the app's own CONFIG_APP_*)
    "CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ": (KCONFIG, "esp-idf components/esp_system/port/soc/esp32s3/Kconfig.cpu"),
    # gate usb_serial_jtag_vfs_use_driver: esp_driver_usb_serial_jtag/CMakeLists.txt builds its VFS part only then
    "CONFIG_VFS_SUPPORT_IO": (KCONFIG, "esp-idf components/vfs/Kconfig"),
    "CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG_ENABLED": (KCONFIG, "esp-idf components/esp_system/Kconfig"),
    # serial_link.cc replaces the app task's stderr (TFLM's DebugLog) only with newlib, whose stderr is per task
    "CONFIG_LIBC_PICOLIBC": (KCONFIG, "esp-idf components/newlib/Kconfig"),
}

# Names the sources use that look like platform API but are ours (or plain C/C++).
OURS = {"esp_nn"}


def _code(path: Path) -> str:
    """Source text without comments, string literals and #include lines."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#include"))


def _platform_sources() -> dict[str, str]:
    """firmware/main sources that use ESP-IDF / TFLM, plus the generated op resolver's template."""
    srcs = {p.name: _code(p) for p in sorted(FW_MAIN.iterdir()) if p.suffix in (".h", ".cc") and p.name not in PORTABLE}
    tpl = resource_path("templates") / "main" / "op_resolver.h.j2"
    srcs[tpl.name] = re.sub(r"\{[{%].*?[}%]\}", " ", _code(tpl))
    return srcs


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", text))


def _names(refdata: Path, rel: str) -> set[str]:
    return {line.strip() for line in (refdata / rel).read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")}


def test_every_listed_api_exists_upstream(refdata):
    missing = [f"{name} (expected in {rel}, from {src})" for name, (rel, src) in API.items() if name not in _names(refdata, rel)]
    assert not missing, "not in refdata: " + "; ".join(missing)


def test_api_list_matches_what_the_sources_use():
    used = set().union(*(_words(t) for t in _platform_sources().values()))
    unused = sorted(n for n in API if n not in used)
    assert not unused, f"listed but no longer used by firmware/main: {unused}"
    # platform-looking identifiers in the sources must all be listed
    pattern = re.compile(
        r"\b(esp_\w+|heap_caps_\w+|usb_serial_jtag_\w+|x(?:Task|Semaphore|Queue)\w+|vTask\w+|pd[A-Z_]\w*|port[A-Z]\w*|"
        r"MALLOC_CAP_\w+|ESP_[A-Z_]+\w*|PIXFORMAT_\w+|FRAMESIZE_\w+|CAMERA_\w+|LEDC_\w+|camera_\w+_t|"
        r"Micro\w+|TfLite\w+|kTfLite\w+|TFLITE_\w+|CONFIG_(?!APP_)\w+)\b"
    )
    seen = set()
    for text in _platform_sources().values():
        seen |= set(pattern.findall(text))
    unlisted = sorted(seen - set(API) - OURS - {"esp_camera", "esp_log"})
    assert not unlisted, f"firmware uses platform names not in the checked list: {unlisted}"


def test_resolver_methods_exist_in_tflm(refdata):
    from gendertool.model.info import load_model

    tflm = _names(refdata, TFLM)
    model = load_model(None)
    assert {op.resolver_method for op in model.operators} <= tflm


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    from gendertool.model.info import load_model

    model = load_model(None)
    out = {}
    for name in BOARDS:
        root = tmp_path_factory.mktemp(name)
        source = "camera" if get_board(name).has_camera else "sample"
        render_project(model, get_board(name), root, input_source=source)
        out[name] = root
    return out


def _app_symbols(kconfig: Path) -> set[str]:
    import kconfiglib

    kc = kconfiglib.Kconfig(str(kconfig), warn=False)
    return {f"CONFIG_{s.name}" for s in kc.unique_defined_syms} | {f"CONFIG_{c.name}" for c in kc.unique_choices if c.name}


def _sdkconfig_keys(path: Path) -> list[str]:
    keys = []
    for line in path.read_text().splitlines():
        m = re.match(r"^(CONFIG_\w+)=", line) or re.match(r"^# (CONFIG_\w+) is not set$", line)
        if m:
            keys.append(m.group(1))
    return keys


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_sdkconfig_keys_are_real_symbols(refdata, projects, board):
    root = projects[board]
    known = _names(refdata, KCONFIG) | _app_symbols(root / "main" / "Kconfig.projbuild")
    renamed = _names(refdata, "idf-v5.5.5/kconfig_renamed.txt")
    files = sorted(root.glob("sdkconfig.defaults*"))
    assert [f.name for f in files] == ["sdkconfig.defaults", "sdkconfig.defaults.esp32s3"]
    for f in files:
        assert _sdkconfig_keys(f), f"{f.name} has no settings"
        assert _sdkconfig_problems(f, known, renamed) == [], f.name


def _sdkconfig_problems(path: Path, known: set[str], renamed: set[str]) -> list[str]:
    keys = _sdkconfig_keys(path)
    problems = [f"{k} set twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
    problems += [f"{k} deprecated" for k in keys if k in renamed]
    problems += [f"{k} unknown" for k in keys if k not in known and k not in renamed]
    return problems


def test_required_speed_settings_are_present(projects):
    root = projects["xiao_esp32s3"]
    text = (root / "sdkconfig.defaults").read_text() + (root / "sdkconfig.defaults.esp32s3").read_text()
    for line in (
        "CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_240=y", "CONFIG_ESPTOOLPY_FLASHMODE_QIO=y", "CONFIG_ESPTOOLPY_FLASHFREQ_80M=y",
        "CONFIG_SPIRAM_MODE_OCT=y", "CONFIG_SPIRAM_SPEED_80M=y", "CONFIG_ESP32S3_DATA_CACHE_64KB=y",
        "CONFIG_ESP32S3_DATA_CACHE_LINE_64B=y", "CONFIG_ESP32S3_INSTRUCTION_CACHE_32KB=y",
        "CONFIG_COMPILER_OPTIMIZATION_PERF=y", "CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG=y",
        "# CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU1 is not set", "CONFIG_PARTITION_TABLE_CUSTOM=y",
        'CONFIG_IDF_TARGET="esp32s3"',
    ):
        assert line in text.splitlines(), line


def test_sdkconfig_check_catches_bad_keys(refdata, tmp_path):
    """The check above can fail: deprecated, made-up and duplicated keys are reported."""
    known = _names(refdata, KCONFIG)
    renamed = _names(refdata, "idf-v5.5.5/kconfig_renamed.txt")
    f = tmp_path / "sdkconfig.defaults"
    f.write_text(
        "CONFIG_ESP32S3_DEFAULT_CPU_FREQ_240=y\n"  # pre-5.0 spelling, only in sdkconfig.rename
        "CONFIG_SPIRAM_OCTAL_MODE=y\n"  # made up
        "CONFIG_SPIRAM=y\n# CONFIG_SPIRAM is not set\n"
    )
    assert _sdkconfig_problems(f, known, renamed) == [
        "CONFIG_SPIRAM set twice", "CONFIG_ESP32S3_DEFAULT_CPU_FREQ_240 deprecated", "CONFIG_SPIRAM_OCTAL_MODE unknown"]


def test_firmware_config_macros_exist_in_the_app_kconfig(projects):
    syms = _app_symbols(projects["xiao_esp32s3"] / "main" / "Kconfig.projbuild")
    used = set()
    for p in FW_MAIN.iterdir():
        used |= set(re.findall(r"\bCONFIG_APP_\w+", p.read_text(encoding="utf-8")))
    assert used and not sorted(used - syms)
    assert all(s.startswith("CONFIG_APP_") for s in syms)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_kconfig_passes_kconfcheck(projects, board, tmp_path):
    from kconfcheck.core import validate_file

    dst = tmp_path / "Kconfig.projbuild"
    dst.write_bytes((projects[board] / "main" / "Kconfig.projbuild").read_bytes())
    assert validate_file(str(dst)) is True


def test_kconfcheck_rejects_bad_style(tmp_path):
    from kconfcheck.core import validate_file

    bad = tmp_path / "Kconfig.projbuild"
    bad.write_text('menu "x"\n  config APP_X\n      bool "x"\nendmenu\n')
    assert validate_file(str(bad)) is False


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_idf_component_manifest_is_valid(projects, board):
    from idf_component_tools.manager import ManifestManager

    mm = ManifestManager(projects[board] / "main", name="main")
    assert mm.validation_errors == []
    deps = {d.name: d.version for d in mm.load().requirements}
    assert deps["espressif/esp-nn"] == "1.1.2"
    assert deps["espressif/esp-tflite-micro"] == "1.3.8"
    assert ("espressif/esp32-camera" in deps) == get_board(board).has_camera
    from idf_component_tools.semver import SimpleSpec, Version

    # exact pins; the IDF range takes PlatformIO espressif32 6.13.0's 5.5.3 and refdata's 5.5.5
    assert [v for v in ("1.1.1", "1.1.2", "1.2.3") if SimpleSpec(deps["espressif/esp-nn"]).match(Version(v))] == ["1.1.2"]
    idf = SimpleSpec(deps["idf"])
    assert [v for v in ("5.4.2", "5.5.0", "5.5.3", "5.5.5", "6.0.0") if idf.match(Version(v))] == ["5.5.0", "5.5.3", "5.5.5"]


def test_manifest_validation_can_fail(tmp_path):
    from idf_component_tools.manager import ManifestManager

    (tmp_path / "idf_component.yml").write_text('dependencies:\n  espressif/esp-nn:\n    version: "not a version"\n')
    assert ManifestManager(tmp_path, name="main").validation_errors


def test_app_task_core_is_cpu1_in_kconfig_and_in_the_code(projects, tmp_path):
    """Issue 21 fault 7: on CPU0 a benchmark never yields and the task watchdog prints into the
    stream. Kconfig allows only 1, and an sdkconfig saved with 0 stops the build with a reason."""
    import shutil
    import subprocess

    import kconfiglib

    kc = kconfiglib.Kconfig(str(projects["xiao_esp32s3"] / "main" / "Kconfig.projbuild"), warn=False)
    sym = kc.syms["APP_TASK_CORE"]
    assert [(lo.str_value, hi.str_value) for lo, hi, *_ in sym.ranges] == [("1", "1")]
    assert sym.str_value == "1"
    if shutil.which("g++") is None:
        pytest.skip("host g++ not installed")
    main = projects["xiao_esp32s3"] / "main"
    (tmp_path / "use.cc").write_text('#include "app_config.h"\nint main() { return gt::config::kTaskCore; }\n')
    results = {}
    for core in (0, 1):
        inc = tmp_path / f"core{core}"
        inc.mkdir()
        (inc / "sdkconfig.h").write_text("".join(
            f"#define CONFIG_APP_{k} {v}\n" for k, v in {
                "ARENA_SIZE": 100000, "INFERENCE_PERIOD_MS": 200, "SELFTEST_TOLERANCE": 1, "TASK_STACK_SIZE": 16384,
                "TASK_PRIORITY": 5, "TASK_CORE": core, "SERIAL_RX_BUFFER": 4096, "SERIAL_TX_BUFFER": 4096}.items()))
        proc = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{inc}", f"-I{main}", "-c",
                               str(tmp_path / "use.cc"), "-o", str(inc / "use.o")], capture_output=True, text=True)
        results[core] = proc
    assert results[1].returncode == 0, results[1].stderr
    assert results[0].returncode != 0 and "APP_TASK_CORE must be 1" in results[0].stderr
