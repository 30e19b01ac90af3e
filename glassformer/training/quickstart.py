"""``glassformer quickstart``: the built-in number-translation task, end to end.

Builds the German→English number corpus (train, validation and test hold
disjoint numbers; the test set is stratified by magnitude, see
:mod:`glassformer.data.numbers`), trains a small Transformer with the paper's
recipe (label smoothing, Adam with the warm-up schedule, checkpoint
averaging), then reports exact match and sacreBLEU on the held-out test
numbers, exact match per range (0–99, 100–999, ...) on numbers seen in
training and on held-out ones, the same on the spoken forms ("hundert",
"zweitausendhundert" for num2words' "einhundert", "zweitausendeinhundert";
trained on beside the written ones), and saves the model::

    OUT/best/          the model evaluated: the average of the last checkpoints
    OUT/last/          the weights after the last step
    OUT/checkpoints/   the checkpoints averaged
    OUT/results.json   the figures printed

The recipe's constants below were chosen by measurement; the figures live in
``benchmarks/results/quickstart.json`` (``benchmarks/bench_quickstart.py``).
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.numbers import NumberCorpus, number_corpus, number_ranges, range_label
from ..errors import ConfigError, GlassformerError
from ..files import read_json, write_text_atomically
from ..model_dir import load_model_dir
from ..generation.translation import score, translate
from .averaging import average_checkpoints
from .checkpoints import existing_run
from .translation import TranslationSettings, train_translation

QUICKSTART_MODEL = dict(d_model=128, n_heads=4, encoder_layers=3, decoder_layers=3, d_ff=512, dropout=0.1,
                        max_len=64)
# vocab_size 120: little more than the letters and the number morphemes ("▁", "sieben", "hundert", "und",
# "zig"), so a number's pieces read the same alone and inside a larger number, and "elf" or "eins" can be
# learned from "...hundertelf" / "...tausendeins" (a 600-token vocabulary makes "▁elf" + end a sequence
# never seen in training).  length_buckets=False: every batch mixes lengths, so the short numbers reach
# every step instead of a few batches of their own that the model forgets in between.  Validation (and a
# checkpoint) every 50 steps, for the average below.
QUICKSTART_SETTINGS = dict(preset="vaswani-small", vocab_size=120, max_tokens=4096, max_sentences=512,
                           length_buckets=False, steps=500, warmup=300, lr_factor=0.6, eval_every=50,
                           keep_checkpoints=5)
# The model evaluated and saved as OUT/best is the average of the last AVERAGE_LAST checkpoints (§6.1):
# it smooths out the noise of the last steps, which otherwise decides a few numbers either way.
AVERAGE_LAST = 5
# Numbers below 1,000 are 1% of 0..99,999 but the first ones people try ("vierzig"): a training number below
# each limit is present this many times (validation and test are untouched and stay disjoint from training).
SMALL_NUMBER_COPIES = {100: 101, 1000: 21}
QUICKSTART_TIME_LIMIT = 480.0       # seconds of training at most: a safety net for a busy machine, not the plan
SEEN_PER_RANGE = 1000               # seen numbers evaluated per range: all of 0-99 and 100-999, a sample of larger ones


def training_pairs(corpus: NumberCorpus, copies: dict[int, int] | None = None) -> list[tuple[str, str]]:
    """The training pairs, written forms then spoken ones, those of small numbers several times: a pair of a
    number below the smallest limit of ``copies`` that exceeds it is present ``copies[limit]`` times (default
    :data:`SMALL_NUMBER_COPIES`)."""
    copies = SMALL_NUMBER_COPIES if copies is None else copies
    limits = sorted(copies)
    pairs = list(corpus.train) + corpus.spoken.get("train", [])
    numbers = corpus.numbers["train"] + corpus.spoken_numbers.get("train", [])
    extra = []
    for pair, n in zip(pairs, numbers):
        limit = next((limit for limit in limits if n < limit), None)
        if limit is not None:
            extra += [pair] * (copies[limit] - 1)
    return pairs + extra


def seen_numbers(corpus: NumberCorpus, ranges: Sequence[range], per_range: int = SEEN_PER_RANGE,
                 seed: int = 0) -> tuple[list[int], list[tuple[str, str]]]:
    """Training numbers to check the model on what it was taught: every one of a range with at most
    ``per_range`` of them (all of 0–99 and 100–999 in training), a seeded uniform sample of ``per_range``
    from a larger one.  Returns (numbers, pairs), ordered by range."""
    by_range: list[list[int]] = [[] for _ in ranges]
    pair_of = dict(zip(corpus.numbers["train"], corpus.train))
    for n in corpus.numbers["train"]:
        for i, r in enumerate(ranges):
            if n in r:
                by_range[i].append(n)
                break
    rng = random.Random(seed)
    chosen = [sorted(nums) if len(nums) <= per_range else sorted(rng.sample(nums, per_range)) for nums in by_range]
    numbers = [n for nums in chosen for n in nums]
    return numbers, [pair_of[n] for n in numbers]


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """``{"n": how many, "exact_match": % of hypotheses equal to their reference}`` (``None`` for none)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses and {len(references)} references; they must align")
    right = sum(hyp.strip() == ref.strip() for hyp, ref in zip(hypotheses, references))
    return {"n": len(references), "exact_match": round(100.0 * right / len(references), 2) if references else None}


def exact_match_by_range(numbers: Sequence[int], hypotheses: Sequence[str], references: Sequence[str],
                         ranges: Sequence[range]) -> dict[str, dict[str, float]]:
    """Exact match (%) per range: ``{"0-99": {"n": 20, "exact_match": 95.0}, ...}``; a range with no
    numbers gets ``n=0`` and ``exact_match=None``.  Numbers outside every range are an error."""
    if not len(numbers) == len(hypotheses) == len(references):
        raise ValueError(f"{len(numbers)} numbers, {len(hypotheses)} hypotheses and {len(references)} references; "
                         "they must align")
    by_range: list[list[tuple[str, str]]] = [[] for _ in ranges]
    for n, hyp, ref in zip(numbers, hypotheses, references):
        i = next((i for i, r in enumerate(ranges) if n in r), None)
        if i is None:
            raise ValueError(f"number {n} is in none of the ranges {[range_label(r) for r in ranges]}")
        by_range[i].append((hyp, ref))
    return {range_label(r): exact_match([h for h, _ in pairs], [t for _, t in pairs])
            for r, pairs in zip(ranges, by_range)}


def run_quickstart(
    out_dir: str | Path = "runs/quickstart",
    *,
    src_lang: str = "de",
    tgt_lang: str = "en",
    steps: int | None = None,
    time_limit: float | None = None,
    n_test: int = 2000,
    max_number: int = 99_999,
    seed: int = 0,
    device: str = "auto",
    decode_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the corpus of 0..``max_number`` (smaller only for quick checks), train, evaluate, save.

    Returns what ``out_dir/results.json`` holds: the test set's exact match, BLEU and chrF, training and
    decoding times, ``train_steps`` of ``max_steps`` (``time_limited`` if the time limit cut training)
    and ``by_range``: exact match per range on numbers seen in training (all of those below 1,000, a
    sample of the larger ranges, see :func:`seen_numbers`) and on the held-out test numbers;
    ``spoken_forms``: the same, all ranges together, on the spoken forms of those seen and held-out
    numbers (:func:`~glassformer.data.numbers.spoken_forms`; ``n`` 0 for a source language without any).
    """
    out_dir = Path(out_dir)
    if _finished_quickstart(out_dir):
        # The demo is meant to be run again: a previous quickstart run (recognised by its results) is replaced.
        # Any other run directory is refused below, before any work.
        print(f"Replacing the previous quickstart run in {out_dir}", flush=True)
        for name in ("best", "last", "checkpoints", "log.jsonl", "results.json"):
            target = out_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    found = existing_run(out_dir) if out_dir.is_dir() else None
    if found:
        # Refused before the corpus is built; quickstart has no --resume (its corpus is built, not read from files).
        raise ConfigError(f"{out_dir} already holds {found}, which quickstart cannot continue; give quickstart another "
                          f"--out (or delete {out_dir}); a `train translation` run there continues with: "
                          f"glassformer train translation --resume {out_dir}")
    started = time.perf_counter()
    print(f"Building the {src_lang}→{tgt_lang} number corpus (0..{max_number:,}; train/valid/test disjoint) ...",
          flush=True)
    corpus = number_corpus(src_lang, tgt_lang, max_number=max_number, n_valid=min(500, (max_number + 1) // 10),
                           n_test=n_test, seed=seed)
    ranges = number_ranges(max_number)
    print(f"  {len(corpus.train):,} training, {len(corpus.valid):,} validation, {len(corpus.test):,} test pairs, e.g.")
    for src, tgt in corpus.train[:2]:
        print(f"    {src}  →  {tgt}")
    settings = TranslationSettings(**{**QUICKSTART_SETTINGS, "model": QUICKSTART_MODEL, "seed": seed, "device": device,
                                      "time_limit": QUICKSTART_TIME_LIMIT if time_limit is None else time_limit,
                                      "progress": progress,
                                      **({"steps": steps} if steps is not None else {})})
    run = train_translation(training_pairs(corpus), corpus.valid + corpus.spoken["valid"], settings, out_dir)

    # This run's checkpoints (the trainer keeps the last keep_checkpoints of them), newest last.
    averaged = [out_dir / "checkpoints" / f"step-{h['step']:08d}" for h in run.result.history][-AVERAGE_LAST:]
    averaged = [path for path in averaged if path.is_dir()] if AVERAGE_LAST else []
    if averaged:
        average_checkpoints(out_dir / "best", averaged)
    best = load_model_dir(out_dir / "best", device=next(run.model.parameters()).device)
    seen, seen_pairs = seen_numbers(corpus, ranges, seed=seed)
    seen_set = set(seen)
    spoken_seen = [pair for n, pair in zip(corpus.spoken_numbers["train"], corpus.spoken["train"]) if n in seen_set]
    groups = [corpus.test, seen_pairs, corpus.spoken["test"], spoken_seen]
    pairs = [pair for group in groups for pair in group]
    references = [t for _, t in pairs]
    # A hypothesis longer than every reference cannot be right: decoding stops a few tokens past the longest one
    # (an undertrained model would otherwise run each sentence to the model's maximum length).
    longest = max(len(ids) for ids in best.tokenizer.encode_batch(references))
    t0 = time.perf_counter()
    hypotheses = translate(best.model, best.src_tokenizer, best.tokenizer, [s for s, _ in pairs], batch_size=256,
                           max_len_a=0.0, max_len_b=longest + 8, decode_options=decode_options)
    decode_seconds = time.perf_counter() - t0
    test_hyps, seen_hyps, spoken_hyps, spoken_seen_hyps = _cut(hypotheses, groups)
    test_refs, seen_refs, spoken_refs, spoken_seen_refs = _cut(references, groups)
    result = score(test_hyps, test_refs)
    held_out = exact_match_by_range(corpus.numbers["test"], test_hyps, test_refs, ranges)
    seen_scores = exact_match_by_range(seen, seen_hyps, seen_refs, ranges)
    result.update(train_steps=run.result.steps, max_steps=run.result.max_steps, time_limited=run.result.time_limited,
                  train_seconds=round(run.result.seconds, 1), decode_seconds=round(decode_seconds, 2),
                  total_seconds=round(time.perf_counter() - started, 1),
                  best_valid_loss=round(run.result.best_loss, 4), threads=torch.get_num_threads(),
                  model=(f"average of the checkpoints of steps {', '.join(str(int(p.name[5:])) for p in averaged)}"
                         if averaged else "lowest validation loss"),
                  decoding={k: v for k, v in (decode_options or {}).items() if v is not None},
                  by_range={label: {"seen": seen_scores[label], "held_out": held_out[label]} for label in held_out},
                  spoken_forms={"seen": exact_match(spoken_seen_hyps, spoken_seen_refs),
                                "held_out": exact_match(spoken_hyps, spoken_refs)})

    print(f"\nTest set ({result['sentences']:,} numbers never seen in training):")
    print(f"  exact match {result['exact_match']:.2f}%   sacreBLEU {result['bleu']:.2f}   chrF {result['chrf']:.2f}")
    print("Exact match by range:   seen in training      held out (never in training)")
    rows = dict(result["by_range"], **({"spoken forms": result["spoken_forms"]} if corpus.spoken["test"] else {}))
    for label, parts in rows.items():
        print(f"  {label:>12}  " + "      ".join(f"{_percent(parts[k])} of {parts[k]['n']:>4}"
                                                for k in ("seen", "held_out")))
    if corpus.spoken["test"]:
        print('  (spoken forms: "hundert", "tausend" for "einhundert", "eintausend", inside numbers too)')
    print("Some held-out translations:")
    sources = [s for s, _ in corpus.test]
    _show(_examples(corpus.numbers["test"], ranges, 6), sources, test_hyps, test_refs)
    if corpus.spoken["test"]:
        print("Some held-out spoken forms:")
        _show(_examples(corpus.spoken_numbers["test"], ranges, 3), [s for s, _ in corpus.spoken["test"]],
              spoken_hyps, spoken_refs)
    write_text_atomically(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    print(f"\nModel saved to {out_dir / 'best'}  (try: glassformer translate {out_dir / 'best'} \"{sources[0]}\")")
    if run.result.time_limited:
        print(f"Training was {run.result.stop_note}; the figures above are for that shorter training.")
    print(f"Total time {result['total_seconds']:.0f}s")
    return result


def _finished_quickstart(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished quickstart run: ``last/`` and a results.json with the per-range
    scores (a ViT or caption run writes a results.json too; that run is not replaced)."""
    results = out_dir / "results.json"
    if not (results.is_file() and (out_dir / "last").is_dir()):
        return False
    try:
        saved = read_json(results)
    except GlassformerError:
        return False
    return isinstance(saved, dict) and "by_range" in saved


def _examples(numbers: Sequence[int], ranges: Sequence[range], k: int) -> list[int]:
    """Indices of ``k`` numbers to show: the first of each range (smallest range first), then the next ones."""
    firsts = [next((i for i, n in enumerate(numbers) if n in r), None) for r in ranges]
    chosen = [i for i in firsts if i is not None]
    return (chosen + [i for i in range(len(numbers)) if i not in chosen])[:k]


def _cut(items: Sequence[str], groups: Sequence[Sequence[Any]]) -> list[Sequence[str]]:
    """``items``, aligned with the groups' elements one group after the other, cut into one piece per group."""
    bounds = list(itertools.accumulate(map(len, groups), initial=0))
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def _show(indices: Sequence[int], sources: Sequence[str], hypotheses: Sequence[str],
          references: Sequence[str]) -> None:
    for i in indices:
        mark = "✓" if hypotheses[i] == references[i] else "✗"
        print(f"  {mark} {sources[i]}\n      → {hypotheses[i]}"
              + ("" if hypotheses[i] == references[i] else f"\n      (reference: {references[i]})"))


def _percent(part: dict[str, Any]) -> str:
    return "     -" if part["exact_match"] is None else f"{part['exact_match']:6.2f}%"
