"""Greedy vs beam search vs MBR on the built-in number-translation task.

Uses the model the demo benchmark trained (``bench_quickstart.py`` keeps it in
benchmarks/out/quickstart-model/best; else runs/quickstart/best, which ``make demo`` writes) and the
same held-out test numbers (the corpus is rebuilt from the same seed).  Speed is
timed with the shared harness (``benchmarks/harness.py``): the strategies take
turns in ABBA order (the order reverses every round), each gets the same warm-up
pass (whose translations are the ones scored) and the same timed passes over the
whole test set under ``torch.inference_mode()``; sentences/s is the median over
rounds.

    python benchmarks/bench_numbers_decoding.py [--model DIR] [--n-test 2000] [--rounds 3]
    python benchmarks/bench_numbers_decoding.py --quick --out /tmp/bench      # 200 numbers, 1 round

Writes numbers_decoding.json and numbers_decoding.md under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import harness
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import DEMO_MODEL, setup, weights_digest, write_results

NAME = "numbers_decoding"
DEFAULT_MODEL = DEMO_MODEL if (DEMO_MODEL / "config.json").is_file() else harness.ROOT / "runs" / "quickstart" / "best"
STRATEGIES = {
    "greedy": {},
    "beam 4, α 0.6": {"beam": 4, "alpha": 0.6},
    "MBR, 8 samples, chrF": {"mbr": True, "mbr_candidates": 8, "mbr_utility": "chrf", "seed": 0},
    "MBR, beam-8 n-best, BLEU": {"mbr": True, "mbr_candidates": 8, "mbr_utility": "bleu", "mbr_source": "beam"},
}


def markdown(r: dict) -> str:
    lines = ["# Number translation (de→en): decoding strategies", "",
             f"{r['test_sentences']:,} held-out test numbers, model {r['model']} (model.safetensors sha256 "
             f"{r.get('model_sha256', 'not recorded')}).", "",
             f"{machine_line(r['machine'])}.  Timing: {protocol_line(r['protocol'])}.", "",
             "| decoding | exact match % | sacreBLEU | chrF | sentences/s (median) | sentences/s (best round) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {x['strategy']} | {x['exact_match']:.2f} | {x['bleu']:.2f} | {x['chrf']:.2f} | "
              f"{x['sentences_per_s']['median']:,.1f} | {x['sentences_per_s']['best']:,.1f} |" for x in r["results"]]
    if r.get("outputs_stable") is not None:
        lines += ["", f"Every timed pass gave the warm-up pass's translations: {r['outputs_stable']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, rounds=3, warmup=1)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a translation model directory")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="the quickstart's corpus seed")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n_test = 1, min(args.n_test, 200)
    args.warmup = max(args.warmup, 1)              # the warm-up pass is the one that is scored
    if not (Path(args.model) / "config.json").is_file():
        sys.exit(f"bench_numbers_decoding: no model at {args.model}; run `make demo` (or "
                 "benchmarks/bench_quickstart.py) first, or pass --model")

    from glassformer.data.numbers import number_corpus
    from glassformer.generation.translation import score, translate
    from glassformer.model_dir import load_model_dir

    device = setup(args)
    info = machine_info(device)
    loaded = load_model_dir(args.model, device)
    corpus = number_corpus("de", "en", n_valid=500, n_test=args.n_test, seed=args.seed)
    sources, refs = [s for s, _ in corpus.test], [t for _, t in corpus.test]
    outputs: dict[str, list[list[str]]] = {name: [] for name in STRATEGIES}

    def runner(name: str):
        def run():
            outputs[name].append(translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, sources,
                                           decode_options=STRATEGIES[name]))
        return run

    timings = interleave({name: runner(name) for name in STRATEGIES}, rounds=args.rounds, warmup=args.warmup,
                         device=device, inference=True, bf16=args.bf16)
    rows = []
    for name, options in STRATEGIES.items():
        rows.append({"strategy": name, "options": options, **score(outputs[name][0], refs),
                     "sentences_per_s": timings.rate(name, len(sources)),
                     "seconds_median": round(statistics.median(timings.seconds[name]), 3)})
        print(rows[-1], flush=True)
    result = {"benchmark": "decoding strategies on the number-translation task (de→en)",
              "machine": finish_machine_info(info), "quick": args.quick, "model": str(args.model),
              "model_sha256": weights_digest(args.model),
              "corpus_seed": args.seed, "test_sentences": len(sources), "protocol": timings.protocol.to_dict(),
              "outputs_stable": all(o == outs[0] for outs in outputs.values() for o in outs),
              "results": rows}
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
