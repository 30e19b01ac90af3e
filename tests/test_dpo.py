"""Direct Preference Optimisation: the loss against its closed form and trl's, and the task end to end."""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from glassformer.errors import ConfigError
from glassformer.training.dpo import dpo_loss, preference_figures


# -- the loss ---------------------------------------------------------------------------------------
def test_sigmoid_loss_equals_its_closed_form_by_hand():
    # log π/π_ref: chosen -5 - (-6) = +1, rejected -7 - (-6) = -1; β·(1 - (-1)) = 0.2
    out = dpo_loss(torch.tensor([-5.0]), torch.tensor([-7.0]), torch.tensor([-6.0]), torch.tensor([-6.0]), beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-7)      # 0.598139
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)
    # a policy equal to its reference: log 2 whatever the log-probabilities
    same = dpo_loss(torch.tensor([-3.0, -40.0]), torch.tensor([-9.0, -1.0]), torch.tensor([-3.0, -40.0]),
                    torch.tensor([-9.0, -1.0]), beta=0.5)
    assert torch.allclose(same.loss, torch.full((2,), math.log(2)))


def test_sigmoid_gradient_is_beta_times_the_preference_error():
    # d/dπ_c −log σ(β·h) = −β·σ(−β·h): the chosen answer is pushed up, the rejected down, less as h grows
    pc, pr = torch.tensor([-2.0, -3.0], requires_grad=True), torch.tensor([-4.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-2.5, -2.0]), torch.tensor([-3.0, -2.0])
    dpo_loss(pc, pr, rc, rr, beta=0.2).loss.sum().backward()
    h = (pc - rc) - (pr - rr)
    expected = -0.2 * torch.sigmoid(-0.2 * h.detach())
    assert torch.allclose(pc.grad, expected) and torch.allclose(pr.grad, -expected)


def test_ipo_loss_by_hand_summed_and_per_token():
    args = torch.tensor([-5.0]), torch.tensor([-7.0]), torch.tensor([-6.0]), torch.tensor([-6.0])
    # h = 1 - (-1) = 2; target 1/(2·0.1) = 5: (2 - 5)² = 9
    assert dpo_loss(*args, beta=0.1, kind="ipo").loss.item() == pytest.approx(9.0)
    # per token: 1/2 - (-1/4) = 0.75; (0.75 - 5)² = 18.0625; the rewards stay on the sums
    out = dpo_loss(*args, beta=0.1, kind="ipo", lengths=(torch.tensor([2]), torch.tensor([4])))
    assert out.loss.item() == pytest.approx(18.0625)
    assert out.chosen_rewards.item() == pytest.approx(0.1)


def test_an_unknown_loss_is_one_line():
    with pytest.raises(ConfigError, match="loss='hinge' is invalid; choose one of"):
        dpo_loss(*[torch.zeros(1)] * 4, kind="hinge")


def test_preference_figures():
    figures = preference_figures(torch.tensor([0.3, -0.1, 0.2]), torch.tensor([0.1, 0.0, 0.4]))
    assert figures["accuracy"] == pytest.approx(1 / 3)
    assert figures["margin"] == pytest.approx((0.2 - 0.1 - 0.2) / 3)
    assert figures["chosen_reward"] == pytest.approx(0.4 / 3)
    assert figures["rejected_reward"] == pytest.approx(0.5 / 3)


# -- against trl -------------------------------------------------------------------------------------
def _trl_dpo(kind: str, beta: float, per_token: torch.Tensor, completion: torch.Tensor, ref: torch.Tensor):
    """trl's DPOTrainer loss and rewards on per-token log-probabilities we choose: its own ``_compute_loss``,
    run on a stand-in trainer and a stand-in model whose fused head returns ``per_token`` ((2B, T-1),
    chosen rows first, zero off the completion) for ``completion`` ((2B, T) 0/1), with the reference's
    summed log-probabilities ``ref`` ((2B,)) precomputed as trl stores them."""
    trl = pytest.importorskip("trl", reason="the comparison with trl needs it: pip install -e '.[dev]'")
    rows, length = completion.shape
    model = SimpleNamespace(training=True)

    def forward(**kwargs):
        return SimpleNamespace(log_probs=per_token, entropy=torch.zeros(rows, length - 1),
                               mean_logits=torch.zeros(rows, length - 1),
                               is_top1=torch.zeros(rows, length - 1, dtype=torch.bool))

    accelerator = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x,
                                  autocast=nullcontext)
    metrics = {"train": defaultdict(list)}
    trainer = SimpleNamespace(model=model, accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None,
                              precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[kind],
                              loss_weights=[1.0], beta=beta, use_weighting=False, _metrics=metrics,
                              _total_train_tokens=0, _tp_size=1, label_smoothing=0.0)
    inputs = {"input_ids": torch.zeros(rows, length, dtype=torch.long),
              "attention_mask": torch.ones(rows, length, dtype=torch.long), "completion_mask": completion,
              "ref_chosen_logps": ref[: rows // 2], "ref_rejected_logps": ref[rows // 2:]}
    loss = trl.DPOTrainer._compute_loss(trainer, forward, inputs, False)
    return float(loss), metrics["train"]


@pytest.mark.parametrize("kind", ["sigmoid", "ipo"])
def test_loss_and_rewards_equal_trls_on_the_same_batch(kind, rng):
    pairs, length, beta = 3, 9, 0.1
    completion = torch.zeros(2 * pairs, length, dtype=torch.long)
    for row, start, end in [(0, 3, 9), (1, 5, 8), (2, 2, 6), (3, 4, 9), (4, 6, 7), (5, 1, 9)]:
        completion[row, start:end] = 1                     # answers of different lengths and places
    per_token = -torch.rand(2 * pairs, length - 1, generator=rng) * 3 * completion[:, 1:]   # log p of each target
    ref = -torch.rand(2 * pairs, generator=rng) * 10
    theirs, their_metrics = _trl_dpo(kind, beta, per_token, completion, ref)

    sums = per_token.sum(1)
    tokens = completion.sum(1)
    ours = dpo_loss(sums[:pairs], sums[pairs:], ref[:pairs], ref[pairs:], beta=beta, kind=kind,
                    lengths=(tokens[:pairs], tokens[pairs:]))
    assert ours.loss.mean().item() == pytest.approx(theirs, rel=1e-6)
    figures = preference_figures(ours.chosen_rewards, ours.rejected_rewards)
    assert figures["chosen_reward"] == pytest.approx(their_metrics["rewards/chosen"][0], rel=1e-6)
    assert figures["rejected_reward"] == pytest.approx(their_metrics["rewards/rejected"][0], rel=1e-6)
    assert figures["margin"] == pytest.approx(their_metrics["rewards/margins"][0], rel=1e-6)
    assert figures["accuracy"] == pytest.approx(their_metrics["rewards/accuracies"][0])


# -- the task -------------------------------------------------------------------------------------------
# prefer the first number of the prompt to a two-digit one: a rule a tiny model learns in a few steps
PAIRS = [{"prompt": f"{a}+{b}?", "chosen": str(a), "rejected": str(b + 10)} for a in range(10) for b in range(4)]


@pytest.fixture
def base(tmp_path):
    from helpers import untrained_gpt

    return untrained_gpt(tmp_path / "base", "User: Assistant: 0123456789+?\n")


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_few_steps_raise_the_preference_for_the_chosen_answers(base, tmp_path):
    from glassformer.training.dpo import (DPOSettings, encode_pairs, evaluate_preferences, in_order,
                                          reference_logprobs, train_dpo)
    from glassformer.training.posttrain import load_policy

    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    settings = DPOSettings(base=str(base), steps=30, lr=3e-3, warmup=2, eval_every=30, progress=False)
    run = train_dpo(data, settings, tmp_path / "run")
    before = load_policy(settings)                 # the base, as the run started from it
    pairs = encode_pairs(before, PAIRS)
    pad = before.tokenizer.pad_id if before.tokenizer.pad_id is not None else before.tokenizer.eos_id
    # the implicit rewards on the training pairs, the base as reference: the chosen answers gained on the
    # rejected ones (before any step every reward is 0: accuracy 0, margin 0, loss log 2)
    reference = reference_logprobs(before.model, pairs, 64, pad, "cpu")
    figures = evaluate_preferences(run.model, in_order(pairs, 64, pad, reference), settings, False, "cpu")
    assert figures["accuracy"] >= 0.9 and figures["margin"] > 0 and figures["loss"] < math.log(2)
    last = run.result.history[-1]
    assert last["margin"] > 0 and {"loss", "accuracy", "margin", "chosen_reward", "rejected_reward"} <= set(last)
    # the reference the run trained against is the base's, computed before the first step and kept
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "reference.safetensors"))
    every = torch.cat([saved["train"], saved["valid"]])
    assert every.shape == reference.shape
    assert torch.allclose(every[every[:, 0].argsort()], reference[reference[:, 0].argsort()], atol=1e-5)
    assert (tmp_path / "run" / "results.json").is_file()


def test_the_reference_with_lora_is_the_base_exactly(base):
    from glassformer.nn.lora import lora_layers
    from glassformer.training.dpo import DPOSettings, collate_pairs, encode_pairs, pair_logprobs
    from glassformer.training.posttrain import load_policy, response_logprob_sums

    policy = load_policy(DPOSettings(base=str(base), lora={"r": 4, "targets": ["q", "v"]}))
    torch.manual_seed(1)
    with torch.no_grad():                                   # as if trained: the adapters now change the outputs
        for _, layer in lora_layers(policy.model):
            for p in layer.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.3)
    plain = load_policy(DPOSettings(base=str(base)))
    batch = collate_pairs(encode_pairs(policy, PAIRS[:6]), policy.tokenizer.eos_id)
    policy_sums, reference = pair_logprobs(policy.model.eval(), batch, lora=True)
    with torch.no_grad():
        base_sums = response_logprob_sums(plain.model.eval(), batch.ids, batch.targets)
    assert torch.equal(reference, base_sums)
    assert not torch.allclose(policy_sums, base_sums, atol=1e-3)       # the adapters are on outside it
    assert not reference.requires_grad and policy_sums.requires_grad


def test_a_resumed_run_reads_the_reference_it_started_with(base, tmp_path, monkeypatch):
    from glassformer.training import dpo

    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    first = dpo.train_dpo(data, {"base": str(base), "steps": 4, "eval_every": 2, "progress": False}, tmp_path / "run")
    saved = (tmp_path / "run" / "reference.safetensors").read_bytes()

    def recomputed(*args, **kwargs):
        raise AssertionError("a resumed run recomputed the reference")

    monkeypatch.setattr(dpo, "reference_logprobs", recomputed)
    resumed = dpo.train_dpo(None, {"steps": 6}, tmp_path / "run", resume=True, extend=True)
    assert resumed.result.steps == 6 and first.result.steps == 4
    assert (tmp_path / "run" / "reference.safetensors").read_bytes() == saved


# -- bad input: one line, nothing written -----------------------------------------------------------------
@pytest.mark.parametrize("row, words", [
    ({"prompt": "1+1?", "chosen": "2", "rejected": "2"}, ["line 3", "'chosen' equals 'rejected'"]),
    ({"prompt": "1+1?", "chosen": "2"}, ["line 3", "no 'rejected' field"]),
    ({"prompt": "1+1?", "chosen": "2", "rejected": 3}, ["line 3", "'rejected' is a int, not a string"]),
    ({"prompt": "1+1?", "chosen": "2é", "rejected": "2ü"}, ["line 3", "the same tokens"]),
    ({"prompt": "1+" * 40, "chosen": "2", "rejected": "3"}, ["line 3", "tokens, more than the 64"]),
])
def test_bad_pairs_are_one_line_and_leave_nothing(base, tmp_path, capsys, row, words):
    from helpers import one_line_error, run_cli

    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS[:2] + [row] + PAIRS[2:4])
    code, _, err = run_cli(capsys, "train", "dpo", "--model", base, "--data", data, "--out", tmp_path / "run",
                           "--steps", 2)
    one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


def test_a_lora_run_saves_adapters_and_resumes(base, tmp_path, capsys):
    from helpers import run_cli

    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    code, out, err = run_cli(capsys, "train", "dpo", "--model", base, "--data", data, "--out", tmp_path / "run",
                             "--steps", 2, "--eval-every", 2, "--lora", "--lora-r", 2)
    assert code == 0, err
    assert "reference: the base (adapters off)" in out and "trainable" in out
    assert (tmp_path / "run" / "best" / "adapter_config.json").is_file()
    code, _, err = run_cli(capsys, "train", "dpo", "--resume", tmp_path / "run", "--extend", "--steps", 4)
    assert code == 0, err                                   # (resuming exactly: tests/test_posttrain_resume.py)


def test_the_command_trains_and_reports(base, tmp_path, capsys):
    from helpers import run_cli

    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    code, out, err = run_cli(capsys, "train", "dpo", "--model", base, "--data", data, "--out", tmp_path / "run",
                             "--steps", 4, "--eval-every", 2, "--loss", "ipo", "--beta", 0.5)
    assert code == 0, err
    assert "ipo loss, beta 0.5" in out and "preference accuracy" in out.splitlines()[-2]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_answer_logprobs_equal_trls_on_the_converted_model(tmp_path):
    """The log-probability sums DPO trains on, ours against trl's (its precomputed reference) for the same
    pairs on the Hugging Face export of the same model: the same ids, answer tokens and EOS on both sides."""
    pytest.importorskip("trl", reason="the comparison with trl needs it: pip install -e '.[dev]'")
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    from glassformer.interop import save_hf_directory
    from glassformer.model_dir import save_model_dir
    from glassformer.models import build_model, preset
    from glassformer.tokenizers import Tokenizer
    from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, render
    from glassformer.training.dpo import DPOSettings, encode_pairs, reference_logprobs
    from glassformer.training.posttrain import load_policy

    rows = PAIRS[::5]
    tokenizer = Tokenizer.train_char(["User: Assistant: 0123456789+?\n"])
    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny", vocab_size=tokenizer.vocab_size))
    save_model_dir(tmp_path / "base", model, tokenizer)
    save_hf_directory(model, tmp_path / "hf", tokenizer)
    policy = load_policy(DPOSettings(base=str(tmp_path / "base")))
    ours = reference_logprobs(policy.model, encode_pairs(policy, rows), 4, policy.tokenizer.eos_id, "cpu")

    def turn(row, side):        # the assistant's turn as our template renders it; trl appends the EOS itself
        prompt = render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": row["prompt"]}], True)
        whole = render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": row["prompt"]},
                                               {"role": "assistant", "content": row[side]}], False)
        return prompt, whole[len(prompt):]

    data = Dataset.from_dict({"prompt": [turn(r, "chosen")[0] for r in rows],
                              "chosen": [turn(r, "chosen")[1] for r in rows],
                              "rejected": [turn(r, "rejected")[1] for r in rows]})
    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=4, max_length=None, report_to=[], use_cpu=True, disable_tqdm=True,
                     bf16=False)                                  # (trl's default is bf16; ours fp32 on a CPU)
    trainer = DPOTrainer(model=GPT2LMHeadModel.from_pretrained(tmp_path / "hf"), args=args, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(tmp_path / "hf"))
    theirs = torch.tensor([trainer.train_dataset["ref_chosen_logps"], trainer.train_dataset["ref_rejected_logps"]]).t()
    assert torch.allclose(ours, theirs.float(), atol=1e-5), (ours, theirs)
