"""Why Transformers, measured: ``glassformer compare`` on the number task and the long-range probe.

Three models of about the same size on the number vocabulary, the small CPU budget allowing no more:
the Transformer (``vaswani-small`` at d_model 128, d_ff 512: 1.40 M parameters), the attention LSTM
(``lstm-attention`` at hidden and embedding size 192: 1.36 M) and the LSTM without attention (``lstm``
at 216: 1.34 M), which must carry the whole source through its recurrent state.  Each is trained for
the same wall time (``--budget`` seconds) per task, one after the other, through ``train
translation``'s recipe (training/compare.py), on the number task, then on the recall probe
(data/probes.py).  About 10 minutes on 2 cores at the defaults.

    .venv/bin/python benchmarks/compare_numbers.py                        # -> benchmarks/results/
    .venv/bin/python benchmarks/compare_numbers.py --quick --out /tmp/compare_trial    # a smoke run

Writes ``compare_numbers.json`` and ``compare_numbers.md`` (the comparison's report) under ``--out``,
its figures in ``--out/compare_numbers/``; the README's "Why Transformers" block is rendered from
the JSON by ``benchmarks/readme_tables.py``.  Run it on a quiet machine: the budget is wall time,
so other load on the machine shortens every model's training.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import RESULTS, finish_machine_info, machine_info, write_results

from glassformer.data.probes import recall_probe  # noqa: E402
from glassformer.training.compare import (NUMBERS_TASK, PROBE_TASK, CompareSettings, numbers_translation,  # noqa: E402
                                          run_comparison)

NAME = "compare_numbers"
MODELS = ["vaswani-small", "lstm-attention", "lstm"]
OVERRIDES = {"vaswani-small": {"d_model": 128, "d_ff": 512},
             "lstm-attention": {"embedding_size": 192, "hidden_size": 192},
             "lstm": {"embedding_size": 216, "hidden_size": 216}}
BUDGET = 80.0                  # seconds of training per model and task: 6 runs
# The same for every run: the learning-rate warm-up of the paper's schedule shortened from quickstart's 300
# steps (chosen for 500 steps) to 100, since 80 s on 2 cores is one or two hundred steps.
TRAINING = {"warmup": 100}
DISTANCES = [2, 4, 8, 16, 32]
# Published reference points, for orientation only (another corpus, other sizes, GPU-trained to convergence):
# bentrevett/pytorch-seq2seq on Multi30k German→English test BLEU.
PUBLISHED = {"source": "bentrevett/pytorch-seq2seq, Multi30k de→en test BLEU",
             "attention LSTM (notebook 3)": 28.0, "small Transformer (notebook 6)": 36.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS),
                        help="where compare_numbers.json/.md go (default: benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 s per model and task, small test sets")
    parser.add_argument("--budget", type=float, default=BUDGET, help=f"seconds of training per model and task "
                                                                     f"(default {BUDGET:g})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = 10.0 if args.quick else args.budget
    info = machine_info()
    started = time.perf_counter()
    settings = CompareSettings(models=MODELS, budget=budget, overrides=OVERRIDES, training=TRAINING,
                               device=args.device)      # validations: about 10 per budget
    translation = numbers_translation(n_test=200 if args.quick else 500, n_valid=100 if args.quick else 200)
    probe = recall_probe(DISTANCES, n_train=300 if args.quick else 1000, n_test=50 if args.quick else 100)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        report = Path(scratch) / "report"
        results = run_comparison(report, settings, translation=translation, probe=probe,
                                 translation_task=NUMBERS_TASK, probe_task=PROBE_TASK,
                                 on_progress=lambda line: print(line, flush=True))
        results.update(machine=finish_machine_info(info), quick=args.quick, published=PUBLISHED,
                       wall_seconds=round(time.perf_counter() - started, 1),
                       command=f"python benchmarks/compare_numbers.py{' --quick' if args.quick else ''}")
        for m in results["translation"]["models"]:             # the figures' place beside the results file
            if "figure" in m["alignment"]:
                m["alignment"]["figure"] = m["alignment"]["figure"].replace("figures/", f"{NAME}/")
        figures = out / NAME
        if figures.exists():
            shutil.rmtree(figures)
        shutil.copytree(report / "figures", figures)
        markdown = (report / "report.md").read_text(encoding="utf-8").replace("](figures/", f"]({NAME}/")
    write_results(out, NAME, results, markdown)


if __name__ == "__main__":
    main()
