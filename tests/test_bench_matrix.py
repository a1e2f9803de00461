"""`gendertool bench --matrix`: variants as data, rendered for real, failing cleanly without a toolchain."""

from __future__ import annotations

import re

import pytest


from gendertool.device import matrix
def test_variants_are_distinct_data():
    names = [v.name for v in matrix.MATRIX]
    assert len(set(names)) == len(names) == 4
    assert len({tuple(sorted(v.options.items())) for v in matrix.MATRIX}) == 4
    assert matrix.MATRIX[0].sdkconfig == {"CONFIG_APP_ARENA_INTERNAL": "y", "CONFIG_APP_MODEL_IN_PSRAM": "n",
                                         "CONFIG_NN_OPTIMIZED": "y"}


def test_variant_options_are_render_options():
    from gendertool.project.render import OPTION_KEYS

    for v in matrix.MATRIX:
        assert set(v.options) <= OPTION_KEYS, v.name


def test_esp_nn_symbols_exist_in_esp_nn_kconfig(refdata):
    symbols = set((refdata / "idf-v5.5.5" / "kconfig_symbols.txt").read_text().split())
    for v in matrix.MATRIX:
        for key in v.sdkconfig:
            if key.startswith("CONFIG_NN_"):
                assert key in symbols, key


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Each variant rendered into its own project, as the matrix does before building."""
    from gendertool.boards import get_board
    from gendertool.model.info import load_model
    from gendertool.project.render import render_project

    info = load_model(None, board="xiao_esp32s3")
    board = get_board("xiao_esp32s3")
    root = tmp_path_factory.mktemp("variants")
    for v in matrix.MATRIX:
        render_project(info, board, root / v.name, options=dict(v.options))
    return root


def _effective(project) -> dict[str, str]:
    """The variant-relevant settings a fresh build of ``project`` gets: sdkconfig.defaults lines
    and the defaults of the app's Kconfig (choice default, bool defaults)."""
    cfg = {}
    for line in (project / "sdkconfig.defaults").read_text().splitlines():
        m = re.match(r"(CONFIG_\w+)=(\S+)", line)
        if m:
            cfg[m.group(1)] = m.group(2)
    kconfig = (project / "main" / "Kconfig.projbuild").read_text()
    m = re.search(r"choice APP_ARENA_PLACEMENT.*?default (APP_ARENA_\w+)", kconfig, re.S)
    cfg[f"CONFIG_{m.group(1)}"] = "y"
    m = re.search(r"config APP_MODEL_IN_PSRAM\n.*?default (y|n)", kconfig, re.S)
    cfg["CONFIG_APP_MODEL_IN_PSRAM"] = m.group(1)
    return cfg


@pytest.mark.parametrize("variant", matrix.MATRIX, ids=lambda v: v.name)
def test_rendered_project_selects_the_variant(rendered, variant):
    project = rendered / variant.name
    cfg = _effective(project)
    for key, value in variant.sdkconfig.items():
        assert cfg.get(key) == value, (variant.name, key)
    # exactly one ESP-NN choice and one arena placement selected
    assert sum(k in cfg for k in ("CONFIG_NN_OPTIMIZED", "CONFIG_NN_ANSI_C")) == 1
    kconfig = (project / "main" / "Kconfig.projbuild").read_text()
    for key in variant.sdkconfig:
        if key.startswith("CONFIG_APP_"):
            assert re.search(rf"config {key[len('CONFIG_'):]}\b", kconfig), key


def test_matrix_without_toolchain_stops_at_the_build(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("GENDERTOOL_PIO", str(tmp_path / "no-such-pio"))
    r = cli("bench", "--matrix", "--port", "/dev/ttyNONE0", "-n", "5", "--out", tmp_path / "m")
    assert r.exit_code == 2
    assert "PlatformIO not found" in r.stderr and "[baseline]" in r.stderr
    assert "Traceback" not in r.output
    # the first variant was rendered with its options, nothing was measured or invented
    assert "CONFIG_NN_OPTIMIZED=y" in (tmp_path / "m" / "baseline" / "project" / "sdkconfig.defaults").read_text()
    assert not list((tmp_path / "m").rglob("bench.json"))
    assert not (tmp_path / "m" / "arena-psram").exists()


def test_matrix_refuses_the_virtual_device(cli, tmp_path):
    r = cli("bench", "--matrix", "--port", "sim", "--out", tmp_path)
    assert r.exit_code == 2 and "virtual device" in r.stderr


def test_matrix_needs_one_port(cli, tmp_path):
    r = cli("bench", "--matrix", "--port", "/dev/ttyA", "--port", "/dev/ttyB", "--out", tmp_path)
    assert r.exit_code == 2 and "exactly one --port" in r.output


def test_matrix_unknown_variant(cli, tmp_path):
    r = cli("bench", "--matrix", "--port", "/dev/ttyA", "--variant", "turbo", "--out", tmp_path)
    assert r.exit_code == 2
    assert "turbo" in r.stderr and "baseline" in r.stderr and "esp-nn-off" in r.stderr
