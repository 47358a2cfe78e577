"""Files: training checkpoints (atomic, rotated, read without unpickling code), model files to
share (safetensors and a recipe of allow-listed classes), and the conversion of old checkpoints
(``python -m sde_gen.files.convert``)."""

from .checkpoint import (
    CKPT_PATTERN,
    MAX_STEPS,
    CheckpointError,
    Checkpoints,
    UnsafeCheckpointError,
    list_checkpoints,
    read_checkpoint,
    save_atomic,
)
from .model_file import load_model, read_model_metadata, save_model

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "Checkpoints",
    "save_atomic",
    "read_checkpoint",
    "list_checkpoints",
    "CKPT_PATTERN",
    "MAX_STEPS",
    "save_model",
    "load_model",
    "read_model_metadata",
]
