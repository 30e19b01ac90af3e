"""The recurrent baseline's training step: glassformer's LSTM with attention vs the same model written
directly in PyTorch, at the same shape, one run.

Issue 21's goal: ours within 10% of the plain implementation (the library must add no overhead around
cuDNN / oneDNN).  Both sides are the ``lstm-attention`` preset's model: a bidirectional 2-layer LSTM
encoder over packed sequences (192 per direction), a 2-layer LSTM decoder (384) with input feeding,
additive attention vᵀ tanh(W_q h_t + W_k h̄_s), the attentional vector tanh(W_c [c_t; h_t]), dropout 0.1,
one embedding matrix shared by source, target and output; label-smoothed (0.1) cross-entropy.  The plain
side (:class:`PlainLSTMAttention`, below) uses the same ``nn.LSTM``, ``nn.Linear`` and ``nn.Embedding``
modules and torch's ``F.cross_entropy`` over the whole logits, no library code; its weights are copied
from ours, and the two losses are checked equal (dropout off) before timing.

Measured: forward + backward + ``torch.optim.AdamW`` step (the same optimiser settings on both) on a batch
of 64 sentence pairs of random lengths (sources 8–20 tokens, targets 8–22), vocabulary 1,395 (the numbers
task's shared BPE), in target tokens/s.  Timed with the shared harness (``benchmarks/harness.py``): the
sides interleaved in ABBA order, the same warm-up and timed steps for both, the median over rounds as the
headline (the best round kept beside it).

    .venv/bin/python benchmarks/bench_lstm_step.py [--rounds 8] [--threads 2] [--device auto] [--bf16]
    .venv/bin/python benchmarks/bench_lstm_step.py --quick --out /tmp/bench     # smoke run, about a minute

Writes lstm_step.json and lstm_step.md under --out (default benchmarks/results).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import interleave, machine_line, protocol_line, run_one_benchmark

from glassformer.models import build_model, num_parameters, preset  # noqa: E402

NAME = "lstm_step"
PRESET = "lstm-attention"
SHAPE = dict(batch=64, src_len=(8, 20), tgt_len=(8, 22), vocab=1395)
STEPS_PER_ROUND = 4
TARGET = 0.9                                       # ours / plain, at least: within 10%
PAD, BOS, EOS = 0, 1, 2


class PlainLSTMAttention(nn.Module):
    """The model written out: what someone would write with torch alone."""

    def __init__(self, vocab: int, size: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, size, padding_idx=PAD)          # source, target and output
        self.out_bias = nn.Parameter(torch.zeros(vocab))
        self.encoder = nn.LSTM(size, size // 2, layers, batch_first=True, bidirectional=True, dropout=dropout)
        self.decoder = nn.LSTM(2 * size, size, layers, batch_first=True, dropout=dropout)
        self.w_q = nn.Linear(size, size, bias=False)
        self.w_k = nn.Linear(size, size, bias=False)
        self.v = nn.Linear(size, 1, bias=False)
        self.w_c = nn.Linear(2 * size, size, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, src, tgt_in, tgt_out):
        real = src != PAD                                                        # (B, S)
        x = self.drop(self.embed(src))
        packed = pack_padded_sequence(x, real.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])   # (B, S, H)
        h, c = torch.cat([h[0::2], h[1::2]], -1), torch.cat([c[0::2], c[1::2]], -1)       # (layers, B, H)
        keys = self.w_k(memory)
        y = self.drop(self.embed(tgt_in))
        feed = memory.new_zeros(src.shape[0], memory.shape[-1])
        outputs = []
        for t in range(tgt_in.shape[1]):
            o, (h, c) = self.decoder(torch.cat([y[:, t:t + 1], feed[:, None]], -1), (h, c))     # (B, 1, H)
            scores = self.v(torch.tanh(self.w_q(o) + keys)).squeeze(-1)                       # (B, S)
            a = scores.masked_fill(~real, float("-inf")).softmax(-1)
            context = torch.bmm(a[:, None], memory)                                           # (B, 1, H)
            feed = self.drop(torch.tanh(self.w_c(torch.cat([context, o], -1))))[:, 0]
            outputs.append(feed)
        logits = F.linear(torch.stack(outputs, 1), self.embed.weight, self.out_bias)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, label_smoothing=0.1)


def copy_weights(ours, plain: PlainLSTMAttention) -> None:
    """Ours' weights into the plain model (tied: one embedding)."""
    names = {"embed.weight": "tgt_embed.weight", "out_bias": "generator.proj.bias", "w_q.weight":
             "decoder.attention.query_proj.weight", "w_k.weight": "decoder.attention.key_proj.weight",
             "v.weight": "decoder.attention.v.weight", "w_c.weight": "decoder.combine.weight"}
    theirs = dict(ours.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, p in plain.named_parameters():
            source = names.get(name) or name.replace("encoder.", "encoder.rnn.").replace("decoder.", "decoder.rnn.")
            p.copy_(theirs[source])


def batch(device: torch.device):
    g = torch.Generator().manual_seed(0)

    def sentences(low, high, first=None, last=None):
        rows = []
        for n in torch.randint(low, high + 1, (SHAPE["batch"],), generator=g).tolist():
            ids = torch.randint(4, SHAPE["vocab"], (n,), generator=g).tolist()
            rows.append(([first] if first is not None else []) + ids + ([last] if last is not None else []))
        width = max(map(len, rows))
        return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    src = sentences(*SHAPE["src_len"], last=EOS)
    target = sentences(*SHAPE["tgt_len"])
    tgt_in = torch.cat([torch.full((SHAPE["batch"], 1), BOS), target], 1)
    tgt_out = torch.cat([target, torch.full((SHAPE["batch"], 1), PAD)], 1)
    tgt_out[torch.arange(SHAPE["batch"]), (target != PAD).sum(1)] = EOS
    return src.to(device), tgt_in.to(device), tgt_out.to(device)


def bench(args, device: torch.device) -> dict:
    config = preset(PRESET, src_vocab_size=SHAPE["vocab"], tgt_vocab_size=SHAPE["vocab"])
    torch.manual_seed(0)
    ours = build_model(config).to(device)
    plain = PlainLSTMAttention(SHAPE["vocab"], config.hidden_size, config.encoder_layers, config.dropout).to(device)
    copy_weights(ours, plain)
    src, tgt_in, tgt_out = batch(device)
    with torch.no_grad():                                  # same weights, no dropout: the same loss
        first = (float(ours.eval()(src, tgt_in, tgt_out, label_smoothing=0.1)),
                 float(plain.eval()(src, tgt_in, tgt_out)))
    assert abs(first[0] - first[1]) < 1e-4, first
    ours.train(), plain.train()
    optimizers = {"ours": torch.optim.AdamW(ours.parameters(), lr=1e-4),
                  "plain": torch.optim.AdamW(plain.parameters(), lr=1e-4)}

    def step(name, loss):
        def run():
            loss().backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
        return run

    steps = 2 if args.quick else STEPS_PER_ROUND
    timings = interleave({"ours": step("ours", lambda: ours(src, tgt_in, tgt_out, label_smoothing=0.1)),
                          "plain": step("plain", lambda: plain(src, tgt_in, tgt_out))},
                         rounds=args.rounds, warmup=args.warmup, calls_per_round=steps, device=device, bf16=args.bf16)
    tokens = int((tgt_out != PAD).sum())
    return {
        "preset": PRESET, "config": config.to_dict(), "shape": {**SHAPE, "src_tokens": int((src != PAD).sum()),
                                                                  "target_tokens": tokens},
        "parameters": {"ours": num_parameters(ours), "plain": num_parameters(plain)},
        "protocol": {**timings.protocol.to_dict(), "grad_mode": "forward + backward + AdamW step"},
        "first_loss": {"ours": round(first[0], 5), "plain": round(first[1], 5)},
        "target_tokens_per_s": {"ours": timings.rate("ours", tokens, 0), "plain": timings.rate("plain", tokens, 0)},
        "ratio": timings.ratio("ours", "plain"), "target_ratio": TARGET,
    }


def markdown(r: dict) -> str:
    t = r["lstm_step"]
    c, s, rates, ratio = t["config"], t["shape"], t["target_tokens_per_s"], t["ratio"]
    met = "met" if ratio["median"] >= t["target_ratio"] else "**not met**"
    return "\n".join([
        "# The LSTM-attention training step: glassformer vs plain PyTorch", "",
        f"{machine_line(r['machine'])}{', quick smoke run (not a measurement)' if r['quick'] else ''}.", "",
        f"Preset `{t['preset']}` on both sides: bidirectional {c['encoder_layers']}-layer LSTM encoder (packed, "
        f"{c['hidden_size'] // 2} per direction), {c['decoder_layers']}-layer LSTM decoder ({c['hidden_size']}) with "
        f"input feeding and {c['attention']} attention, dropout {c['dropout']}, tied embeddings; "
        f"{t['parameters']['ours']:,} parameters (plain: {t['parameters']['plain']:,}).  The plain side is the same "
        f"`nn.LSTM`/`nn.Linear` modules written directly in the script, weights copied from ours; loss at the start "
        f"(dropout off): ours {t['first_loss']['ours']}, plain {t['first_loss']['plain']}.", "",
        f"Timing: {protocol_line(t['protocol'])}.  Ratio = ours / plain.", "",
        f"## Forward + backward + AdamW, batch {s['batch']} pairs ({s['src_tokens']:,} source, "
        f"{s['target_tokens']:,} target tokens), vocabulary {s['vocab']:,}: target tokens/s", "",
        "| ours: median (best) | plain: median (best) | ratio of medians (target) |", "| ---: | ---: | --- |",
        f"| {rates['ours']['median']:,.0f} ({rates['ours']['best']:,.0f}) | {rates['plain']['median']:,.0f} "
        f"({rates['plain']['best']:,.0f}) | {ratio['median']:.2f}× (≥ {t['target_ratio']}×, {met}) |", "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    run_one_benchmark(__doc__, NAME, "lstm_step", "LSTM-attention training step: glassformer vs the same model in plain PyTorch", bench, markdown, rounds=8, warmup=2)


if __name__ == "__main__":
    main()
