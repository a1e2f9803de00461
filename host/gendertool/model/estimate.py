"""An *estimate* of ``Invoke()`` time on the XIAO ESP32S3 (240 MHz, ESP-NN), before there is a board.

Cost model (sources and conditions: docs/latency-estimate.md; figures:
``data/latency_calibration.json``):

1. Each operator's **workload** from the model: MACs for convolutions, depthwise and fully
   connected layers, taps for pooling, elements for MEAN, ADD, MUL and everything else.
2. **Kernel rates**: cycles per MAC / tap / element of each kind, from esp-nn's kernel-wise
   table for the ESP32-S3 (a 1x1 convolution costs 2.66 cycles/MAC over 16 input channels and
   1.13 over 64; between them the rate is interpolated on log(channels); a convolution over at
   most 4 input channels, the RGB stem, uses the table's 3-channel 3x3 figure). Their sum is
   the *prior* cycle count.
3. **Calibration**: published whole-model ``Invoke()`` times fit one scale ``k`` (arena in
   internal RAM) and a PSRAM factor ``p >= 1``:
   ``ms = k * p^[arena in PSRAM] * prior cycles / 240 MHz``. With no internal point or no PSRAM
   point among those fitted, ``p`` is 1.
4. **Uncertainty**: leave-one-out over the calibration points (refit without a point,
   predict it); every estimate carries the range those errors span.

Pure standard library; the model is the parsed ``ModelT`` (gendertool.model.flatbuffer.parse_model).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gendertool.errors import GendertoolError
from gendertool.files import write_json_atomic
from gendertool.model.flatbuffer import io_shape, op_macs, op_name
from gendertool.resources import resource_path

CALIBRATION_FILE = resource_path("latency_calibration")
KINDS = ("conv", "conv_stem", "depthwise", "fc", "avgpool", "maxpool", "mean", "add", "mul", "other")
STEM_MAX_CHANNELS = 4  # esp-nn's 3-channel 3x3 figure prices convolutions over this few channels
LABEL = "estimate"


@dataclass(frozen=True)
class Work:
    """One operator's workload: ``amount`` MACs (conv kinds, fc), taps (pooling) or elements."""

    node: int | None
    op: str
    kind: str
    amount: int
    channels: int = 0  # input channels (conv)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "kind": self.kind, "amount": self.amount, "channels": self.channels}


@dataclass(frozen=True)
class Calibration:
    cpu_hz: float
    rates: dict[str, float]  # kind -> cycles per unit (conv: see conv_rate)
    conv_c16: float
    conv_c64: float
    points: tuple[dict, ...]


class CalibrationError(GendertoolError):
    """The calibration file is unreadable or wrong (it is edited by hand to add real runs)."""


def load_calibration(path: Path | None = None) -> Calibration:
    """Read and check the calibration file (a typo there must not silently change estimates)."""
    path = CALIBRATION_FILE if path is None else path
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        r = doc["kernel_rates"]

        def rate(key: str) -> float:
            v = float(r[key]["cycles"]) / float(r[key]["per"])
            if not (math.isfinite(v) and v > 0):
                raise CalibrationError(f"{path}: kernel rate {key!r} must be positive")
            return v

        rates = {k: rate(k) for k in ("conv_stem", "depthwise", "fc", "avgpool", "maxpool", "add", "mul", "other")}
        rates["mean"] = rates["avgpool"]  # one read and add per input element, like an average-pool tap
        points = tuple(doc["points"])
        for p in points:
            if p.get("arena") not in ("internal", "psram") or not float(p["published_ms"]) > 0 or not p.get("name"):
                raise CalibrationError(f"{path}: point {p.get('name')!r} needs a name, published_ms > 0, arena internal|psram")
            try:
                p["_work"] = tuple(point_work(p))
            except CalibrationError as exc:
                raise CalibrationError(f"{path}: {exc}") from None
        return Calibration(float(doc["cpu_hz"]), rates, rate("conv_1x1_c16"), rate("conv_1x1_c64"), points)
    except CalibrationError:
        raise
    except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CalibrationError(f"{path}: bad latency calibration ({exc.__class__.__name__}: {exc})") from exc


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    return load_calibration()


def conv_rate(cal: Calibration, channels: int) -> float:
    """Cycles per MAC of a convolution over ``channels`` input channels."""
    if channels <= STEM_MAX_CHANNELS:
        return cal.rates["conv_stem"]
    c = min(max(channels, 16), 64)
    t = math.log(c / 16) / math.log(4)
    return cal.conv_c16 * (cal.conv_c64 / cal.conv_c16) ** t


def cycles(w: Work, cal: Calibration) -> float:
    if w.kind in ("conv", "conv_stem"):
        return w.amount * conv_rate(cal, w.channels)
    return w.amount * cal.rates.get(w.kind, cal.rates["other"])


# ---------------------------------------------------------------------------------------------
# workloads


def _conv_kind(channels: int) -> str:
    return "conv_stem" if channels <= STEM_MAX_CHANNELS else "conv"


def point_work(point: dict) -> list[Work]:
    """A calibration point's workload from its ``workload`` rows or compact ``layers`` rows."""
    if "workload" in point:
        return [Work(r.get("node"), str(r["op"]), str(r["kind"]), int(r["amount"]), int(r.get("channels", 0)))
                for r in point["workload"]]
    out = []
    for row in point["layers"]:
        kind, *a = row
        if kind == "conv":
            k, cin, cout, oh, ow = a
            out.append(Work(None, "CONV_2D", _conv_kind(cin), oh * ow * cout * k * k * cin, cin))
        elif kind == "conv_macs":
            macs, cin = a
            out.append(Work(None, "CONV_2D", _conv_kind(cin), macs, cin))
        elif kind == "dw":
            k, c, oh, ow = a
            out.append(Work(None, "DEPTHWISE_CONV_2D", "depthwise", oh * ow * c * k * k))
        elif kind == "fc":
            n_in, n_out = a
            out.append(Work(None, "FULLY_CONNECTED", "fc", n_in * n_out))
        elif kind == "mean":
            out.append(Work(None, "MEAN", "mean", int(a[0])))
        elif kind in ("avgpool", "maxpool"):
            k, c, oh, ow = a
            out.append(Work(None, "AVERAGE_POOL_2D" if kind == "avgpool" else "MAX_POOL_2D", kind, oh * ow * c * k * k))
        elif kind in ("add", "mul", "other"):
            name, n = a
            out.append(Work(None, str(name), kind, int(n)))
        else:
            raise CalibrationError(f"unknown layer row {row!r} in point {point.get('name')!r}")
    return out


_POOLS = {"AVERAGE_POOL_2D": "avgpool", "MAX_POOL_2D": "maxpool"}
_ELEMENTWISE = {"ADD": "add", "MUL": "mul", "SUB": "add"}


def model_work(model) -> list[Work]:
    """The workload of every operator of the first subgraph of a parsed ``ModelT``."""

    sg = model.subgraphs[0]
    tensors = sg.tensors

    def shape(ids, k: int) -> tuple[int, ...]:
        return io_shape(tensors, ids, k)

    out = []
    for i, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(model, op)
        o_shape = shape(op.outputs, 0)
        elements = math.prod(o_shape) if o_shape and all(d > 0 for d in o_shape) else 0
        macs = None if custom else op_macs(model, op)
        if name in ("CONV_2D", "TRANSPOSE_CONV") and macs is not None:
            w = shape(op.inputs, 1)
            cin = w[3] if len(w) == 4 else 0
            out.append(Work(i, name, _conv_kind(cin), macs, cin))
        elif name == "DEPTHWISE_CONV_2D" and macs is not None:
            out.append(Work(i, name, "depthwise", macs))
        elif name == "FULLY_CONNECTED" and macs is not None:
            out.append(Work(i, name, "fc", macs))
        elif name in _POOLS:
            opts = op.builtinOptions
            taps = int(getattr(opts, "filterHeight", 1) or 1) * int(getattr(opts, "filterWidth", 1) or 1)
            out.append(Work(i, name, _POOLS[name], elements * taps))
        elif name == "MEAN":
            i_shape = shape(op.inputs, 0)
            out.append(Work(i, name, "mean", math.prod(i_shape) if i_shape else 0))
        elif name in _ELEMENTWISE:
            out.append(Work(i, name, _ELEMENTWISE[name], elements))
        else:
            out.append(Work(i, name, "other", elements))
    return out


# ---------------------------------------------------------------------------------------------
# calibration fit


@dataclass(frozen=True)
class Fit:
    scale: float  # k: measured / prior cycles, arena internal
    psram_factor: float  # p >= 1
    psram_factor_unclamped: float | None = None  # what the points alone say (None: not identifiable)


def _prior_cycles(point: dict, cal: Calibration) -> float:
    return sum(cycles(w, cal) for w in point["_work"])


def fit(points, cal: Calibration) -> Fit:
    """Least squares on log(published / prior): the internal points' mean fixes ``k``, the PSRAM
    points' mean above it ``p``; ``p`` is kept >= 1 (PSRAM is never faster), else one common mean."""
    logs = {"internal": [], "psram": []}
    for p in points:
        ms_prior = _prior_cycles(p, cal) / cal.cpu_hz * 1000
        logs[p["arena"]].append(math.log(float(p["published_ms"]) / ms_prior))
    every = logs["internal"] + logs["psram"]
    if not every:
        raise CalibrationError("no calibration point to fit")
    raw = None
    if logs["internal"] and logs["psram"]:
        a = sum(logs["internal"]) / len(logs["internal"])
        b = sum(logs["psram"]) / len(logs["psram"]) - a
        raw = math.exp(b)
        if b >= 0:
            return Fit(math.exp(a), raw, raw)
    return Fit(math.exp(sum(every) / len(every)), 1.0, raw)


def esp_nn_points(cal: Calibration) -> list[dict]:
    return [p for p in cal.points if p.get("kernels", "esp-nn") == "esp-nn"]


def predict_ms(work, arena: str, f: Fit, cal: Calibration) -> float:
    ms = sum(cycles(w, cal) for w in work) / cal.cpu_hz * 1000 * f.scale
    return ms * (f.psram_factor if arena == "psram" else 1.0)


@dataclass(frozen=True)
class PointCheck:
    name: str
    arena: str
    macs: int
    published_ms: float
    fitted_ms: float  # with the fit on every point
    loo_ms: float  # with the fit on the other points only

    @property
    def loo_error(self) -> float:
        return self.loo_ms / self.published_ms - 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arena": self.arena, "macs": self.macs, "published_ms": self.published_ms,
                "estimated_ms": round(self.fitted_ms, 2), "leave_one_out_ms": round(self.loo_ms, 2),
                "leave_one_out_error": round(self.loo_error, 4)}


def calibration_table(cal: Calibration | None = None) -> list[PointCheck]:
    """Every ESP-NN point: published, estimated with all points, estimated leaving it out."""
    cal = cal or default_calibration()
    points = esp_nn_points(cal)
    full = fit(points, cal)
    rows = []
    for i, p in enumerate(points):
        others = points[:i] + points[i + 1:]
        loo = fit(others, cal) if others else full
        macs = sum(w.amount for w in p["_work"] if w.kind in ("conv", "conv_stem", "depthwise", "fc"))
        rows.append(PointCheck(p["name"], p["arena"], macs, float(p["published_ms"]),
                               predict_ms(p["_work"], p["arena"], full, cal), predict_ms(p["_work"], p["arena"], loo, cal)))
    return rows


# ---------------------------------------------------------------------------------------------
# the estimate of a model


@dataclass(frozen=True)
class OpEstimate:
    work: Work
    internal_ms: float
    psram_ms: float


@dataclass(frozen=True)
class LatencyEstimate:
    """Estimated Invoke() time: per operator and in total, arena in internal RAM and in PSRAM."""

    ops: tuple[OpEstimate, ...]
    internal_ms: float
    psram_ms: float
    fit: Fit
    loo_errors: tuple[float, ...]  # relative errors of the calibration points left out
    points: int
    table: tuple[PointCheck, ...] = ()

    @property
    def error_range(self) -> tuple[float, float]:
        return (min(self.loo_errors), max(self.loo_errors)) if self.loo_errors else (0.0, 0.0)

    def ms_range(self, arena: str = "internal") -> tuple[float, float]:
        """What the true time would be if this model erred like the calibration points did."""
        ms = self.psram_ms if arena == "psram" else self.internal_ms
        lo, hi = self.error_range
        return ms / (1 + hi), ms / (1 + lo)

    def by_op(self) -> list[tuple[str, int, float, float]]:
        """(operator, count, internal ms, psram ms), most expensive first."""
        acc: dict[str, list] = {}
        for e in self.ops:
            a = acc.setdefault(e.work.op, [0, 0.0, 0.0])
            a[0] += 1
            a[1] += e.internal_ms
            a[2] += e.psram_ms
        return sorted(((k, n, i, p) for k, (n, i, p) in acc.items()), key=lambda r: -r[2])

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.error_range
        return {
            "label": LABEL,
            "target": "XIAO ESP32S3, 240 MHz, ESP-NN (CONFIG_NN_OPTIMIZED)",
            "invoke_ms": {"internal": round(self.internal_ms, 3), "psram": round(self.psram_ms, 3)},
            "range_ms": {"internal": [round(v, 3) for v in self.ms_range("internal")],
                         "psram": [round(v, 3) for v in self.ms_range("psram")]},
            "leave_one_out_error": [round(lo, 4), round(hi, 4)],
            "calibration": {"points": self.points, "scale": round(self.fit.scale, 4),
                            "psram_factor": round(self.fit.psram_factor, 4),
                            "psram_factor_unclamped": (None if self.fit.psram_factor_unclamped is None
                                                       else round(self.fit.psram_factor_unclamped, 4)),
                            "file": CALIBRATION_FILE.name, "table": [r.to_dict() for r in self.table]},
            "operators": [dict(e.work.to_dict(), internal_ms=round(e.internal_ms, 4), psram_ms=round(e.psram_ms, 4))
                          for e in self.ops],
        }


def estimate(work, cal: Calibration | None = None) -> LatencyEstimate:
    """The estimate for a workload (:func:`model_work`)."""
    cal = cal or default_calibration()
    points = esp_nn_points(cal)
    f = fit(points, cal)
    table = calibration_table(cal)
    ops = []
    for w in work:
        ms = cycles(w, cal) / cal.cpu_hz * 1000 * f.scale
        ops.append(OpEstimate(w, ms, ms * f.psram_factor))
    return LatencyEstimate(tuple(ops), sum(o.internal_ms for o in ops), sum(o.psram_ms for o in ops), f,
                           tuple(r.loo_error for r in table), len(points), tuple(table))


def estimate_model(model) -> LatencyEstimate:
    """The estimate for a parsed ``ModelT``."""
    return estimate(model_work(model))


# The arena placement is not in the device's records: whoever adds the point must say it.
UNKNOWN_ARENA = "SET internal OR psram"


def calibration_entry(name: str, measured_ms: float, est: LatencyEstimate, conditions: str,
                      arena: str = UNKNOWN_ARENA) -> dict:
    """A new calibration point from a real run, ready to add to the file's ``points``."""
    return {"name": name, "source": "gendertool bench on a board", "conditions": conditions,
            "published_ms": round(measured_ms, 3), "arena": arena, "kernels": "esp-nn",
            "workload": [{k: v for k, v in e.work.to_dict().items() if k != "node"} for e in est.ops]}


def save_calibration_point(folder: Path, name: str, measured_ms: float, est: LatencyEstimate, conditions: str) -> Path:
    """Write a run's :func:`calibration_entry` as ``calibration_point.json`` in ``folder``."""

    path = Path(folder) / "calibration_point.json"
    write_json_atomic(path, calibration_entry(name, measured_ms, est, conditions))
    return path
