"""One parsed model per command: the flatbuffer is decoded once where the model is loaded and
travels down as ModelInfo.graph (issue 17). Counted in-process at the one decoding call."""

from __future__ import annotations

import shutil

import pytest

from gendertool.model import flatbuffer


@pytest.fixture
def decodes(monkeypatch):
    """The number of times a TFLite flatbuffer is decoded to the object API in this process."""
    fb = flatbuffer.tflite_schema()
    real = fb.ModelT.InitFromObj.__func__
    count = {"n": 0}

    def counting(cls, obj):
        count["n"] += 1
        return real(cls, obj)

    monkeypatch.setattr(fb.ModelT, "InitFromObj", classmethod(counting))
    return count


def test_the_counter_counts(decodes, default_model):
    flatbuffer.parse_model(default_model.read_bytes())
    flatbuffer.parse_model(default_model.read_bytes())
    assert decodes["n"] == 2


@pytest.mark.parametrize("args", [
    ["inspect"],
    ["inspect", "--json"],
    ["convert", "-o", "{tmp}/c"],
    ["build", "--no-compile", "--out", "{tmp}/fw"],
    ["validate", "--images", "{images}"],
])
def test_each_command_decodes_the_model_once(cli, decodes, tmp_path, args):
    images = tmp_path / "images"
    samples = __import__("gendertool.resources", fromlist=["x"]).resource_path("firmware") / "samples"
    for png in samples.glob("*.png"):
        (images / png.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, images / png.name.split("_")[0] / png.name)
    r = cli(*[a.format(tmp=tmp_path, images=images) for a in args])
    assert r.exit_code == 0, r.output
    assert decodes["n"] == 1


def test_a_build_without_esp_nn_decodes_once(decodes, tmp_path):
    from gendertool.project.build import build

    result = build(None, out_dir=tmp_path / "fw", compile=False, options={"esp_nn": False})
    assert (result.out_dir / "sdkconfig.defaults").read_text().count("CONFIG_NN_ANSI_C=y") == 1
    assert decodes["n"] == 1


def test_the_variant_matrix_decodes_once_for_all_variants(decodes, tmp_path, monkeypatch):
    """Every variant is built from the one ModelInfo; flashing and benchmarking are faked."""
    from gendertool.device import matrix
    from gendertool.device.bench_results import BenchResult
    from gendertool.project.build import build

    built = []

    def render_only(model, **kw):
        built.append(model)
        return build(model, compile=False, **kw)

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(matrix, "build", render_only)
    monkeypatch.setattr(matrix, "plan_flash", lambda out_dir: out_dir)
    monkeypatch.setattr(matrix, "flash", lambda plan, port: None)
    monkeypatch.setattr(matrix, "run_bench", lambda client, **kw: BenchResult(port=kw["port"], n=kw["n"], warmup=0, input="sample"))
    results = matrix.run_matrix("/dev/ttyACM0", matrix.MATRIX, out_dir=tmp_path, n=1, warmup=0, connect=lambda port: Client())
    assert [r.port for r in results] == ["/dev/ttyACM0"] * len(matrix.MATRIX) == ["/dev/ttyACM0"] * 4
    assert len({id(m) for m in built}) == 1 and built[0].graph is not None
    assert decodes["n"] == 1
