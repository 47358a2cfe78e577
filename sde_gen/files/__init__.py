"""Files: training checkpoints (atomic, rotated, read without unpickling code), model files to
share (safetensors and a recipe of allow-listed classes), and the conversion of old checkpoints
(``python -m sde_gen.files.convert``), and autoencoder files (``autoencoder_file.py``). The names
are those of the modules' ``__all__``."""

from . import autoencoder_file, checkpoint, model_file, schedules
from .autoencoder_file import *  # noqa: F403
from .checkpoint import *  # noqa: F403
from .model_file import *  # noqa: F403
from .schedules import *  # noqa: F403

__all__ = [*checkpoint.__all__, *model_file.__all__, *schedules.__all__, *autoencoder_file.__all__]
