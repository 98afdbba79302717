"""Model zoo of Chaudhari et al. 2017 (Entropy-SGD), Sec. 5.

=============== =========================== ============================ ==================
name            paper                       input_shape                  parameters
=============== =========================== ============================ ==================
small-mnistfc   Sec. 5.1 (ii)               any, flattened               50,890 (1x28x28)
mnistfc         Sec. 5.2                    any, flattened               1,867,786 (1x28x28)
small-lenet     Sec. 5.1 (i)                (C, 28, 28)                  47,658 (C = 1)
lenet           Sec. 5.2                    (C, 28, 28)                  132,220 (C = 1)
all-cnn-bn      Sec. 5.3, 5.1 (iv)          (C, H, W)                    1,667,166 (3x32x32)
char-lstm       Sec. 5.1 (iii), 5.4.2       (T,), num_classes = V        32,640 (V = 96)
lstm-lm         Sec. 5.4.1 (PTB-LSTM)       (T,), num_classes = V        66,034,000 (V = 10k)
=============== =========================== ============================ ==================

Build with :func:`build_model`; save :func:`model_spec` beside the ``state_dict`` and
rebuild with ``build_model(**spec)``.
"""

from __future__ import annotations

from landscape.models.registry import (
    ModelInfo,
    build_model,
    count_parameters,
    model_info,
    model_names,
    model_spec,
)
from landscape.models.summary import describe, layer_slices

__all__ = [
    "ModelInfo",
    "build_model",
    "count_parameters",
    "describe",
    "layer_slices",
    "model_info",
    "model_names",
    "model_spec",
]
