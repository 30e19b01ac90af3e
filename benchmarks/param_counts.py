"""Parameter counts of the named presets, as ``glassformer params`` prints them, beside the papers' figures.

Each model is built on the 'meta' device (nothing allocated or initialised) and
counted with ``glassformer.explain.params.param_table``: tied matrices once.  The
papers' own totals are kept beside ours with where they come from; the
difference is ours relative to theirs.

    .venv/bin/python benchmarks/param_counts.py [--out DIR]        # a few seconds

Writes params.json and params.md under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse

import harness
from harness import machine_info, write_results

NAME = "params"
# (preset, vocabulary size or None for the preset's own, the paper's total, where the paper says so)
MODELS = [
    ("vaswani-base", 37000, 65e6, "Vaswani et al. 2017, Table 3 (base), shared source-target BPE of about 37,000 tokens"),
    ("vaswani-big", 37000, 213e6, "Vaswani et al. 2017, Table 3 (big), shared source-target BPE of about 37,000 tokens"),
    ("gpt2", None, None, None),
    ("gpt3-175b", None, 175.0e9, "Brown et al. 2020, Table 2.1 (GPT-3 175B)"),
    ("bert-base", None, 110e6, "Devlin et al. 2019, §3 (BERT-BASE), WordPiece vocabulary of 30,522 (30,000 in the text)"),
    ("bert-large", None, 340e6, "Devlin et al. 2019, §3 (BERT-LARGE)"),
]


def count(name: str, vocab: int | None) -> dict:
    from glassformer.explain.params import with_vocab
    from glassformer.explain.params import param_table
    from glassformer.models import preset

    config = with_vocab(preset(name), vocab, None, None)
    table = param_table(config)                     # built on the meta device
    vocab_size = getattr(config, "vocab_size", None) or config.tgt_vocab_size
    padded = getattr(config, "padded_vocab_size", vocab_size)   # embedding rows (GPT presets pad to a multiple of 64)
    return {"preset": name, "family": config.family, "vocab": vocab_size, "padded_vocab": padded, "params": table.total,
            "by_kind": table.by_kind, "tie_embeddings": getattr(config, "tie_embeddings", None)}


def human(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def human_paper(n: float) -> str:
    """A paper's rounded total as the paper writes it: 65M, 213M, 175.0B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:g}M"


def markdown(r: dict) -> str:
    lines = ["# Parameter counts (`glassformer params`)", "",
             "| preset | vocabulary | parameters | paper | difference | paper's source |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for m in r["models"]:
        paper = m.get("paper_params")
        difference = f"{100 * m['difference_vs_paper']:+.1f}%" if paper else "—"
        vocab = f"{m['vocab']:,}" + (f" (padded to {m['padded_vocab']:,})" if m.get("padded_vocab", m["vocab"]) != m["vocab"] else "")
        lines.append(f"| `{m['preset']}` | {vocab} | {m['params']:,} ({human(m['params'])}) | "
                     f"{human_paper(paper) if paper else '—'} | {difference} | {m.get('paper_source') or ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(harness.RESULTS), help="results directory (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="the same (it takes seconds)")
    args = parser.parse_args()
    models = []
    for name, vocab, paper, source in MODELS:
        row = count(name, vocab)
        if paper:
            row.update(paper_params=paper, paper_source=source,
                       difference_vs_paper=round(row["params"] / paper - 1, 4))
        models.append(row)
    info = machine_info()
    result = {"benchmark": "parameter counts of presets (meta device, tied matrices once)",
              "machine": {k: info[k] for k in ("date", "torch", "python", "git_commit")}, "models": models}
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
