"""Shared test helpers: run the CLI in-process, find ../shared, gate hardware tests."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DEFAULT_MODEL = REPO / "models" / "gender_mbv2_035_64.tflite"


def pytest_addoption(parser):
    parser.addoption(
        "--port",
        action="append",
        default=[],
        help="serial port of an attached ESP32-S3 (repeat for several); enables @pytest.mark.hardware tests",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a board: run with --port PORT")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def noise_images(root: Path, n: int, size: tuple[int, int], seed: int, name: str = "i{i}.png") -> Path:
    """``root/female`` and ``root/male`` with ``n`` random-noise PNGs of ``size`` (h, w), alternating
    labels: pictures to validate or upload whose content does not matter. Returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        label = ("female", "male")[i % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / label / name.format(i=i))
    return root


@pytest.fixture
def board_ports(request) -> list[str]:
    return request.config.getoption("--port")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``gendertool ARGS...`` in-process through the real entry point (error handling included)."""
    from gendertool.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Keep tests away from the user's cache and environment."""
    monkeypatch.setenv("GENDERTOOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    for var in ("GENDERTOOL_PORT", "GENDERTOOL_MODEL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (reference data and portraits are only on the developers' machines)")
    return SHARED


@pytest.fixture(scope="session")
def refdata(shared_dir) -> Path:
    path = shared_dir / "refdata" / "idf-v5.5.5"
    if not path.is_dir():
        pytest.skip("../shared/refdata/idf-v5.5.5 is absent")
    return shared_dir / "refdata"


@pytest.fixture(scope="session")
def portraits(shared_dir) -> Path:
    path = shared_dir / "datasets" / "portraits"
    if not path.is_dir():
        pytest.skip("../shared/datasets/portraits is absent")
    return path


@pytest.fixture(scope="session")
def default_model() -> Path:
    assert DEFAULT_MODEL.is_file(), "the default model must be committed in models/"
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def model_info():
    """The default model, loaded once for the session (no arena probe)."""
    from gendertool.model.info import load_model

    return load_model(None, measure_arena=False)


@pytest.fixture
def sim_server(model_info):
    """Virtual devices on 127.0.0.1 (socket://): ``make(cls=SimDevice, period_ms=10, **SimDevice kwargs)``
    -> a started SimServer; all are closed after the test."""
    from gendertool.device.sim import SimDevice, SimServer

    servers = []

    def make(cls=SimDevice, *, period_ms: int = 10, **kw):
        server = SimServer(cls(model_info, boot_delay_s=0.05, period_ms=period_ms, **kw)).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


def closed_port_url() -> str:
    """A socket:// URL on 127.0.0.1 where nothing listens any more: connecting is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"socket://127.0.0.1:{port}"


def have_cmd(name: str) -> bool:
    return any((Path(p) / name).exists() for p in os.environ.get("PATH", "").split(os.pathsep))
