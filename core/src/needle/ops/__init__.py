"""needle's operators: each an Op class (``compute`` + ``gradient``) and a lowercase helper.

Grouped by kind: :mod:`.elementwise`, :mod:`.movement`, :mod:`.reduction`,
:mod:`.normalization`, :mod:`.linalg`, :mod:`.conv`, :mod:`.recurrent` and
:mod:`.tuple_ops`.
"""

from . import conv as _conv
from . import elementwise as _elementwise
from . import linalg as _linalg
from . import movement as _movement
from . import normalization as _normalization
from . import recurrent as _recurrent
from . import reduction as _reduction
from . import tuple_ops as _tuple_ops
from .conv import Conv, ConvWeightGrad, conv, conv_weight_grad
from .elementwise import (
    AddScalar,
    Cast,
    DivScalar,
    EWiseAdd,
    EWiseDiv,
    EWiseMaximum,
    EWiseMul,
    EWisePow,
    Exp,
    Log,
    MulScalar,
    Negate,
    PowerScalar,
    ReLU,
    Sigmoid,
    Tanh,
    add,
    add_scalar,
    astype,
    divide,
    divide_scalar,
    exp,
    log,
    maximum,
    mul_scalar,
    multiply,
    negate,
    power,
    power_scalar,
    relu,
    sigmoid,
    tanh,
)
from .linalg import Linear, MatMul, linear, matmul
from .movement import (
    BroadcastTo,
    Dilate,
    Flip,
    Gather,
    GetItem,
    Pad,
    Permute,
    Reshape,
    ScatterAdd,
    Take,
    Transpose,
    UnDilate,
    broadcast_to,
    dilate,
    flip,
    gather,
    getitem,
    pad,
    permute,
    reshape,
    scatter_add,
    take,
    transpose,
    undilate,
)
from .normalization import BatchNorm, LayerNorm, batch_norm, layer_norm
from .recurrent import LSTMStep, lstm_step
from .reduction import (
    LogSoftmax,
    LogSumExp,
    Max,
    SoftmaxCrossEntropy,
    Summation,
    logsoftmax,
    logsumexp,
    max,
    mean,
    softmax_cross_entropy,
    summation,
)
from .tuple_ops import (
    MakeTensorTuple,
    Split,
    Stack,
    TupleGetItem,
    make_tuple,
    split,
    stack,
    tuple_get_item,
)

__all__ = [
    *_elementwise.__all__,
    *_movement.__all__,
    *_normalization.__all__,
    *_reduction.__all__,
    *_linalg.__all__,
    *_conv.__all__,
    *_recurrent.__all__,
    *_tuple_ops.__all__,
]
