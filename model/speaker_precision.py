"""The speaker encoder's arithmetic: its LSTM in bfloat16 on CPUs that multiply it natively.

The GE2E encoder's 3-layer LSTM is most of the fused model's time on a CPU (about half of
indexing's CPU work and 60 % of a 30-s upload's embedding, docs/performance.md), and in
float32 it already runs at the core's matrix-product rate: no float32 rewrite halves it.
On a CPU with AVX512-BF16 or AMX, oneDNN runs the same LSTM on bfloat16 inputs and weights
(products accumulated in float32) 1.7-2.3 times faster, and the fused default's track
vectors stay within 1e-3 cosine of the float32 ones (tests/test_speaker_precision.py;
figures in docs/benchmarks/indexing.md). Elsewhere (no native bfloat16: emulated, slower;
CUDA: full float32, `model.devices.full_float32`) the encoder stays in float32.

The served model (`model.fusion.load_speaker`, hence every `Embedder`) asks for `auto`;
`SINGER_SPEAKER_PRECISION=float32` keeps it in float32 (the reference path: the vectors of
a machine without bfloat16, to 1e-5). A bare `SpeakerEncoder` (the distillation teacher,
the teacher's evaluation row) stays float32 unless asked.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache

import torch
from torch import nn

#: Environment variable: the served model's precision, `auto` (default: bfloat16 where the
#: CPU has it natively) or `float32` (everywhere).
PRECISION_ENV = "SINGER_SPEAKER_PRECISION"
PRECISIONS = ("auto", "float32")


@lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


def served_precision() -> str:
    """The precision of the served model's speaker encoder: $SINGER_SPEAKER_PRECISION, else
    `auto`. Raises ValueError for another value."""
    choice = os.environ.get(PRECISION_ENV, "").strip() or "auto"
    if choice not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={choice!r}: expected one of {PRECISIONS}")
    return choice


def lstm_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype the speaker encoder's LSTM runs in on `device` at `precision` (`auto`:
    bfloat16 on a CPU that has it natively, else float32; `float32`). Raises ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"speaker precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "auto" and device.type == "cpu" and native_bfloat16():
        return torch.bfloat16
    return torch.float32


def lowered(lstm: nn.LSTM, dtype: torch.dtype) -> nn.LSTM:
    """`lstm` itself in float32, else a copy of it with its weights in `dtype`, in eval mode
    (the float32 original stays as it is, for training and for the reference path)."""
    if dtype == torch.float32:
        return lstm
    return copy.deepcopy(lstm).to(dtype).eval()
