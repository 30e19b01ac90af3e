"""Translation training step: glassformer's Trainer vs Hugging Face ``MarianMTModel``, same shape, same loss.

One optimiser step on one batch, the same for both sides:

* the shape of the ``vaswani-small`` preset (read from the preset, not typed here): 3 + 3
  post-norm layers, d_model 256, 4 heads, d_ff 1,024, ReLU, embeddings scaled by
  sqrt(d_model), fixed sinusoidal positions, a shared vocabulary of 8,000 with the source
  embedding, target embedding and output projection tied (Marian's
  ``share_encoder_decoder_embeddings`` + ``tie_word_embeddings``);
* dropout as the preset says on both sides (0.1 on the residual paths, 0 in attention and
  in the feed-forward), the models in training mode;
* a batch of 64 sentence pairs × 24 source and 24 target tokens of random ids, the last
  few positions of some rows padded, the same batch and the same token count for both;
* label-smoothed (0.1) cross-entropy summed over the real target tokens / their number,
  backward, gradient clipping at norm 1, Adam (β 0.9/0.98, ε 1e-9, a constant learning
  rate, the fused kernel) on both sides; fp32.

Ours is what ``glassformer train translation`` runs: ``Trainer.train_step`` with
``translation_loss(0.1)`` (the loss through the model's forward, the fused chunked
cross-entropy) and ``paper_adam``.  Hugging Face's is the usual training step of a
``MarianMTModel`` (``attn_implementation="sdpa"``) with the loss from its logits
(``F.cross_entropy(..., label_smoothing=0.1)``: the model's own ``labels=`` loss has no
smoothing).  Both start from the same weights (Marian's, ported with
``glassformer.interop.hf_marian``).  Before timing, the two losses are checked to be the
same function: a twin of ours with Marian's sinusoid layout, dropout off, gives Hugging
Face's loss on the batch.

Timed with the shared harness (ABBA order, equal warm-up, the median over rounds as the
headline) at the machine's thread count, then again at 1 thread (on a shared machine,
multi-threaded steps suffer most from other load); the median of each round's own ratio is
kept beside the ratio of the medians.  Afterwards, to say where the time goes: each side's
step split into forward (loss), backward and clip + optimiser step (medians over a few
steps), and the self time of its operators by kind (torch.profiler: matrix products,
work on vocabulary-sized tensors, dropout masks, attention, the optimiser, the rest) with
the FLOP rate of its matrix products beside this machine's fp32 matmul throughput.

    .venv/bin/python benchmarks/bench_train_translation.py [--rounds 15] [--threads N]
    .venv/bin/python benchmarks/bench_train_translation.py --quick --out /tmp/bench   # smoke run, ~30 s

Writes train_translation.json and .md under --out (default benchmarks/results).  CPU
(``--device cpu``) is what this benchmark is for; it runs on a GPU too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import MatmulPeak, add_common_args, finish_machine_info, interleave, machine_info, machine_line
from harness import protocol_line
from harness import setup, sync, write_results

from transformers import MarianConfig, MarianMTModel  # noqa: E402

from glassformer.data.batching import TranslationBatch  # noqa: E402
from glassformer.interop.hf_marian import state_dict_from_hf_marian  # noqa: E402
from glassformer.models import build_model, preset  # noqa: E402
from glassformer.training.optim import paper_adam  # noqa: E402
from glassformer.training.trainer import Trainer, TrainerConfig  # noqa: E402
from glassformer.training.translation import translation_loss  # noqa: E402

NAME = "train_translation"
PRESET = "vaswani-small"
VOCAB = 8000
BATCH, SRC_LEN, TGT_LEN = 64, 24, 24
SMOOTHING, CLIP, LR = 0.1, 1.0, 5e-4
PAD, BOS, EOS = 0, 1, 2                      # glassformer's defaults; Marian is told the same ids
TARGET_RATIO = 1.3                           # the goal set for this benchmark: ours / Hugging Face
STEPS_PER_ROUND = 2


def model_config(**overrides):
    return preset(PRESET, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, pad_id=PAD, bos_id=BOS, eos_id=EOS,
                  **overrides)


def marian_config(c) -> MarianConfig:
    """Marian with the shape, dropout and tying of our config ``c``."""
    if c.norm_first or c.gated or not c.positional.startswith("sinusoidal") or c.tie_embeddings != "all":
        raise SystemExit(f"{PRESET} is no longer a Marian-shaped model ({c}); update this benchmark")
    return MarianConfig(
        vocab_size=c.tgt_vocab_size, d_model=c.d_model, encoder_layers=c.encoder_layers,
        decoder_layers=c.decoder_layers, encoder_attention_heads=c.n_heads, decoder_attention_heads=c.n_heads,
        encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff, activation_function=c.activation,
        dropout=c.dropout, attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
        max_position_embeddings=c.max_len, scale_embedding=c.scale_embedding,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=c.pad_id, decoder_start_token_id=c.bos_id, eos_token_id=c.eos_id, forced_eos_token_id=None,
        attn_implementation="sdpa")


def twin_models(device: torch.device):
    """(ours: the preset, Marian's weights; Hugging Face's Marian), both in training mode."""
    config = model_config()
    torch.manual_seed(0)
    hf = MarianMTModel(marian_config(config))
    weights = hf_weights(hf, config)
    ours = build_model(config)
    ours.load_state_dict(weights)
    return ours.to(device).train(), hf.to(device).train()


def hf_weights(hf: MarianMTModel, config) -> dict:
    """Marian's weights as our state dict (without the output bias when ``config`` has none:
    Marian's ``final_logits_bias`` is a zero buffer it never trains)."""
    weights = state_dict_from_hf_marian({k: v.detach().clone() for k, v in hf.state_dict().items()}, config)
    if not config.final_logits_bias:
        del weights["generator.proj.bias"]
    return weights


def trainable(model) -> list:
    """The parameters an optimiser updates, tied ones once."""
    return [p for p in dict.fromkeys(model.parameters()) if p.requires_grad]


def make_batch(device: torch.device) -> TranslationBatch:
    """Random ids; rows 0, 8, 16, ... end in 1, 3 or 5 pads on both sides (sources and targets)."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (BATCH, SRC_LEN), generator=g)
    tgt = torch.randint(4, VOCAB, (BATCH, TGT_LEN + 1), generator=g)
    tgt[:, 0] = BOS
    for row in range(0, BATCH, 8):
        short = 1 + row % 6
        src[row, SRC_LEN - short:] = PAD
        tgt[row, TGT_LEN + 1 - short:] = PAD
        tgt[row, TGT_LEN - short] = EOS
    tgt_in, tgt_out = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()
    tgt_in[tgt_out == PAD] = PAD                 # BOS + target in, target + EOS out: the same positions real
    n_tokens = int((tgt_out != PAD).sum())
    return TranslationBatch(src.to(device), tgt_in.to(device), tgt_out.to(device), n_tokens)


def hf_loss(hf: MarianMTModel, b: TranslationBatch) -> torch.Tensor:
    """The summed label-smoothed loss from Marian's logits (its ``labels=`` loss has no smoothing)."""
    logits = hf(input_ids=b.src, attention_mask=(b.src != PAD).long(), decoder_input_ids=b.tgt_in,
                use_cache=False).logits
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), b.tgt_out.view(-1), ignore_index=PAD,
                           label_smoothing=SMOOTHING, reduction="sum")


def ours_trainer(model, run_dir: str, device: torch.device) -> Trainer:
    """The Trainer as ``train_translation`` builds it: translation_loss, paper_adam (a constant
    learning rate here, no schedule on either side), clipping at 1, fp32."""
    config = TrainerConfig(max_steps=10 ** 9, eval_every=10 ** 9, clip_norm=CLIP, progress=False, precision="fp32")
    return Trainer(model, lambda m: paper_adam(m, lr=LR), None, translation_loss(SMOOTHING),
                   lambda m: {"loss": 0.0}, lambda path, m: None, config, run_dir, device)


def check_same_loss(hf: MarianMTModel, batch: TranslationBatch, device: torch.device) -> dict:
    """Our loss and Hugging Face's on the same weights, dropout off: a twin of ours with Marian's
    sinusoid layout ("split") and its output bias, so that the two compute the same function."""
    config = model_config(positional="sinusoidal-split", final_logits_bias=True)
    twin = build_model(config)
    twin.load_state_dict(hf_weights(hf, config))
    twin.to(device).eval()
    hf.eval()
    with torch.no_grad():
        ours = float(twin(batch.src, batch.tgt_in, batch.tgt_out, label_smoothing=SMOOTHING, reduction="sum"))
        theirs = float(hf_loss(hf, batch))
    hf.train()
    n = batch.n_tokens
    return {"ours_per_token": round(ours / n, 6), "hf_per_token": round(theirs / n, 6),
            "abs_difference": float(f"{abs(ours - theirs) / n:.2e}")}


def phases(step_parts: dict, device: torch.device, reps: int) -> dict:
    """Median milliseconds of forward (the loss), backward, and clip + optimiser step, over
    ``reps`` steps of each side (sides alternating)."""
    times = {name: {"forward": [], "backward": [], "clip_and_step": []} for name in step_parts}
    for r in range(reps):
        for name in (list(step_parts) if r % 2 == 0 else list(reversed(step_parts))):
            forward, clip_and_step = step_parts[name]
            sync(device)
            t0 = time.perf_counter()
            loss = forward()
            sync(device)
            t1 = time.perf_counter()
            loss.backward()
            sync(device)
            t2 = time.perf_counter()
            clip_and_step()
            sync(device)
            t3 = time.perf_counter()
            for key, s in (("forward", t1 - t0), ("backward", t2 - t1), ("clip_and_step", t3 - t2)):
                times[name][key].append(s)
    return {name: {key: round(1e3 * statistics.median(v), 2) for key, v in parts.items()}
            for name, parts in times.items()}


MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")
CATEGORIES = {                               # the order the report lists them in
    "matmul_layers": "matrix products of the layers (attention projections, feed-forward)",
    "matmul_vocab": "matrix products with the vocabulary matrix (logits, their gradients)",
    "vocab_elementwise": "other work on vocabulary-sized tensors (softmax, loss, their gradients, bias)",
    "dropout_masks": "dropout masks (bernoulli_)",
    "attention_kernel": "attention kernel (scaled_dot_product_attention, forward and backward)",
    "optimizer": "fused Adam",
    "other": "everything else (element-wise ops, layer norms, copies, autograd)",
}


def category(name: str, shapes: list) -> str:
    vocab = any(VOCAB in s for s in shapes)
    if name in MATMULS:
        return "matmul_vocab" if vocab else "matmul_layers"
    if "bernoulli" in name:
        return "dropout_masks"
    if "scaled_dot_product" in name:
        return "attention_kernel"
    if "adam" in name:
        return "optimizer"
    return "vocab_elementwise" if vocab else "other"


def matmul_flops_of(name: str, shapes: list) -> int:
    """2·m·k·n of one matrix product, for the operators the profiler counts no FLOPs for (addmm_)."""
    if name in ("aten::addmm", "aten::addmm_") and len(shapes) >= 3 and len(shapes[1]) == len(shapes[2]) == 2:
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    return 0


def profile_split(runners: dict, steps: int) -> dict:
    """Self time of each kind of operator in one step (torch.profiler; ``steps`` steps per side,
    each profiled on its own, the sides in ABBA order; the median step per kind), and the FLOP
    rate of the matrix products.  Profiled times carry the profiler's own overhead per operator:
    compare the sides, not these times with the timed rounds."""
    from torch.profiler import ProfilerActivity, profile

    samples: dict[str, list[dict]] = {name: [] for name in runners}
    for r in range(steps):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
                runners[name]()
            ms = dict.fromkeys(CATEGORIES, 0.0)
            flops = matmul_s = ops = 0.0
            for e in prof.key_averages(group_by_input_shape=True):
                shapes = [tuple(x) for x in (e.input_shapes or []) if isinstance(x, (list, tuple))]
                ms[category(e.key, shapes)] += e.self_cpu_time_total / 1e3
                ops += e.count
                if e.key in MATMULS:
                    flops += e.flops or matmul_flops_of(e.key, shapes) * e.count
                    matmul_s += e.self_cpu_time_total / 1e6
            samples[name].append({**ms, "all": sum(ms.values()), "ops": ops, "flops": flops, "matmul_s": matmul_s})

    def median(name: str, key: str) -> float:
        return statistics.median(x[key] for x in samples[name])

    return {name: {"ms_per_step": {k: round(median(name, k), 1) for k in CATEGORIES},
                   "profiled_ms_per_step": round(median(name, "all"), 1),
                   "operators_per_step": round(median(name, "ops")),
                   "matmul_gflop_per_step": round(median(name, "flops") / 1e9, 2),
                   "matmul_gflops": round(median(name, "flops") / median(name, "matmul_s") / 1e9, 1)}
            for name in runners}


def timed(runners: dict, tokens: int, *, rounds: int, warmup: int, calls: int, device: torch.device) -> dict:
    """Interleave the two steps (ABBA) and summarise: step time, steps/s, target tokens/s, the ratio
    of the medians (the headline) and the median of each round's own ratio (the two sides of a
    round ran back to back, so load that changes between rounds cancels in it)."""
    timings = interleave(runners, rounds=rounds, warmup=warmup, calls_per_round=calls, device=device)
    protocol = timings.protocol.to_dict()
    protocol["grad_mode"] = "training mode (dropout on), gradients on"
    seconds = timings.seconds
    paired = [h / o for o, h in zip(seconds["ours"], seconds["hf"])]
    return {
        "threads": torch.get_num_threads(),
        "protocol": protocol,
        # 1 / the median rate (with an odd number of rounds, the median step time itself)
        "step_ms": {name: {"median": round(1e3 / statistics.median([calls / t for t in s]), 2),
                           "best": round(1e3 * min(s) / calls, 2)} for name, s in seconds.items()},
        "steps_per_s": {name: timings.rate(name, 1, 3) for name in runners},
        "target_tokens_per_s": {name: timings.rate(name, tokens, 0) for name in runners},
        "ratio": {**timings.ratio("ours", "hf"), "of_paired_rounds": round(statistics.median(paired), 3),
                  "paired_rounds": [round(x, 3) for x in paired]},
    }


def run(args, device: torch.device) -> dict:
    ours, hf = twin_models(device)
    batch = make_batch(device)
    same = check_same_loss(hf, batch, device)

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = ours_trainer(ours, run_dir, device)
        hf_params = trainable(hf)                  # (Marian's sinusoid tables are frozen parameters)
        opt_hf = torch.optim.Adam(hf_params, lr=LR, betas=(0.9, 0.98), eps=1e-9, fused=True)

        def step_ours():
            trainer.train_step([batch])

        def hf_clip_and_step():
            torch.nn.utils.clip_grad_norm_(hf_params, CLIP)
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)

        def step_hf():
            (hf_loss(hf, batch) / batch.n_tokens).backward()
            hf_clip_and_step()

        runners = {"ours": step_ours, "hf": step_hf}
        calls = 1 if args.quick else STEPS_PER_ROUND
        main = timed(runners, batch.n_tokens, rounds=args.rounds, warmup=args.warmup, calls=calls, device=device)
        one_thread = None
        if args.threads > 1 and device.type == "cpu":
            # Again at 1 thread: on a shared machine, multi-threaded steps suffer most from other load.
            torch.set_num_threads(1)
            one_thread = timed(runners, batch.n_tokens, rounds=max(1, args.rounds // 2) | 1, warmup=1, calls=1,
                               device=device)
            torch.set_num_threads(args.threads)

        # Where the time goes: the same three pieces on both sides (ours outside the Trainer,
        # doing what train_step does).
        loss_fn = translation_loss(SMOOTHING)

        def ours_clip_and_step():
            torch.nn.utils.clip_grad_norm_(trainer.params, CLIP)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        split = phases({"ours": (lambda: loss_fn(ours, batch).total / batch.n_tokens, ours_clip_and_step),
                        "hf": (lambda: hf_loss(hf, batch) / batch.n_tokens, hf_clip_and_step)},
                       device, reps=3 if args.quick else 8)
        ops = profile_split(runners, steps=1 if args.quick else 5)
        peak = MatmulPeak(device)
        for _ in range(3 if args.quick else 5):
            peak.sample()

    tokens = batch.n_tokens
    return {
        "shape": {"preset": PRESET, "model": {k: v for k, v in model_config().to_dict().items()
                                              if k in ("d_model", "n_heads", "encoder_layers", "decoder_layers",
                                                       "d_ff", "dropout", "attention_dropout", "activation_dropout",
                                                       "activation", "norm_first", "positional", "scale_embedding",
                                                       "tie_embeddings", "max_len")},
                  "vocab": VOCAB, "batch": BATCH, "src_len": SRC_LEN, "tgt_len": TGT_LEN,
                  "target_tokens": tokens, "source_tokens": int((batch.src != PAD).sum())},
        "trained_params": {name: sum(p.numel() for p in trainable(m)) for name, m in (("ours", ours), ("hf", hf))},
        "recipe": {"label_smoothing": SMOOTHING, "clip_norm": CLIP, "precision": "fp32",
                   "optimizer": f"Adam(betas=(0.9, 0.98), eps=1e-9, lr={LR}, fused=True), constant learning rate",
                   "dropout": ("as the preset on both sides: 0.1 on the residual paths, 0 in attention and the "
                               "feed-forward")},
        "same_loss_check": same,
        **main,
        "one_thread": one_thread,
        "target_ratio": TARGET_RATIO,
        "phases_ms": split,
        "profile": {"threads": torch.get_num_threads(), "categories": CATEGORIES, "sides": ops,
                    "matmul_peak": peak.summary()},
    }


def markdown(r: dict) -> str:
    s = r["shape"]
    ratio = r["ratio"]["median"]
    met = "met" if ratio >= r["target_ratio"] else "**not met**"
    lines = [
        "# Translation training step: glassformer vs Hugging Face MarianMTModel", "",
        f"{machine_line(r['machine'])}.", "",
        f"Shape of `{s['preset']}` (d_model {s['model']['d_model']}, {s['model']['n_heads']} heads, "
        f"{s['model']['encoder_layers']}+{s['model']['decoder_layers']} layers, d_ff {s['model']['d_ff']}), vocabulary "
        f"{s['vocab']:,} tied three ways; batch {s['batch']} × {s['src_len']} source + {s['tgt_len']} target tokens "
        f"({s['target_tokens']:,} real target tokens).  Dropout {r['recipe']['dropout']}; label smoothing "
        f"{r['recipe']['label_smoothing']}; {r['recipe']['optimizer']}; clipping at {r['recipe']['clip_norm']}; "
        f"{r['recipe']['precision']}.  Ours: `Trainer.train_step`; Hugging Face: `MarianMTModel` (sdpa), "
        "loss from its logits.", "",
        f"Timing: {protocol_line(r['protocol'])}.", "",
        "| threads | | step ms: median (best) | steps/s | target tokens/s | ratio of medians "
        "| median of paired rounds |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for block in (r, r.get("one_thread")):
        if not block:
            continue
        ms, sps, tps = block["step_ms"], block["steps_per_s"], block["target_tokens_per_s"]
        for name, label in (("ours", "glassformer"), ("hf", "Hugging Face Marian")):
            ratio_cells = (f"**{block['ratio']['median']:.2f}×** | {block['ratio']['of_paired_rounds']:.2f}×"
                           if name == "ours" else " | ")
            lines.append(f"| {block['threads']} | {label} | {ms[name]['median']:.1f} ({ms[name]['best']:.1f}) | "
                         f"{sps[name]['median']:.2f} | {tps[name]['median']:,.0f} | {ratio_cells} |")
    same = r["same_loss_check"]
    p = r["phases_ms"]
    lines += [
        "", f"Headline ({r['threads']} threads): ours / Hugging Face **{ratio:.2f}×** (best rounds "
        f"{r['ratio']['best']:.2f}×; target ≥ {r['target_ratio']}×: {met}).  A paired round is one round's "
        "two sides, run back to back.", "",
        f"Same loss (dropout off, same weights, Marian's sinusoid layout): ours {same['ours_per_token']:.6f}, "
        f"Hugging Face {same['hf_per_token']:.6f} per token.", "",
        "Where a step's time goes (ms, medians over a few steps, measured apart from the timed rounds):", "",
        "| | forward (loss) | backward | clip + Adam step |", "| --- | ---: | ---: | ---: |",
    ]
    for name, label in (("ours", "glassformer"), ("hf", "Hugging Face Marian")):
        lines.append(f"| {label} | {p[name]['forward']:.1f} | {p[name]['backward']:.1f} | "
                     f"{p[name]['clip_and_step']:.1f} |")
    prof = r["profile"]
    peak = prof["matmul_peak"]
    o, h = prof["sides"]["ours"], prof["sides"]["hf"]
    lines += ["", f"Operators by kind (torch.profiler, self time in ms of the median profiled step, {prof['threads']} "
              "threads; the profiler adds overhead per operator, so compare the columns, not these times with the "
              "table above):",
              "", "| | glassformer | Hugging Face |", "| --- | ---: | ---: |"]
    for key, label in prof["categories"].items():
        lines.append(f"| {label} | {o['ms_per_step'][key]:.1f} | {h['ms_per_step'][key]:.1f} |")
    lines += [f"| **all** ({o['operators_per_step']:,} / {h['operators_per_step']:,} operators per step) | "
              f"{o['profiled_ms_per_step']:.1f} | {h['profiled_ms_per_step']:.1f} |", "",
              f"Matrix products: {o['matmul_gflop_per_step']:.1f} / {h['matmul_gflop_per_step']:.1f} GFLOP per step "
              f"at {o['matmul_gflops']:.0f} / {h['matmul_gflops']:.0f} GFLOP/s (ours / Hugging Face); this machine's "
              f"{peak['dtype']} {peak['n']}×{peak['n']} product: median {peak['median_gflops']:.0f} GFLOP/s.", "",
              "Every round's figure is in the JSON file.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=15, warmup=2)
    parser.set_defaults(threads=torch.get_num_threads())      # as the machine gives, the same for both sides
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    result = {"benchmark": "translation training step: glassformer Trainer vs Hugging Face MarianMTModel",
              "machine": info, "quick": args.quick,
              "note": ("one optimiser step (forward with label-smoothed loss, backward, clip, fused Adam) on the same "
                       "random batch at vaswani-small's shape; ours through Trainer.train_step, Hugging Face's "
                       "MarianMTModel with the loss from its logits; ratio = ours' steps/s over HF's (medians)")}
    result.update(run(args, device))
    finish_machine_info(info)
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
