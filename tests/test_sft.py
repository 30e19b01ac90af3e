"""Supervised fine-tuning: the masked loss, the batches, the run, and its refusals."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import one_line_error, run_cli

from glassformer.data.instructions import numbers_instructions
from glassformer.errors import CheckpointError, ConfigError, InputError
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import GPT, preset
from glassformer.tokenizers import Tokenizer
from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, chat_template, encode_example, render
from glassformer.training.posttrain import (PostTrainSettings, load_policy, response_logprob_sums, right_padded,
                                            token_logprobs)
from glassformer.training.sft import SFTSettings, collate, encode_rows, evaluate_sft, finetune_sft, fixed_batches, \
    sft_loss

ROWS = [{"prompt": "What is 38 + 57?", "response": "95"}, {"prompt": "What is 1 + 1?", "response": "2"},
        {"prompt": "Which is larger, 812 or 821?", "response": "821"}]


def rendered(questions):
    return [render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": q.prompt},
                                           {"role": "assistant", "content": q.answer}], False) for q in questions]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Our own tiny GPT model directory, its characters those of the numbers task."""
    path = tmp_path_factory.mktemp("base") / "gpt"
    tok = Tokenizer.train_char(rendered(numbers_instructions("train", 400)))
    torch.manual_seed(0)
    save_model_dir(path, GPT(preset("gpt-tiny", vocab_size=tok.vocab_size, max_len=128)), tok,
                   generation={"task": "lm"})
    return path


def test_the_loss_is_the_cross_entropy_of_the_response_tokens_only(base):
    policy = load_policy(PostTrainSettings(base=str(base)))
    examples = encode_rows(ROWS, policy)
    batch = collate(examples, policy.tokenizer.pad_id)
    out = sft_loss(policy.model, batch)
    # by hand: every row's logits, and -log p of each target token given the tokens before it
    total, count = 0.0, 0
    for e in examples:
        with torch.no_grad():
            logits = policy.model(torch.tensor([e.ids]))[0]
        for t in range(1, len(e.ids)):
            if e.targets[t]:
                total -= float(F.log_softmax(logits[t - 1], -1)[e.ids[t]])
                count += 1
    assert out.n_tokens == count == sum(len(r["response"]) + 2 for r in ROWS)    # the answer, "\n", EOS
    assert float(out.total.detach()) == pytest.approx(total, rel=1e-5)
    # the same sums through response_logprob_sums (one padded forward, what DPO and RL read)
    ids = right_padded([e.ids for e in examples], policy.tokenizer.pad_id)
    targets = right_padded([e.targets for e in examples], 0).bool()
    assert float(-response_logprob_sums(policy.model, ids, targets).sum().detach()) == pytest.approx(total, rel=1e-5)
    alone = token_logprobs(policy.model, torch.tensor([examples[1].ids]))       # right padding changes nothing
    assert torch.allclose(token_logprobs(policy.model, ids)[1, :alone.shape[1]], alone[0], atol=1e-5)


def test_the_eos_after_a_response_is_a_target_even_when_it_is_the_pad_token(base):
    policy = load_policy(PostTrainSettings(base=str(base)))
    example = encode_rows(ROWS[:1], policy)[0]
    eos = policy.tokenizer.eos_id
    batch = collate([example, *encode_rows(ROWS[2:], policy)], pad_id=eos)       # pad == eos
    last = len(example.ids) - 2                                                  # the label of the last input
    assert batch.labels[0, last] == eos and (batch.labels[0, last + 1:] == -100).all()
    assert int((batch.labels != -100).sum()) == batch.n_tokens


def test_truncation_cuts_the_response_with_a_count_and_refuses_a_prompt_that_fills_the_context(base, capsys):
    ids, targets = encode_example(load_policy(PostTrainSettings(base=str(base))).tokenizer, ROWS[2],
                                  DEFAULT_CHAT_TEMPLATE)
    prompt = targets.index(True)
    policy = load_policy(PostTrainSettings(base=str(base), max_len=prompt + 1))
    examples = encode_rows(ROWS[2:], policy)
    assert len(examples[0].ids) == prompt + 1 and sum(examples[0].targets) == 1    # one response token is left
    assert "1 of 1 training examples are longer than" in capsys.readouterr().err
    policy = load_policy(PostTrainSettings(base=str(base), max_len=prompt))
    with pytest.raises(InputError, match=f"row 1: the prompt is {prompt} tokens, and the model reads {prompt} at most"):
        encode_rows(ROWS[2:], policy)
    with pytest.raises(InputError, match="row 2: assistant message 2 is empty after tokenisation"):
        encode_rows([ROWS[0], {"prompt": "x", "response": ""}], policy)


def test_train_on_prompt_trains_every_token_but_the_first(base):
    policy = load_policy(PostTrainSettings(base=str(base)))
    example = encode_rows(ROWS[:1], policy, train_on_prompt=True)[0]
    assert example.targets == [False] + [True] * (len(example.ids) - 1)


def test_a_few_steps_on_numbers_instruct_lower_the_response_loss(base, tmp_path):
    settings = SFTSettings(base=str(base), steps=30, eval_every=15, lr=3e-3, warmup=3, examples=240, batch_size=16,
                           eval_questions=4, test_questions=8, progress=False)
    policy = load_policy(settings)
    from glassformer.training.sft import sft_data

    valid = encode_rows(sft_data("numbers-instruct", settings).valid, policy, what="validation")
    before = evaluate_sft(policy.model.eval(), fixed_batches(valid, 64, policy.tokenizer.pad_id), "cpu")["loss"]
    run = finetune_sft("numbers-instruct", settings, tmp_path / "sft")
    after = [m["loss"] for m in run.result.history]
    assert after[-1] < before - 0.5, (before, after)
    assert set(run.result.history[-1]) >= {"exact", "exact_words", "exact_add", "exact_compare", "exact_german"}
    results = json.loads((tmp_path / "sft" / "results.json").read_text())
    assert results["test"]["loss"] == pytest.approx(run.test["loss"]) and "exact_add" in results["test"]
    best = load_model_dir(tmp_path / "sft" / "best")          # a model directory prompted as it was trained
    assert chat_template(tmp_path / "sft" / "best") == DEFAULT_CHAT_TEMPLATE and best.tokenizer.vocab_size == \
        policy.tokenizer.vocab_size


def test_a_directory_that_is_not_a_decoder_is_refused(tmp_path):
    from glassformer.models import Bert

    tok = Tokenizer.train_wordpiece(["a b c"], 40)
    save_model_dir(tmp_path / "bert", Bert(preset("bert-tiny", vocab_size=tok.vocab_size)), tok)
    with pytest.raises(CheckpointError, match="post-training needs a decoder-only GPT or Llama"):
        load_policy(PostTrainSettings(base=str(tmp_path / "bert")))
    with pytest.raises(ConfigError, match="is not a model directory"):
        PostTrainSettings(base=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="base is missing"):
        SFTSettings()


# -- the command -----------------------------------------------------------------------------------------
def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_finetune_sft_command_trains_and_refuses_bad_input(base, tmp_path, capsys):
    data = write_rows(tmp_path / "rows.jsonl", ROWS * 4)
    out = tmp_path / "run"
    common = ["--model", base, "--steps", "2", "--eval-every", "2", "--batch-size", "4", "--device", "cpu"]
    code, stdout, err = run_cli(capsys, "finetune", "sft", "--data", data, "--out", out, *common)
    assert code == 0, err
    assert "trained 2 steps" in stdout and "best/ on the validation rows" in stdout
    assert (out / "best" / "model.safetensors").is_file()
    code, _, err = run_cli(capsys, "finetune", "sft", "--data", data, "--out", out, *common)
    one_line_error(code, err, "already holds")                     # a run directory is never overwritten
    bad = write_rows(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "x"}])
    code, _, err = run_cli(capsys, "finetune", "sft", "--data", bad, "--out", tmp_path / "r2", *common)
    one_line_error(code, err, f"{bad} line 2: no 'response' field")
    assert not (tmp_path / "r2").exists()                          # nothing half-written
    long = write_rows(tmp_path / "long.jsonl", [{"prompt": "1 + " * 40, "response": "2"}] * 3)
    code, _, err = run_cli(capsys, "finetune", "sft", "--data", long, "--out", tmp_path / "r3", *common)
    one_line_error(code, err, f"{long} line", "the prompt is", "--max-len")
    assert not (tmp_path / "r3").exists()
    code, _, err = run_cli(capsys, "finetune", "sft", "--data", data, "--out", tmp_path / "r4", "--steps", "2")
    one_line_error(code, err, "base is missing")


def test_finetune_sft_from_a_converted_hugging_face_gpt2(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.train_from_iterator(rendered(numbers_instructions("train", 100)), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    eot = backend.token_to_id("<|endoftext|>")
    hf_dir = tmp_path / "hf"
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                         eos_token="<|endoftext|>").save_pretrained(hf_dir)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=backend.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=eot, eos_token_id=eot)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir)
    policy = load_policy(PostTrainSettings(base=str(hf_dir)))
    assert policy.tokenizer.pad_id == policy.tokenizer.eos_id == eot        # GPT-2: no pad token
    example = encode_rows(ROWS[:1], policy)[0]
    assert example.ids[-1] == eot and example.targets[-1] and example.ids.count(eot) == 1   # learns to stop
    data = write_rows(tmp_path / "rows.jsonl", ROWS * 4)
    code, stdout, err = run_cli(capsys, "finetune", "sft", "--model", hf_dir, "--data", data, "--out",
                                tmp_path / "run", "--steps", "2", "--eval-every", "2", "--batch-size", "4")
    assert code == 0, err
    best = load_model_dir(tmp_path / "run" / "best")
    assert best.tokenizer.eos_id == eot and best.config.vocab_size == config.vocab_size


def test_finetune_sft_with_lora_trains_adapters_only_and_saves_an_adapter_directory(base, tmp_path, capsys):
    from glassformer.nn.lora import has_lora

    weights = (base / "model.safetensors").read_bytes()
    data = write_rows(tmp_path / "rows.jsonl", ROWS * 4)
    out = tmp_path / "run"
    common = ["--model", base, "--data", data, "--steps", "3", "--eval-every", "3", "--batch-size", "4",
              "--lr", "0.01", "--lora", "--lora-r", "2"]
    code, stdout, err = run_cli(capsys, "finetune", "sft", "--out", out, *common)
    assert code == 0, err
    assert "LoRA r=2" in stdout + err and "parameters trainable" in stdout + err      # the count is printed
    assert (out / "best" / "adapter_config.json").is_file() and not (out / "best" / "model.safetensors").exists()
    assert (base / "model.safetensors").read_bytes() == weights                      # the base is untouched
    tuned, plain = load_model_dir(out / "best"), load_model_dir(base)
    assert has_lora(tuned.model)
    base_weights = plain.model.state_dict()
    for name, tensor in tuned.model.state_dict().items():                           # only the adapters moved
        if "lora" not in name and name in base_weights:
            assert torch.equal(tensor, base_weights[name]), name
    code, _, err = run_cli(capsys, "finetune", "sft", "--resume", out, "--steps", "4", "--extend")
    assert code == 0, err                                   # a LoRA run resumes (tests/test_posttrain_resume.py)
    code, _, err = run_cli(capsys, "finetune", "sft", "--out", tmp_path / "r2", *common, "--lora-targets", "xyz")
    one_line_error(code, err, "'xyz' (--lora-targets) matches no linear layer")
    assert not (tmp_path / "r2").exists()
