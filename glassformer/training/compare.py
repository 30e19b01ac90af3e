"""Why Transformers: the same work done by a Transformer and by recurrent models, for the same wall time.

``glassformer compare`` trains each model named (``vaswani-small``, ``lstm-attention`` ...) one after
the other — never at the same time, which would spoil the timings — on the same data, each for the
same wall-clock budget (the recipe's ``time_limit``), each through the one translation trainer
(:func:`~glassformer.training.translation.train_translation`), and measures what the notes claim:

    training        validation loss against wall time and against steps (each run's log.jsonl),
                    training speed in target tokens per second, parameters
    translation     exact match and sacreBLEU of the best checkpoint (greedy) on the held-out split,
                    overall and by source length (short / medium / long thirds, in characters)
    attention       each model's alignment over the same example (the explain layer's capture: the
                    recurrent decoder's attention, the Transformer's last cross-attention, mean of heads)
    the probe       accuracy against distance on the long-range recall task (data/probes.py)

::

    from glassformer.data.probes import recall_probe
    from glassformer.training.compare import CompareSettings, numbers_translation, run_comparison
    run_comparison("report", CompareSettings(models=["vaswani-small", "lstm-attention"], budget=60),
                   translation=numbers_translation(), probe=recall_probe())

:func:`run_comparison` writes the whole report (``compare_report``) into a directory that appears
only once it is complete: ``report.md``, ``results.json``, ``figures/*.png``, the translations each
model made (``translations/NAME.txt``, aligned with ``eval.src`` / ``eval.ref``) and the training runs
(``runs/NAME/best`` can be used with ``glassformer translate``).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import platform
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data.probes import RecallProbe
from ..errors import ConfigError, InputError
from ..files import write_atomically
from ..generation.translation import score, translate
from ..model_dir import load_model_dir
from ..models import num_parameters
from .metrics import LOG_NAME, MetricsLog
from .translation import TranslationSettings, train_translation

DEFAULT_MODELS = ["vaswani-small", "lstm-attention"]
MAX_STEPS = 1_000_000_000       # a budgeted run stops at its time limit, long before this
LOG_EVERY = 5                   # steps between "train" records: the wall time of each evaluation and the speed
EVAL_POINTS = 10                # validations in a budget, when the steps between them are left to the run
FALLBACK_EVAL_EVERY = 50        # ... and no warm-up run has timed a step
WARMUP_PAIRS = 2000             # the warm-up run's share of the training pairs (its tokenizer is trained on them)
BUCKETS = ("short", "medium", "long")


@dataclass
class CompareSettings:
    """What every compared run shares.  ``models``: preset names; ``overrides``: a model's preset
    fields changed (by name), e.g. to bring parameter counts close; ``training``: translation
    settings (:class:`TranslationSettings` fields) of every run; ``budget``: seconds of training
    per model."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    budget: float = 120.0
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    eval_every: int | None = None  # steps between validations; None: about EVAL_POINTS in the budget, from the
                                   # warm-up's time per step (else FALLBACK_EVAL_EVERY)
    warmup_steps: int = 3          # untimed steps of each model just before its timed run (one-off costs)
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        """Every model's run settings are built now (unknown presets, fields a preset's family does
        not have, a bad budget): a mistake is refused before anything is trained."""
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not self.budget > 0 \
                or not math.isfinite(self.budget):
            raise ConfigError(f"budget={self.budget!r} is invalid; give the seconds of training per model, > 0")
        if not self.models:
            raise ConfigError("no models to compare; name at least one preset")
        repeated = sorted({m for m in self.models if self.models.count(m) > 1})
        if repeated:
            raise ConfigError(f"model {repeated[0]!r} is named twice; name each model once")
        strangers = sorted(set(self.overrides) - set(self.models))
        if strangers:
            raise ConfigError(f"overrides for {strangers[0]!r}, which is not among the models compared "
                              f"({', '.join(self.models)})")
        if self.eval_every is not None and (isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int)
                                            or self.eval_every < 1):
            raise ConfigError(f"eval_every={self.eval_every!r} is invalid; it must be a positive integer or None")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps!r} is invalid; it must be an integer >= 0")
        for name in self.models:
            self.run_settings(name)

    def run_settings(self, name: str, eval_every: int | None = None, **task: Any) -> TranslationSettings:
        """The translation settings of model ``name``'s run (``task``: the task's own, under the user's;
        ``eval_every``: when the settings leave it to the run)."""
        every = self.eval_every or eval_every or FALLBACK_EVAL_EVERY
        fixed = {"preset": name, "model": dict(self.overrides.get(name, {})), "time_limit": float(self.budget),
                 "eval_every": every, "log_every": math.gcd(LOG_EVERY, every),
                 "seed": self.seed, "device": self.device, "progress": self.progress, "keep_checkpoints": 0}
        settings = {"steps": MAX_STEPS, **task, **self.training, **fixed}
        return TranslationSettings.from_dict(settings)


# -- one run, and what its log says ----------------------------------------------------------------
@dataclass
class ComparedRun:
    """A trained model of the comparison: its run directory and the figures of its training."""

    name: str
    out_dir: Path
    model: Any                     # the best checkpoint, loaded for evaluation
    source_tokenizer: Any
    tokenizer: Any
    summary: dict[str, Any]


def validation_curve(records: list[dict[str, Any]], total_seconds: float) -> list[dict[str, float]]:
    """Each evaluation's step, wall time since training began, and validation loss.  The wall time
    of an evaluation is that of the "train" record logged at its step (just before it); an
    evaluation between records (the one a time limit forces) is placed by linear interpolation,
    after the last record at ``total_seconds``."""
    marks = sorted((r["step"], r["elapsed"]) for r in records
                   if r.get("kind") == "train" and isinstance(r.get("elapsed"), (int, float)))
    curve = []
    for r in records:
        if r.get("kind") != "eval" or not isinstance(r.get("loss"), (int, float)):
            continue
        step = r["step"]
        at = dict(marks).get(step)
        if at is not None:
            seconds = at
        else:
            before = [(s, t) for s, t in marks if s < step] or [(0, 0.0)]
            after = [(s, t) for s, t in marks if s > step] or [(step, total_seconds)]
            (s0, t0), (s1, t1) = before[-1], after[0]
            seconds = t0 + (t1 - t0) * (step - s0) / max(s1 - s0, 1)
        curve.append({"step": step, "seconds": round(seconds, 3), "loss": round(float(r["loss"]), 4)})
    return curve


def training_speed(records: list[dict[str, Any]]) -> float | None:
    """The median of the logged training rates in target tokens per second, the first interval left
    out (it holds the first steps' one-off costs); None if fewer than two intervals were logged."""
    rates = [r["target_tokens_per_s"] for r in records
             if r.get("kind") == "train" and isinstance(r.get("target_tokens_per_s"), (int, float))]
    return round(statistics.median(rates[1:] if len(rates) > 1 else rates)) if rates else None


def evaluations_every(records: list[dict[str, Any]], budget: float) -> int | None:
    """The steps between validations that give about :data:`EVAL_POINTS` of them in ``budget`` seconds,
    from the time per step of a short run's log (its last "train" record); None without one."""
    timed = [r for r in records if r.get("kind") == "train" and isinstance(r.get("elapsed"), (int, float))]
    if not timed or timed[-1]["elapsed"] <= 0:
        return None
    per_step = timed[-1]["elapsed"] / timed[-1]["step"]
    return max(1, int(budget / (EVAL_POINTS * per_step)))


def train_one(name: str, train_pairs, valid_pairs, settings: CompareSettings, out_dir: Path,
              **task: Any) -> ComparedRun:
    """Train model ``name`` for the budget into ``out_dir`` and load its best checkpoint.  First, a
    throwaway run of ``settings.warmup_steps`` steps on the first :data:`WARMUP_PAIRS` pairs, untimed,
    pays the one-off costs (kernel choices, allocator growth) that would otherwise fall into the first
    model's budget alone; its time per step sets the steps between validations when the settings do
    not (:func:`evaluations_every`)."""
    eval_every = None
    if settings.warmup_steps:
        warmup = out_dir.parent / f".warmup-{name}"
        train_translation(train_pairs[:WARMUP_PAIRS], valid_pairs[:WARMUP_PAIRS // 10], dataclasses.replace(
            settings.run_settings(name, **task), steps=settings.warmup_steps, time_limit=None,
            eval_every=settings.warmup_steps, log_every=settings.warmup_steps, progress=False), warmup)
        eval_every = evaluations_every(MetricsLog.records(warmup), settings.budget)
        shutil.rmtree(warmup)
    run_settings = settings.run_settings(name, eval_every, **task)
    run = train_translation(train_pairs, valid_pairs, run_settings, out_dir)
    records = MetricsLog.records(out_dir) if (out_dir / LOG_NAME).is_file() else []
    best = load_model_dir(out_dir / "best", device=next(run.model.parameters()).device)
    summary = {
        "name": name, "preset": name, "family": best.config.family, "overrides": dict(run_settings.model),
        "parameters": num_parameters(best.model), "steps": run.result.steps, "eval_every": run_settings.eval_every,
        "train_seconds": round(run.result.seconds, 1), "time_limited": run.result.time_limited,
        "target_tokens_per_s": training_speed(records),
        "best_valid_loss": round(run.result.best_loss, 4),
        "curve": validation_curve(records, run.result.seconds),
    }
    return ComparedRun(name, out_dir, best.model, best.src_tokenizer, best.tokenizer, summary)


def translations_of(run: ComparedRun, sources: Sequence[str], references: Sequence[str]) -> list[str]:
    """Greedy translations of ``sources`` by the best checkpoint; decoding stops a few tokens past the
    longest reference (an unfinished model would otherwise run every line to its maximum length)."""
    longest = max(len(ids) for ids in run.tokenizer.encode_batch(list(references)))
    return translate(run.model, run.source_tokenizer, run.tokenizer, list(sources), batch_size=128,
                     max_len_a=0.0, max_len_b=longest + 8)


# -- figures of a translation ------------------------------------------------------------------------
def length_buckets(sources: Sequence[str]) -> dict[str, list[int]]:
    """The examples' indices in three near-equal thirds by source length in characters (ties in
    source order): short, medium, long.  Every index is in exactly one bucket."""
    order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
    n = len(order)
    bounds = [0, round(n / 3), round(2 * n / 3), n]
    return {name: sorted(order[a:b]) for name, a, b in zip(BUCKETS, bounds, bounds[1:])}


def scores_by_length(sources: Sequence[str], hypotheses: Sequence[str],
                     references: Sequence[str]) -> dict[str, dict[str, Any]]:
    """sacreBLEU, chrF and exact match of each length bucket, with its size and length range."""
    out = {}
    for name, indices in length_buckets(sources).items():
        lengths = [len(sources[i]) for i in indices]
        figures = score([hypotheses[i] for i in indices], [references[i] for i in indices]) if indices else \
            {"bleu": None, "chrf": None, "exact_match": None, "sentences": 0}
        out[name] = {**figures, "min_chars": min(lengths, default=None), "max_chars": max(lengths, default=None)}
    return out


def alignment(run: ComparedRun, source: str, target: str) -> dict[str, Any]:
    """The model's attention from each target token over the source, teacher-forced on ``target``
    (the explain layer's capture): its last cross-attention module, mean over heads.  For a model
    without attention over the source, or one explain cannot read, ``{"missing": why}``."""
    from ..explain.attention import attention_modules
    from ..explain.report import explain
    from ..model_format import ModelDir

    if not any(getattr(m, "cross_attention", False) for m in attention_modules(run.model).values()):
        return {"missing": "no attention over the source"}
    loaded = ModelDir(run.model, run.model.config, run.tokenizer,
                      None if run.source_tokenizer is run.tokenizer else run.source_tokenizer)
    try:
        report = explain(loaded, source, target)
    except InputError as e:        # a family explain cannot read
        return {"missing": f"explain could not capture its attention ({e})"}
    cross = [m for m in report.attention if m.kind == "cross"]
    if not cross:
        return {"missing": "no attention over the source"}
    last = cross[-1]
    return {"module": last.name, "heads": len(last.heads), "q_tokens": last.q_tokens, "k_tokens": last.k_tokens,
            "weights": last.weights.float().mean(0)}


def compare_translation(train_pairs, valid_pairs, eval_pairs, settings: CompareSettings, out_dir: str | Path,
                        *, task: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train every model on the same pairs, one after the other, and evaluate each on ``eval_pairs``.

    Returns (one summary per model: training figures, ``eval`` (exact match, BLEU, chrF),
    ``by_length``, ``hypotheses``, ``alignment``; the example the alignments are drawn on)."""
    out_dir = Path(out_dir)
    sources, references = [s for s, _ in eval_pairs], [t for _, t in eval_pairs]
    by_length = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
    example = by_length[len(by_length) // 2]          # the median-length example, the same for every model
    summaries = []
    for name in settings.models:
        run = train_one(name, train_pairs, valid_pairs, settings, out_dir / name, **(task or {}))
        hypotheses = translations_of(run, sources, references)
        summaries.append({**run.summary, "eval": score(hypotheses, references),
                          "by_length": scores_by_length(sources, hypotheses, references),
                          "hypotheses": hypotheses,
                          "alignment": alignment(run, sources[example], references[example])})
        del run
    return summaries, {"index": example, "source": sources[example], "reference": references[example]}


def compare_probe(probe: RecallProbe, settings: CompareSettings, out_dir: str | Path,
                  *, task: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train every model on the recall probe, one after the other, for the same budget; each one's
    accuracy (exact match, %) on the held-out examples of every distance."""
    out_dir = Path(out_dir)
    summaries = []
    for name in settings.models:
        run = train_one(name, probe.train, probe.valid, settings, out_dir / name, **(task or {}))
        accuracy = {}
        for d in probe.distances:
            sources, answers = [s for s, _ in probe.test[d]], [a for _, a in probe.test[d]]
            hypotheses = translations_of(run, sources, answers)
            accuracy[str(d)] = score(hypotheses, answers)["exact_match"]
        summaries.append({**{k: v for k, v in run.summary.items() if k != "curve"}, "accuracy": accuracy})
        del run
    return summaries


# -- the report, written whole ---------------------------------------------------------------------------
def machine(device: str = "auto") -> dict[str, Any]:
    """Where the comparison ran on ``device`` (the report's first lines)."""
    import os

    from ..devices import pick_device

    where = pick_device(device)
    gpu = torch.cuda.get_device_name(where) if where.type == "cuda" else None
    cpu = platform.processor() or platform.machine()
    try:                                            # Linux names the model
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                    if line.lower().startswith("model name")), cpu)
    except OSError:
        pass
    return {"date": datetime.date.today().isoformat(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__}


def parameter_spread(models: list[dict[str, Any]]) -> float | None:
    """The largest parameter count over the smallest (1.0 = equal); None for fewer than two models."""
    counts = [m["parameters"] for m in models]
    return round(max(counts) / min(counts), 2) if len(counts) > 1 else None


def run_comparison(out_dir: str | Path, settings: CompareSettings, *,
                   translation: dict[str, Any] | None = None, probe: RecallProbe | None = None,
                   translation_task: dict[str, Any] | None = None, probe_task: dict[str, Any] | None = None,
                   describe: dict[str, Any] | None = None,
                   on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole comparison into ``out_dir``, which appears only once everything is written (an
    existing one is replaced then; the caller decides whether it may be).

    ``translation``: ``{"name": ..., "train": pairs, "valid": pairs, "eval": pairs, "eval_split": ...}``;
    ``probe``: a :class:`RecallProbe`; at least one of them.  ``*_task``: translation settings of that
    task's runs (under ``settings.training``).  Returns what ``results.json`` holds."""
    from .compare_report import write_report

    if translation is None and probe is None:
        raise ConfigError("nothing to compare: give a translation task, the probe, or both")
    say = on_progress or (lambda line: None)
    results: dict[str, Any] = {"machine": machine(settings.device), "budget_seconds": float(settings.budget),
                               "models": list(settings.models), "overrides": settings.overrides,
                               "training": settings.training, "seed": settings.seed, **(describe or {})}

    def fill(tmp: Path) -> None:
        if translation is not None:
            say(f"translation ({translation['name']}): {len(settings.models)} models, "
                f"{settings.budget:g} s of training each")
            summaries, example = compare_translation(translation["train"], translation["valid"],
                                                     translation["eval"], settings, tmp / "runs",
                                                     task=translation_task)
            for m in summaries:
                m["run"] = f"runs/{m['name']}"
            results["translation"] = {
                "task": translation["name"], "train_pairs": len(translation["train"]),
                "valid_pairs": len(translation["valid"]), "eval_pairs": len(translation["eval"]),
                "eval_split": translation.get("eval_split", "test"), "settings": translation_task or {},
                "example": example, "models": summaries, "parameter_spread": parameter_spread(summaries)}
        if probe is not None:
            say(f"long-range probe: distances {', '.join(map(str, probe.distances))}, "
                f"{settings.budget:g} s of training each")
            summaries = compare_probe(probe, settings, tmp / "runs" / "probe", task=probe_task)
            for m in summaries:
                m["run"] = f"runs/probe/{m['name']}"
            results["probe"] = {"task": "recall", "distances": probe.distances, "symbols": len(probe.symbols),
                                "train_pairs": len(probe.train),
                                "test_per_distance": len(probe.test[probe.distances[0]]),
                                "settings": probe_task or {}, "models": summaries,
                                "parameter_spread": parameter_spread(summaries)}
        write_report(results, tmp, translation["eval"] if translation is not None else None)

    write_atomically(out_dir, fill)
    return results




# -- the built-in tasks: their data and the settings every model's run shares --------------------------
# The number task as quickstart trains it (training/quickstart.py, chosen there by measurement): a
# 120-token BPE (the number morphemes), batches mixing lengths, 512 pairs at most.
NUMBERS_TASK = dict(vocab_size=120, max_tokens=4096, max_sentences=512, length_buckets=False, warmup=300,
                    lr_factor=0.6)
# The probe's vocabulary: 26 letters, the marker and the specials, each symbol one token ("▁f").  Its
# target is one token, so a batch of 2,048 source tokens is cheap and learns little: more, smaller steps,
# and a short warm-up, since a budget of minutes on a CPU is a few hundred steps.
PROBE_TASK = dict(vocab_size=64, max_tokens=2048, max_sentences=256, warmup=100)


def numbers_translation(*, n_test: int = 1000, n_valid: int = 500, seed: int = 0) -> dict[str, Any]:
    """The German→English number task (data/numbers.py) as :func:`run_comparison` takes it: its
    training pairs (quickstart's, spoken forms included), validation and held-out test numbers."""
    from ..data.numbers import number_corpus
    from .quickstart import training_pairs

    corpus = number_corpus("de", "en", n_valid=n_valid, n_test=n_test, seed=seed)
    return {"name": "numbers (German → English)", "train": training_pairs(corpus), "valid": corpus.valid,
            "eval": corpus.test, "eval_split": "held-out test"}


__all__ = ["CompareSettings", "ComparedRun", "DEFAULT_MODELS", "NUMBERS_TASK", "PROBE_TASK", "alignment",
           "compare_probe", "compare_translation", "evaluations_every", "length_buckets", "numbers_translation",
           "run_comparison", "scores_by_length", "training_speed", "validation_curve"]
