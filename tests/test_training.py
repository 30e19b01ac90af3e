"""Training pieces against their formulas: label smoothing, the paper's schedule, batching, Adam settings."""

import math

import pytest
import torch
import torch.nn.functional as F

from glassformer.data.batching import collate, token_budget_batches
from glassformer.models import build_model, preset
from glassformer.nn import linear_cross_entropy
from glassformer.training.optim import decay_groups, paper_adam
from glassformer.training.schedules import cosine_lr, noam_lr, noam_schedule


def test_label_smoothing_equals_closed_form():
    torch.manual_seed(0)
    V, eps, pad = 11, 0.1, 0
    hidden, weight = torch.randn(4, 6, 5), torch.randn(V, 5)
    logits = hidden @ weight.T
    target = torch.randint(1, V, (4, 6))
    target[0, 4:] = pad
    target[2, 1:] = pad
    lp = logits.log_softmax(-1)
    loss = linear_cross_entropy(hidden, weight, target, ignore_index=pad, label_smoothing=eps, reduction="mean")
    # closed form: q = (1-eps)·onehot + eps/V, loss = -Σ q log p, over real tokens, mean per token
    q = torch.full_like(lp, eps / V)
    q.scatter_(-1, target[..., None], 1 - eps + eps / V)
    per_token = -(q * lp).sum(-1)
    real = target != pad
    expected = per_token[real].sum() / real.sum()
    assert torch.allclose(loss, expected, atol=1e-6)
    # and PyTorch's own label-smoothed cross-entropy agrees
    ref = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=pad, label_smoothing=eps)
    assert torch.allclose(loss, ref, atol=1e-6)


def test_label_smoothing_is_per_token_not_per_batch():
    hidden, weight = torch.randn(2, 5, 4), torch.randn(7, 4)
    target = torch.randint(1, 7, (2, 5))
    padded = torch.cat([target, torch.zeros(2, 3, dtype=torch.long)], 1)
    hidden_padded = torch.cat([hidden, torch.randn(2, 3, 4)], 1)

    def mean(h, t):
        return linear_cross_entropy(h, weight, t, ignore_index=0, label_smoothing=0.1, reduction="mean")
    # extra padding changes neither the mean nor the sum
    assert torch.allclose(mean(hidden, target), mean(hidden_padded, padded), atol=1e-6)


def test_translation_validation_and_gradients_equal_the_loss_on_the_logits():
    """The translator's loss is the fused linear_cross_entropy, in training and in validation: equal
    (loss, perplexity, every gradient) to the label-smoothed cross-entropy of its logits."""
    from glassformer.data.batching import ParallelDataset
    from glassformer.training.translation import translation_loss, validation

    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny", src_vocab_size=40, tgt_vocab_size=40)).eval()
    pad, eps = model.config.pad_id, 0.1
    pairs = [(torch.randint(4, 40, (n,)).tolist(), torch.randint(4, 40, (n + 2,)).tolist()) for n in range(3, 12)]
    batches = ParallelDataset(pairs, pad, model.config.bos_id, model.config.eos_id).batches(200, shuffle=False)
    total = nll = tokens = 0.0
    with torch.no_grad():
        for b in batches:
            logits = model(b.src, b.tgt_in).reshape(-1, 40)
            total += float(F.cross_entropy(logits, b.tgt_out.reshape(-1), ignore_index=pad, label_smoothing=eps,
                                           reduction="sum"))
            nll += float(F.cross_entropy(logits, b.tgt_out.reshape(-1), ignore_index=pad, reduction="sum"))
            tokens += int((b.tgt_out != pad).sum())
    figures = validation(model, batches, eps, "cpu")
    assert figures["loss"] == pytest.approx(total / tokens, rel=1e-6)
    assert figures["ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-6)

    b = batches[0]
    step = translation_loss(eps)(model, b)
    fused = torch.autograd.grad(step.total, list(model.parameters()))
    reference = F.cross_entropy(model(b.src, b.tgt_in).reshape(-1, 40), b.tgt_out.reshape(-1), ignore_index=pad,
                                label_smoothing=eps, reduction="sum")
    assert float(step.total.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    for got, want in zip(fused, torch.autograd.grad(reference, list(model.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step", [1, 10, 100, 3999, 4000, 4001, 10_000, 100_000])
def test_noam_schedule_equals_formula(step):
    d_model, warmup = 512, 4000
    expected = d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
    assert noam_lr(step, d_model, warmup) == pytest.approx(expected, rel=1e-12)


def test_noam_schedule_drives_the_optimiser():
    model = build_model(preset("vaswani-tiny"))
    opt = paper_adam(model)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-9
    sched = noam_schedule(opt, d_model=32, warmup=10)
    seen = []
    for _ in range(30):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([noam_lr(s, 32, 10) for s in range(1, 31)], rel=1e-9)
    assert max(range(30), key=lambda i: seen[i]) == 9          # peak at step = warmup


def test_cosine_schedule_shape():
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)
    assert cosine_lr(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    model = build_model(preset("vaswani-tiny"))
    decay, no_decay = decay_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"])
    decay_ids = {id(p) for p in decay["params"]}
    assert id(model.tgt_embed.token.weight) not in decay_ids
    assert all(id(m.weight) not in decay_ids for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_unique


def test_token_budget_batches_respect_budget_and_cover_everything():
    import random
    rng = random.Random(1)
    lengths = [rng.randint(1, 60) for _ in range(1000)]
    batches = token_budget_batches(lengths, 512, seed=3)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(1000))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 512 or len(b) == 1
    # bucketing: padding is small compared with random batching
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.15 * sum(lengths)
    # a seed gives the same batches; another epoch a different order
    assert batches == token_budget_batches(lengths, 512, seed=3)
    assert batches != token_budget_batches(lengths, 512, seed=3, epoch=1)


def test_sentence_cap_spreads_short_examples_over_more_batches():
    lengths = [3] * 2000 + [9] * 1000
    uncapped = token_budget_batches(lengths, 4096, seed=0)
    capped = token_budget_batches(lengths, 4096, seed=0, max_sentences=256)
    assert max(len(b) for b in capped) == 256 < max(len(b) for b in uncapped)
    assert sorted(i for b in capped for i in b) == list(range(3000))
    assert sum(1 for b in capped if lengths[b[0]] == 3) == 8          # 2000 short ones in 8 batches, not 2


def test_collate_shifts_target_right():
    batch = collate([([5, 6], [7, 8, 9]), ([5], [7])], pad_id=0, bos_id=1, eos_id=2)
    assert batch.src.tolist() == [[5, 6, 2], [5, 2, 0]]
    assert batch.tgt_in.tolist() == [[1, 7, 8, 9], [1, 7, 0, 0]]
    assert batch.tgt_out.tolist() == [[7, 8, 9, 2], [7, 2, 0, 0]]
    assert batch.n_tokens == 6


def test_training_learns_a_copy_task(tmp_path):
    """A tiny model learns to copy sequences: validation loss falls far below its start."""
    from glassformer.training.translation import (
        TranslationSettings,
        train_translation,
        translate,
    )

    rng = torch.Generator().manual_seed(0)
    words = "a b c d e f g h".split()
    def sentence():
        return " ".join(words[i] for i in torch.randint(0, 8, (int(torch.randint(2, 6, (1,), generator=rng)),),
                                                      generator=rng))
    pairs = [(s, s) for s in (sentence() for _ in range(1500))]
    settings = TranslationSettings(preset="vaswani-tiny", model={"d_model": 64, "d_ff": 128, "max_len": 32},
                                   vocab_size=40, steps=300, warmup=100, lr_factor=0.25, max_tokens=600,
                                   eval_every=100, label_smoothing=0.0, progress=False)
    run = train_translation(pairs[:1400], pairs[1400:], settings, tmp_path / "run")
    first, last = run.result.history[0]["loss"], run.result.history[-1]["loss"]
    assert last < 0.2 and last < first
    hyps = translate(run.model, run.source_tokenizer, run.tokenizer, [s for s, _ in pairs[1400:1450]])
    assert sum(h == s for h, (s, _) in zip(hyps, pairs[1400:1450])) >= 40
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "last" / "config.json").is_file()
    assert math.isfinite(run.result.best_loss)


def test_separate_vocabularies_round_trip(tmp_path):
    """Separate source/target BPEs: two tokenizer files, decoder-only tying, and the directory reloads."""
    from glassformer.model_dir import load_model_dir
    from glassformer.training.translation import (
        TranslationSettings,
        train_translation,
        translate,
    )

    pairs = [(f"q{i % 7} r{i % 5}", f"x{i % 5} y{i % 7}") for i in range(300)]
    settings = TranslationSettings(preset="vaswani-tiny", shared_vocab=False, vocab_size=60, steps=5,
                                   warmup=5, eval_every=5, max_tokens=200, progress=False)
    run = train_translation(pairs[:280], pairs[280:], settings, tmp_path / "run")
    assert run.model.config.tie_embeddings == "decoder"
    assert run.source_tokenizer is not run.tokenizer
    best = tmp_path / "run" / "best"
    assert (best / "source_tokenizer.json").is_file() and (best / "tokenizer.json").is_file()
    loaded = load_model_dir(best)
    assert loaded.src_tokenizer.encode("q1 r2") == run.source_tokenizer.encode("q1 r2")
    assert loaded.src_tokenizer.encode("q1 r2") != loaded.tokenizer.encode("q1 r2")
    srcs = [s for s, _ in pairs[280:290]]
    last = load_model_dir(tmp_path / "run" / "last")
    assert translate(last.model, last.src_tokenizer, last.tokenizer, srcs) == \
        translate(run.model, run.source_tokenizer, run.tokenizer, srcs)
