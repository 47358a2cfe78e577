"""The training history file of a run directory, kept across kills and resumes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .. import distributed as dist_utils
from ..training.callbacks import Callback
from .plots import save_loss_curve


def read_history(path: str | Path) -> list[dict]:
    """The rows of a history file (``[]`` where there is none): one dict per training step with
    ``step``, ``loss``, ``lr`` and ``grad_norm`` as the trainer recorded them."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else []


class HistoryFile(Callback):
    """A trainer callback that keeps ``path`` (e.g. ``history.json``) holding the training history
    (the trainer's ``history`` rows: loss, learning rate, gradient norm per step). It is rewritten
    atomically before every checkpoint (so a checkpoint never exists without the rows up to its step,
    whenever a kill comes) and by :meth:`write`; a run resumed from step ``s`` keeps the rows up to
    ``s`` that an earlier process wrote, so a killed and resumed run has one unbroken curve."""

    def __init__(self, path: str | Path):
        self.path, self.earlier = Path(path), []

    def on_train_start(self, trainer) -> None:
        if trainer.step:
            self.earlier = [h for h in read_history(self.path) if h["step"] <= trainer.step]

    def rows(self, trainer) -> list[dict]:
        """The whole history: the earlier processes' rows, then this one's."""
        return self.earlier + trainer.history

    def before_checkpoint(self, trainer) -> None:
        self.write(trainer)

    def write(self, trainer) -> None:
        """Write :meth:`rows` to the file (through a temporary file, so a kill leaves the old one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.rows(trainer)))
        os.replace(tmp, self.path)

    def finish(self, trainer, curve: str | Path | None = None, last: int = 100) -> dict:
        """At the end of training: rank 0 writes the file and, with ``curve``, the loss curve there
        (:func:`sde_gen.save_loss_curve`); returns ``{"final_loss": ...}``, the mean loss of the
        ``last`` finite rows (skipped steps have no loss), or ``{}`` without any."""
        rows = [h for h in self.rows(trainer) if math.isfinite(h["loss"])]
        if dist_utils.is_main_process():
            self.write(trainer)
            if rows and curve is not None:
                save_loss_curve(rows, curve)
        return {"final_loss": sum(h["loss"] for h in rows[-last:]) / len(rows[-last:])} if rows else {}
