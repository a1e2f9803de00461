"""Which operators TFLM's ``MicroMutableOpResolver`` can add, and with which ``Add*`` method.

The table is data, read from ``tensorflow/lite/micro/micro_mutable_op_resolver.h`` of
espressif/esp-tflite-micro (the ``BuiltinOperator_*`` or ``AddCustom("...")`` in each ``Add*``
body), so the firmware's generated resolver and ``gendertool inspect`` agree on one list.
``AddEthosU`` is left out: its custom name comes from a stub that returns "" without an Arm
Ethos-U NPU, which no ESP32 has.

Source snapshot: esp-tflite-micro master 99f49e1 = ``git describe`` v1.3.8-11-g99f49e1, 11
commits after the v1.3.8 tag the firmware pins (its idf_component.yml already says 1.4.0).
The Add* methods our classifiers need (conv, depthwise conv, add, pad, pooling, mean, fully
connected, reshape, softmax, (de)quantize) are long-standing. Should one of those 11 commits
have added an operator, a model using it would fail at the firmware's compile step, not
silently.
"""

from __future__ import annotations

TFLM_SOURCE = "esp-tflite-micro v1.3.8-11-g99f49e1"

# BuiltinOperator name -> MicroMutableOpResolver method
_BUILTIN = """
ABS                                 AddAbs
ADD                                 AddAdd
ADD_N                               AddAddN
ARG_MAX                             AddArgMax
ARG_MIN                             AddArgMin
ASSIGN_VARIABLE                     AddAssignVariable
AVERAGE_POOL_2D                     AddAveragePool2D
BATCH_MATMUL                        AddBatchMatMul
BATCH_TO_SPACE_ND                   AddBatchToSpaceNd
BROADCAST_ARGS                      AddBroadcastArgs
BROADCAST_TO                        AddBroadcastTo
CALL_ONCE                           AddCallOnce
CAST                                AddCast
CEIL                                AddCeil
CONCATENATION                       AddConcatenation
CONV_2D                             AddConv2D
COS                                 AddCos
CUMSUM                              AddCumSum
DEPTHWISE_CONV_2D                   AddDepthwiseConv2D
DEPTH_TO_SPACE                      AddDepthToSpace
DEQUANTIZE                          AddDequantize
DIV                                 AddDiv
DYNAMIC_UPDATE_SLICE                AddDynamicUpdateSlice
ELU                                 AddElu
EMBEDDING_LOOKUP                    AddEmbeddingLookup
EQUAL                               AddEqual
EXP                                 AddExp
EXPAND_DIMS                         AddExpandDims
FILL                                AddFill
FLOOR                               AddFloor
FLOOR_DIV                           AddFloorDiv
FLOOR_MOD                           AddFloorMod
FULLY_CONNECTED                     AddFullyConnected
GATHER                              AddGather
GATHER_ND                           AddGatherNd
GREATER                             AddGreater
GREATER_EQUAL                       AddGreaterEqual
HARD_SWISH                          AddHardSwish
IF                                  AddIf
L2_NORMALIZATION                    AddL2Normalization
L2_POOL_2D                          AddL2Pool2D
LEAKY_RELU                          AddLeakyRelu
LESS                                AddLess
LESS_EQUAL                          AddLessEqual
LOG                                 AddLog
LOGICAL_AND                         AddLogicalAnd
LOGICAL_NOT                         AddLogicalNot
LOGICAL_OR                          AddLogicalOr
LOGISTIC                            AddLogistic
LOG_SOFTMAX                         AddLogSoftmax
MAXIMUM                             AddMaximum
MAX_POOL_2D                         AddMaxPool2D
MEAN                                AddMean
MINIMUM                             AddMinimum
MIRROR_PAD                          AddMirrorPad
MUL                                 AddMul
NEG                                 AddNeg
NOT_EQUAL                           AddNotEqual
PACK                                AddPack
PAD                                 AddPad
PADV2                               AddPadV2
PRELU                               AddPrelu
QUANTIZE                            AddQuantize
READ_VARIABLE                       AddReadVariable
REDUCE_ALL                          AddReduceAll
REDUCE_MAX                          AddReduceMax
REDUCE_MIN                          AddReduceMin
RELU                                AddRelu
RELU6                               AddRelu6
RESHAPE                             AddReshape
RESIZE_BILINEAR                     AddResizeBilinear
RESIZE_NEAREST_NEIGHBOR             AddResizeNearestNeighbor
REVERSE_V2                          AddReverseV2
ROUND                               AddRound
RSQRT                               AddRsqrt
SELECT_V2                           AddSelectV2
SHAPE                               AddShape
SIN                                 AddSin
SLICE                               AddSlice
SOFTMAX                             AddSoftmax
SPACE_TO_BATCH_ND                   AddSpaceToBatchNd
SPACE_TO_DEPTH                      AddSpaceToDepth
SPLIT                               AddSplit
SPLIT_V                             AddSplitV
SQRT                                AddSqrt
SQUARE                              AddSquare
SQUARED_DIFFERENCE                  AddSquaredDifference
SQUEEZE                             AddSqueeze
STRIDED_SLICE                       AddStridedSlice
SUB                                 AddSub
SUM                                 AddSum
SVDF                                AddSvdf
TANH                                AddTanh
TRANSPOSE                           AddTranspose
TRANSPOSE_CONV                      AddTransposeConv
UNIDIRECTIONAL_SEQUENCE_LSTM        AddUnidirectionalSequenceLSTM
UNPACK                              AddUnpack
VAR_HANDLE                          AddVarHandle
WHILE                               AddWhile
ZEROS_LIKE                          AddZerosLike
"""

# custom operator code -> MicroMutableOpResolver method
_CUSTOM = """
CIRCULAR_BUFFER                     AddCircularBuffer
SignalDelay                         AddDelay
SignalEnergy                        AddEnergy
SignalFftAutoScale                  AddFftAutoScale
SignalFilterBank                    AddFilterBank
SignalFilterBankLog                 AddFilterBankLog
SignalFilterBankSpectralSubtraction AddFilterBankSpectralSubtraction
SignalFilterBankSquareRoot          AddFilterBankSquareRoot
SignalFramer                        AddFramer
SignalIrfft                         AddIrfft
SignalOverlapAdd                    AddOverlapAdd
SignalPCAN                          AddPCAN
SignalRfft                          AddRfft
SignalStacker                       AddStacker
SignalWindow                        AddWindow
TFLM_DECODE                         AddDecode
TFLite_Detection_PostProcess        AddDetectionPostprocess
"""


def _table(text: str) -> dict[str, str]:
    return dict(line.split() for line in text.strip().splitlines())


BUILTIN_METHODS: dict[str, str] = _table(_BUILTIN)
CUSTOM_METHODS: dict[str, str] = _table(_CUSTOM)


def resolver_method(name: str, custom: bool = False) -> str | None:
    """The ``Add*`` method registering operator ``name``, or None if TFLM cannot add it."""
    return (CUSTOM_METHODS if custom else BUILTIN_METHODS).get(name)
