"""On-target validation: the board's preprocessing + ``Invoke()`` against the host TFLM reference.

Each image is decoded on the host, uploaded as RGB888 with its CRC-32 (``infer``), and the
device answers with its int8 scores. The host runs :func:`gendertool.model.preprocess.preprocess`
on the very same pixels and the TFLM host runtime (reference kernels) on the result; both
score vectors are compared with :func:`gendertool.model.validate.compare_outputs` and reported in
the host validator's :class:`~gendertool.model.validate.ValidationReport`, with the device's
latency per image and its boot self-test alongside.

The reference is computed once per image and shared by every board, so several ``--port``
values only multiply the device work, which runs in one thread per board.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gendertool.device.link import INFER_TIMEOUT, DeviceClient, ReplyTimeout
from gendertool.device.transport import check_port_list, run_parallel
from gendertool.errors import DeviceError, GendertoolError, ImageError, Interrupted, ctrl_c_waits
from gendertool.files import check_report_file, write_report_atomic
from gendertool.model.info import load_model
from gendertool.model.preprocess import load_rgb, preprocess
from gendertool.model.runtime import TflmRunner
from gendertool.model.validate import (
    REFERENCE,
    TFLM_KERNELS,
    ImageResult,
    RuntimeInfo,
    SkippedFile,
    build_report,
    collect_images,
    compare_outputs,
    model_summary,
    no_readable_images,
    read_image_list,
    skip_reason,
)
from gendertool.protocol import record_to_dict
from gendertool.stats import latency_stats
from gendertool.text import count

DEVICE = "device"
DEVICE_KERNELS = "the board's firmware: its preprocessing + TFLM Invoke() (ESP-NN kernels when built in)"
SIM_KERNELS = "virtual device (gendertool sim): TFLM host runtime, no board involved"
MAX_UPLOAD_SIDE = 640  # the firmware refuses larger uploads (protocol: too_large)


@dataclass(frozen=True)
class Reference:
    """One image prepared on the host: the pixels to upload and the TFLM reference scores."""

    path: str  # relative to the images folder
    label: str
    rgb: np.ndarray  # HxWx3 uint8, exactly what is uploaded
    scores: tuple[int, ...]


@dataclass(frozen=True)
class Latency:
    pre_us: int
    invoke_us: int

    def to_dict(self) -> dict:
        return {"pre_us": self.pre_us, "invoke_us": self.invoke_us, "total_us": self.pre_us + self.invoke_us}


@dataclass
class BoardValidation:
    """One board's validation: the shared report type plus what only a device has."""

    port: str
    device: dict = field(default_factory=dict)  # hello, protocol names
    selftest: dict = field(default_factory=dict)
    report: Any = None  # gendertool.model.validate.ValidationReport (None when the board failed early)
    latency: dict[str, Latency] = field(default_factory=dict)  # image path -> device timing
    error: str | None = None
    uploaded: int = 0
    retried: list[str] = field(default_factory=list)  # "path: why", images uploaded a second time
    planned: dict[str, int] = field(default_factory=dict)  # label -> images to compare
    interrupted: bool = False  # Ctrl-C stopped it; the report holds the images compared before

    @property
    def compared(self) -> int:
        return len(self.report.images) if self.report is not None else 0

    @property
    def partial(self) -> bool:
        """Fewer images compared than planned: the run stopped early (lost board, Ctrl-C)."""
        return self.compared < sum(self.planned.values())

    def coverage(self) -> str:
        """'25 of 183 images compared (female 25 of 90, male 0 of 93)'."""
        done: dict[str, int] = {}
        for im in self.report.images if self.report is not None else ():
            done[im.label] = done.get(im.label, 0) + 1
        folders = ", ".join(f"{label} {done.get(label, 0)} of {n}" for label, n in self.planned.items())
        return f"{self.compared} of {sum(self.planned.values())} images compared ({folders})"

    @property
    def simulated(self) -> bool:
        return bool(self.device.get("simulated", False))

    @property
    def board(self) -> str:
        return str(self.device.get("board", "unknown"))

    def parity(self) -> Any:
        """The device-vs-TFLM ParitySummary (None without a report)."""
        if self.report is None:
            return None
        for p in self.report.parity:
            if p.candidate == DEVICE:
                return p
        return None

    @property
    def parity_pct(self) -> float:
        p = self.parity()
        return 100.0 * p.identical / p.compared if p is not None and p.compared else 0.0

    @property
    def selftest_passed(self) -> bool | None:
        """The device's own self-test verdict; None when no self-test record came."""
        return bool(self.selftest.get("pass")) if self.selftest else None

    def parity_ok(self, min_parity: float) -> bool:
        p = self.parity()
        return p is not None and p.compared > 0 and self.parity_pct >= min_parity

    def passed(self, min_parity: float) -> bool:
        # a device that fails its own self-test fails, however its uploads compared; a partial
        # run has no verdict
        return (self.error is None and not self.partial and self.selftest_passed is not False
                and self.parity_ok(min_parity))

    def latency_stats(self) -> dict:

        if not self.latency:
            return {}
        vals = list(self.latency.values())
        return {
            "pre_us": latency_stats(v.pre_us for v in vals).to_dict(),
            "invoke_us": latency_stats(v.invoke_us for v in vals).to_dict(),
            "total_us": latency_stats(v.pre_us + v.invoke_us for v in vals).to_dict(),
        }

    def to_dict(self, min_parity: float) -> dict:
        rep = self.report.to_dict() if self.report is not None else None
        if rep is not None:
            for im in rep["images"]:
                lat = self.latency.get(im["path"])
                im["device_latency"] = lat.to_dict() if lat else None
        return {
            "port": self.port,
            "board": self.board,
            "simulated": self.simulated,
            "device": self.device,
            "selftest": self.selftest,
            "selftest_passed": self.selftest_passed,
            "parity_pct": self.parity_pct,
            "min_parity": min_parity,
            "passed": self.passed(min_parity),
            "error": self.error,
            "uploaded": self.uploaded,
            "retried": self.retried,
            "planned": sum(self.planned.values()),
            "compared": self.compared,
            "partial": self.partial,
            "interrupted": self.interrupted,
            "coverage": self.coverage(),
            "latency": self.latency_stats(),
            "report": rep,
        }


@dataclass
class DeviceValidation:
    """All boards of one ``gendertool validate --port ...`` run."""

    min_parity: float
    boards: list[BoardValidation]
    skipped: list[Any]  # validate.SkippedFile, shared by every board
    model: dict
    path: Path | None = None  # the report file, once written
    interrupted: bool = False
    write_error: str | None = None  # the report file could not be written

    @property
    def passed(self) -> bool:
        return bool(self.boards) and all(b.passed(self.min_parity) for b in self.boards)

    def to_dict(self) -> dict:
        return {
            "schema": 1,
            "kind": "gendertool-device-validate",
            "min_parity": self.min_parity,
            "passed": self.passed,
            "partial": any(b.partial for b in self.boards) or self.interrupted,
            "interrupted": self.interrupted,
            "model": self.model,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "boards": [b.to_dict(self.min_parity) for b in self.boards],
        }


def fit_upload(rgb: np.ndarray, max_side: int = MAX_UPLOAD_SIDE) -> np.ndarray:
    """Shrink an image that the firmware would refuse (> 640 px a side); the host reference is
    computed from the returned pixels, so parity is unaffected."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    from PIL import Image

    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def prepare_references(info: Any, items: Sequence[tuple[Path, str]], root: Path,
                       progress: Callable[[int, int], None] | None = None) -> tuple[list[Reference], list[Any]]:
    """Decode every image and compute its TFLM reference scores (once, for all boards)."""

    _, height, width, _ = info.input.shape
    runner = TflmRunner(info.data)
    refs: list[Reference] = []
    skipped: list[Any] = []
    for done, (path, label) in enumerate(items, start=1):
        rel = path.relative_to(root).as_posix()
        try:
            rgb = fit_upload(load_rgb(path))
        except ImageError as exc:
            skipped.append(SkippedFile(rel, skip_reason(exc, path)))
        else:
            x = preprocess(rgb, info.preprocessing, height, width, info.input.scale, info.input.zero_point)
            scores = tuple(int(v) for v in np.asarray(runner.invoke(x)).ravel())
            refs.append(Reference(rel, label, rgb, scores))
        if progress is not None:
            progress(done, len(items))
    return refs, skipped


def check_device_model(hello: dict, info: Any, port: str) -> None:
    """Refuse to compare against a device running another model: every image would differ."""
    dev_sha = str(hello.get("model_sha256", ""))
    if dev_sha != info.sha256:
        raise DeviceError(
            f"{port}: the device runs model {hello.get('model', '?')} (sha256 {dev_sha[:12] or '?'}), "
            f"the host reference is {info.name} (sha256 {info.sha256[:12]}); flash the firmware for this model "
            "or pass the device's model with --model"
        )
    dev_shape = tuple(int(v) for v in hello.get("input", ()))
    if dev_shape and dev_shape != tuple(info.input.shape):
        raise DeviceError(f"{port}: device input shape {dev_shape} differs from the model's {tuple(info.input.shape)}")


def validate_board(client: Any, *, port: str, info: Any, refs: Sequence[Reference], images_dir: Path,
                   skipped: Sequence[Any], progress: Callable[[int, int], None] | None = None,
                   infer_timeout: float = INFER_TIMEOUT, device: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> BoardValidation:
    """Upload every prepared image to one connected board and compare its outputs.

    An image whose reply times out is uploaded once more (the client gets back in step
    first); a device lost part way keeps the images already compared in the report and sets
    ``error``. ``device``: the board's hello when :func:`connect_board` already asked for it.
    Ctrl-C (or ``should_stop()``, for a board in a worker thread) keeps them too and raises
    :class:`Interrupted` carrying the board's result.
    """

    out = BoardValidation(port=port, planned=planned_by_label(refs, info.labels))
    results: list[ImageResult] = []
    stop = should_stop or (lambda: False)
    t0 = time.perf_counter()
    try:
        out.device = device if device is not None else record_to_dict(client.info())
        check_device_model(out.device, info, port)
        out.selftest = read_selftest(client)
        labels = info.labels
        for done, ref in enumerate(refs, start=1):
            if stop():
                raise KeyboardInterrupt
            try:
                rec = client.infer_rgb(ref.rgb, timeout=infer_timeout)
            except ReplyTimeout as exc:
                out.retried.append(f"{ref.path}: {exc}")
                rec = client.infer_rgb(ref.rgb, timeout=infer_timeout)
            out.uploaded += 1
            scores = tuple(rec.scores)
            if len(scores) != len(ref.scores):
                raise DeviceError(f"{port}: the device sent {len(scores)} scores, the model has {len(ref.scores)}")
            out.latency[ref.path] = Latency(rec.pre_us, rec.invoke_us)
            results.append(ImageResult(
                path=ref.path,
                label=ref.label,
                scores={REFERENCE: ref.scores, DEVICE: scores},
                predicted={REFERENCE: labels[int(np.argmax(ref.scores))], DEVICE: labels[int(np.argmax(scores))]},
                comparisons={DEVICE: compare_outputs(ref.scores, scores)},
            ))
            if progress is not None:
                progress(done, len(refs))
    except GendertoolError as exc:
        out.error = str(exc)
    except KeyboardInterrupt:
        out.interrupted = True
    if results or (out.error is None and not out.interrupted):
        kernels = SIM_KERNELS if out.simulated else DEVICE_KERNELS
        notes = []
        if out.error is not None:
            notes.append(f"stopped after {len(results)} of {len(refs)} images: {out.error}")
        if out.interrupted:
            notes.append(f"interrupted (Ctrl-C) after {len(results)} of {len(refs)} images")
        if out.retried:
            notes.append(f"uploaded {count(len(out.retried), 'image')} twice after a timeout; first: {out.retried[0]}")
        out.report = build_report(
            model=model_summary(info),
            images_dir=images_dir,
            labels=info.labels,
            runtimes=[RuntimeInfo(REFERENCE, TFLM_KERNELS), RuntimeInfo(DEVICE, kernels)],
            images=results,
            skipped=list(skipped),
            elapsed_s=time.perf_counter() - t0,
            notes=notes,
        )
    if out.interrupted:
        raise Interrupted(f"{port}: interrupted", partial=out)
    return out


def planned_by_label(refs: Sequence[Reference], labels: Sequence[str]) -> dict[str, int]:
    """Images to compare per label folder, in label order (folders with none are named too)."""
    counts = {label: 0 for label in labels}
    for r in refs:
        counts[r.label] = counts.get(r.label, 0) + 1
    return counts


def read_selftest(client: Any) -> dict:
    """The firmware's boot self-test if its record arrived since we connected, else run it now.

    ``origin`` says which: "boot" or "command" (same samples and check, run on request).
    """

    boot = client.boot_selftest()
    if boot is not None:
        return {**record_to_dict(boot), "origin": "boot"}
    return {**record_to_dict(client.selftest()), "origin": "command"}


ConnectFn = Callable[[str], Any]  # port -> an open DeviceClient (closed by the caller)
BoardProgress = Callable[[str, str, int, int], None]  # (port, phase, done, total)


def validate_devices(
    ports: Sequence[str],
    images_dir: str | Path,
    model: str | Path | None = None,
    *,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    min_parity: float = 100.0,
    connect: ConnectFn | None = None,
    progress: BoardProgress | None = None,
    infer_timeout: float = INFER_TIMEOUT,
    out_path: str | Path | None = None,
    heldout: str | Path | None = None,
) -> DeviceValidation:
    """Validate the model on every board in ``ports`` (one thread per board).

    With ``out_path`` the report (every per-image result of every board) is written there
    atomically at the end, also when a board is lost or Ctrl-C stops the run (then
    :class:`Interrupted` carries the DeviceValidation).
    """



    ports = check_port_list(ports)
    if not 0.0 <= min_parity <= 100.0:
        raise GendertoolError(f"--min-parity must be within 0..100, got {min_parity}")
    if out_path is not None:
        out_path = Path(out_path)
        check_report_file(out_path)
    connect = connect or DeviceClient.open
    info = load_model(model, labels=labels, measure_arena=False)  # checks labels against the outputs
    root = Path(images_dir)
    items, skipped = collect_images(root, info.labels, limit,
                                    only=read_image_list(heldout) if heldout is not None else None)

    # Ports first: a typo or a board running another model fails in a second, not after the
    # host reference (seconds per hundred images).
    results: dict[str, BoardValidation] = {}
    clients: dict[str, tuple[Any, dict]] = {}
    stop = threading.Event()  # Ctrl-C reaches the main thread only: boards in threads are told
    planned: dict[str, int] = {}
    refs: list = []

    def open_board(port: str) -> None:
        if progress:
            progress(port, "connecting", 0, 0)
        try:
            clients[port] = connect_board(connect, port, info)
        except GendertoolError as exc:
            results[port] = BoardValidation(port=port, error=str(exc))

    def work(port: str) -> None:
        client, device = clients[port]
        try:
            results[port] = validate_board(
                client, port=port, info=info, refs=refs, images_dir=root, skipped=skipped,
                progress=(lambda d, t: progress(port, "validate", d, t)) if progress else None,
                infer_timeout=infer_timeout, device=device, should_stop=stop.is_set)
        except Interrupted as exc:
            results[port] = exc.partial
            raise
        except GendertoolError as exc:
            results[port] = BoardValidation(port=port, error=str(exc), planned=dict(planned))

    def finish(interrupted: bool) -> DeviceValidation:
        boards = [results.get(p) or BoardValidation(port=p, planned=dict(planned), interrupted=True) for p in ports]
        dv = DeviceValidation(min_parity=min_parity, boards=boards, skipped=skipped, model=model_summary(info),
                              interrupted=interrupted)
        late = False
        if out_path is not None:
            try:
                with ctrl_c_waits():  # a Ctrl-C now waits for the report to be written
                    write_report_atomic(out_path, dv.to_dict())
                    dv.path = out_path
            except GendertoolError as exc:  # the results are still presented; the CLI then fails
                dv.write_error = str(exc)
            except KeyboardInterrupt:  # held until the report was written
                late = True
        if late:
            raise Interrupted(interrupted_note(dv), partial=dv)
        return dv

    try:
        run_parallel(ports, open_board)
        if not clients:
            raise DeviceError("; ".join(results[p].error or "" for p in ports))
        try:
            found, unreadable = prepare_references(
                info, items, root, (lambda d, t: progress("host", "TFLM reference", d, t)) if progress else None)
        except KeyboardInterrupt:
            raise Interrupted(f"stopped while computing the host reference of {count(len(items), 'image')}; "
                              "no image was compared on a board, nothing written") from None
        refs.extend(found)
        skipped = list(skipped) + unreadable
        if not refs:
            raise no_readable_images(root, skipped)
        planned.update(planned_by_label(refs, info.labels))
        for res in results.values():  # a board that could not connect planned the same images
            res.planned = dict(planned)
        try:
            run_parallel(list(clients), work, stop=stop)
        except (Interrupted, KeyboardInterrupt):
            dv = finish(True)
            raise Interrupted(interrupted_note(dv), partial=dv) from None
        return finish(False)
    finally:
        for client, _ in clients.values():
            client.close()


def connect_board(connect: "ConnectFn", port: str, info: Any) -> tuple[Any, dict]:
    """Open ``port``, ask the firmware who it is and check it runs ``info``'s model: (client, hello)."""

    client = connect(port)
    try:
        device = record_to_dict(client.info())
        check_device_model(device, info, port)
    except BaseException:
        client.close()
        raise
    return client, device


def interrupted_note(dv: DeviceValidation) -> str:
    """What an interrupted device validation compared, per board, and where the report is."""
    partial = dv.interrupted or any(b.partial for b in dv.boards)
    where = (f"{'partial report' if partial else 'report'} {dv.path}" if dv.path
             else dv.write_error or "no report file (pass --out FILE to keep one)")
    return "; ".join(f"{b.port}: {b.coverage()}" for b in dv.boards) + f"; {where}"
