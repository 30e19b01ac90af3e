"""A training run's metrics, one JSON line per record, in ``RUN_DIR/log.jsonl``; and the figures
an evaluation reports besides the loss (``macro_f1``).

    {"kind": "train", "step": 100, "loss": 2.31, "lr": 0.0003, "grad_norm": 0.84, "tokens_per_s": 51200.0, "elapsed": 12.5}
    {"kind": "eval", "step": 500, "loss": 1.97, "ppl": 7.17}

``kind`` is ``"train"`` (loss, lr, grad_norm, elapsed in seconds, and the rate in what the task
counts: tokens_per_s for a GPT, target_tokens_per_s for a translator, masked_tokens_per_s for a
BERT, caption_tokens_per_s, examples_per_s for a classifier, images_per_s for a ViT) or ``"eval"``
(loss, ppl and whatever else the evaluation measures).  Each record is appended and flushed as it is written, so the file can be read (or
plotted with ``glassformer plot RUN_DIR``) while the run goes on, and a run
killed mid-write leaves at most one partial last line, which :meth:`MetricsLog.records`
skips.  NaN and infinities are written as ``null``: the file stays valid JSON
for every reader (``json.dumps`` would otherwise write the non-standard ``NaN``).

With ``tensorboard=True`` every numeric value is also a TensorBoard scalar
``"{kind}/{name}"`` under ``RUN_DIR/tensorboard`` (``pip install 'glassformer[tensorboard]'``).

In a distributed run only rank 0 should make a ``MetricsLog``: the caller
decides; this class knows nothing of ranks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ConfigError, InputError
from ..files import why_unreadable, write_text_atomically

if TYPE_CHECKING:
    import torch

LOG_NAME = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: tensors and NumPy scalars become Python numbers, NaN/inf ``None``."""
    if hasattr(value, "item") and callable(value.item):        # 0-d torch tensor, NumPy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:                # tensorboard missing, or one of its own dependencies
        raise ConfigError(f"TensorBoard logging needs the tensorboard package ({e}): "
                          "pip install 'glassformer[tensorboard]'") from None
    return SummaryWriter


class MetricsLog:
    """Appends records to ``run_dir/log.jsonl`` (and, optionally, TensorBoard).  Use as a context
    manager or call :meth:`close`."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOG_NAME
        self._summary_writer = _summary_writer_class() if tensorboard else None  # before creating anything
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and not _ends_a_line(self.path):  # a killed writer's partial line: drop it, or
            self._rewrite(lambda record: True)                   # the next record would be glued onto it
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = self._summary_writer(str(self.run_dir / TENSORBOARD_DIR)) if tensorboard else None

    def write(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
        """Append ``{"kind": kind, "step": step, **values}`` as one line and flush it; returns the record."""
        record = {"kind": kind, "step": int(step), **{name: _plain(v) for name, v in values.items()}}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in values.items():
                value = value.item() if hasattr(value, "item") and callable(value.item) else value
                if _is_number(value):                   # TensorBoard shows NaN as it is
                    self._writer.add_scalar(f"{kind}/{name}", value, int(step))
        return record

    def truncate_after(self, step: int) -> None:
        """Keep only the records with ``step <= step`` (a run resuming from its checkpoint at ``step``
        forgets what it logged after it).  The file is replaced atomically; TensorBoard hides the
        later events of its earlier files (``purge_step``)."""
        self._file.close()
        try:
            self._rewrite(lambda record: record["step"] <= step)
        finally:
            self._file = open(self.path, "a", encoding="utf-8")    # the old handle points at the replaced file
        if self._writer is not None:
            self._writer.close()
            self._writer = self._summary_writer(str(self.run_dir / TENSORBOARD_DIR), purge_step=step + 1)

    def _rewrite(self, keep) -> None:
        kept = [line for line, record in _lines(self.path) if keep(record)]
        write_text_atomically(self.path, "".join(line + "\n" for line in kept))

    @staticmethod
    def records(run_dir: str | Path) -> list[dict[str, Any]]:
        """The records of ``run_dir/log.jsonl`` in file order.  A partial last line (a process killed
        mid-write) is skipped; a line without ``"kind"`` (logs of older runs held evaluations only)
        counts as ``"eval"``."""
        return [{"kind": "eval", **record} for _, record in _lines(Path(run_dir) / LOG_NAME)]

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for every complete record of a log; bad lines other than the last are errors."""
    if why := why_unreadable(path):
        raise InputError(f"{path} {why}; a training run writes it into its run directory")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; expected one JSON object per line") from None
    lines = text.split("\n")
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = number == len(lines)                 # no newline after it: the writer may have been cut off
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if last:
                break
            raise InputError(f"{path} line {number} is not valid JSON; expected one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            if last:
                break
            raise InputError(f"{path} line {number} is not a record; expected a JSON object with an integer \"step\"")
        found.append((line, record))
    return found


# -- figures an evaluation reports ------------------------------------------------------------
def macro_f1(predicted: Sequence[int] | torch.Tensor, true: Sequence[int] | torch.Tensor) -> float:
    """The mean over classes of F1 = 2PR / (P + R), precision P = TP / predicted, recall R = TP / true;
    0 for a class with P + R = 0.  The classes are those that occur among ``true`` or ``predicted``
    (scikit-learn's ``f1_score(average="macro")``)."""
    import torch
    predicted, true = torch.as_tensor(predicted).long().flatten(), torch.as_tensor(true).long().flatten()
    if predicted.shape != true.shape or not len(true):
        raise InputError(f"macro_f1 needs as many predictions as targets, at least one ({len(predicted)}, {len(true)})")
    n = int(max(predicted.max(), true.max())) + 1
    confusion = torch.bincount(true * n + predicted, minlength=n * n).view(n, n).double()   # [true, predicted]
    tp, n_predicted, n_true = confusion.diagonal(), confusion.sum(0), confusion.sum(1)
    precision = torch.where(n_predicted > 0, tp / n_predicted.clamp_min(1), 0.0)
    recall = torch.where(n_true > 0, tp / n_true.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-300), 0.0)
    present = (n_predicted + n_true) > 0
    return float(f1[present].mean())


__all__ = ["MetricsLog", "macro_f1", "LOG_NAME", "TENSORBOARD_DIR"]
