"""Run a checked INT8 model on the host: TFLM's host runtime and ai-edge-litert.

:class:`TflmRunner` uses the PyPI ``tflite-micro`` runtime, whose reference kernels are what
the firmware runs without ESP-NN (ESP-NN is meant to be bit-exact with them).
:class:`LiteRtRunner` uses ``ai-edge-litert``; its ``"reference"`` kernels
(``OpResolverType.BUILTIN_REF``) match TFLM bit for bit on our models, while ``"default"``
(XNNPACK) and ``"builtin"`` (optimised builtins, no delegates) may differ by a few steps.

Both run in-process: pass models that went through :func:`gendertool.model.info.load_model`, whose
checks and isolated arena probe keep TFLM aborts out of this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gendertool.errors import ModelError

if TYPE_CHECKING:
    from gendertool.model.info import ModelInfo, TensorInfo


# Host arena when none is given: generous, since the host has memory and the figure is
# measured separately (see gendertool.model.arena_probe).
DEFAULT_HOST_ARENA = 16 * 1024 * 1024

def _model_bytes(model: "bytes | ModelInfo") -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else model.data


def _as_input(input_q: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(input_q)
    if x.dtype != np.int8:
        raise ValueError(f"input must be int8, got {x.dtype}")
    if tuple(x.shape) != tuple(shape):
        if x.size != int(np.prod(shape)):
            raise ValueError(f"input shape {x.shape} does not fit the model input {tuple(shape)}")
        x = x.reshape(shape)
    return np.ascontiguousarray(x)


class TflmRunner:
    """TFLM host runtime (reference kernels, same as the firmware without ESP-NN)."""

    def __init__(self, model: "bytes | ModelInfo", arena_size: int | None = None):
        from tflite_micro.python.tflite_micro import runtime

        data = _model_bytes(model)
        if arena_size is None:
            arena_size = DEFAULT_HOST_ARENA
        try:
            self._interp = runtime.Interpreter.from_bytes(data, arena_size=int(arena_size))
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"the TFLM host runtime cannot load the model: {exc}") from None
        details = self._interp.get_input_details(0)
        self.input_shape = tuple(int(d) for d in details["shape"])
        self.output_shape = tuple(int(d) for d in self._interp.get_output_details(0)["shape"])

    def invoke(self, input_q: np.ndarray) -> np.ndarray:
        """int8 ``[1,H,W,3]`` -> int8 ``[1,C]``."""
        self._interp.set_input(_as_input(input_q, self.input_shape), 0)
        try:
            self._interp.invoke()
        except RuntimeError as exc:
            raise ModelError(f"TFLM inference failed: {exc}") from None
        return np.array(self._interp.get_output(0), dtype=np.int8, copy=True)

    def scores_for(self, tensor: bytes) -> tuple[int, ...]:
        """The reference int8 scores for an input tensor as a device sent it (protocol v2
        ``input`` records, put together by ``protocol.InputAssembler``): a result whose scores
        differ was not computed as the reference computes on that same input."""
        q = np.frombuffer(tensor, dtype=np.int8)
        return tuple(int(v) for v in self.invoke(q).reshape(-1))


class LiteRtRunner:
    """ai-edge-litert interpreter. kernels: "reference" (BUILTIN_REF), "default" (XNNPACK), "builtin"."""

    def __init__(self, model: "bytes | ModelInfo", kernels: str = "reference"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolvers = {
            "reference": OpResolverType.BUILTIN_REF,
            "default": OpResolverType.AUTO,
            "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        }
        if kernels not in resolvers:
            raise ValueError(f"kernels must be one of {', '.join(resolvers)}, not {kernels!r}")
        self.kernels = kernels
        try:
            self._interp = Interpreter(
                model_content=_model_bytes(model),
                experimental_op_resolver_type=resolvers[kernels],
                num_threads=1,
            )
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"ai-edge-litert cannot load the model: {exc}") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.output_shape = tuple(int(d) for d in self._out["shape"])

    def invoke(self, input_q: np.ndarray) -> np.ndarray:
        """int8 ``[1,H,W,3]`` -> int8 ``[1,C]``."""
        self._interp.set_tensor(self._in["index"], _as_input(input_q, self.input_shape))
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out["index"]), copy=True)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values of quantised data: ``(q - zero_point) * scale`` as float32."""
    return ((np.asarray(q, dtype=np.int32) - int(zero_point)) * np.float32(scale)).astype(np.float32)


# What TFLM's int8 softmax must output (CalculateSoftmaxParams enforces it): probabilities.
_SOFTMAX_SCALE = 1.0 / 256
_SOFTMAX_ZERO_POINT = -128


def softmax_probs(q_out: np.ndarray, out: "TensorInfo") -> np.ndarray:
    """Class probabilities from int8 output scores.

    A softmax output (scale 1/256, zero point -128) is dequantised as is (sums to ~1 within
    quantisation); any other output is treated as logits and put through a softmax.
    """
    x = dequantize(q_out, out.scale, out.zero_point)
    if abs(out.scale - _SOFTMAX_SCALE) < 1e-9 and out.zero_point == _SOFTMAX_ZERO_POINT:
        return x
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / np.sum(e, axis=-1, keepdims=True)).astype(np.float32)
