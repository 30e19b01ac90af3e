"""Greedy vs beam search vs MBR on the built-in number-translation task.

Uses the quickstart model (``make demo`` writes runs/quickstart/best) and the
same held-out test numbers (the corpus is rebuilt from the same seed), and
writes benchmarks/results/numbers_decoding.{json,md}.

    python benchmarks/bench_numbers_decoding.py [--model runs/quickstart/best] [--n-test 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from glassformer.data.numbers import number_corpus
from glassformer.model_dir import load_model_dir
from glassformer.generation.translation import score, translate

STRATEGIES = {
    "greedy": {},
    "beam 4, α 0.6": {"beam": 4, "alpha": 0.6},
    "MBR, 8 samples, chrF": {"mbr": True, "mbr_candidates": 8, "mbr_utility": "chrf", "seed": 0},
    "MBR, beam-8 n-best, BLEU": {"mbr": True, "mbr_candidates": 8, "mbr_utility": "bleu", "mbr_source": "beam"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/quickstart/best")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="the quickstart's corpus seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model_dir(args.model)
    corpus = number_corpus("de", "en", n_valid=500, n_test=args.n_test, seed=args.seed)
    sources, refs = [s for s, _ in corpus.test], [t for _, t in corpus.test]
    rows = []
    for name, options in STRATEGIES.items():
        start = time.perf_counter()
        hyps = translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, sources, decode_options=options)
        seconds = time.perf_counter() - start
        result = score(hyps, refs)
        rows.append({"strategy": name, "options": options, **result, "seconds": round(seconds, 2),
                     "sentences_per_s": round(len(sources) / seconds, 1)})
        print(rows[-1], flush=True)
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()} CPU, {args.threads} threads",
            "torch": torch.__version__, "model": args.model, "test_sentences": len(sources)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "numbers_decoding.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [f"Number translation (de→en), {len(sources):,} held-out test numbers, {meta['machine']}, {meta['date']}",
             "", "| decoding | exact match % | sacreBLEU | chrF | sentences/s |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['strategy']} | {r['exact_match']:.2f} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['sentences_per_s']} |"
              for r in rows]
    (out / "numbers_decoding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
