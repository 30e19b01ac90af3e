"""Chat templates: rendered as transformers renders them, and which tokens are targets."""

import json

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from glassformer.errors import InputError
from glassformer.tokenizers import Tokenizer
from glassformer.tokenizers.chat import (DEFAULT_CHAT_TEMPLATE, chat_template, encode_example, encode_prompt,
                                         render)
from glassformer.tokenizers.tokenizer import CheckpointRoles

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Llama 2's own template writes the BOS and the EOS itself
LLAMA2 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
          "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
          "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 38 + 57?"},
        {"role": "assistant", "content": "95"}, {"role": "user", "content": "And 1 + 1?"},
        {"role": "assistant", "content": "2"}]


@pytest.fixture(scope="module")
def chars():
    return Tokenizer.train_char(["Be brief.\nUser: Assistant: What is 38 + 57? 95 And 1 + 1? 2"])


def test_the_default_template_renders_as_documented():
    assert render(DEFAULT_CHAT_TEMPLATE, CHAT[:3], False) == \
        "Be brief.\n\nUser: What is 38 + 57?\nAssistant: 95\n"
    assert render(DEFAULT_CHAT_TEMPLATE, CHAT[:2], True) == "Be brief.\n\nUser: What is 38 + 57?\nAssistant: "


@pytest.mark.parametrize("template", [CHATML, LLAMA2, DEFAULT_CHAT_TEMPLATE])
def test_templates_render_as_transformers_apply_chat_template(template):
    transformers = pytest.importorskip("transformers")
    backend = Backend(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    hf.chat_template = template
    for messages in (CHAT[1:3], CHAT[1:], CHAT[1:4]):
        for gen in (False, True):
            theirs = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert render(template, messages, gen, bos_token="<s>", eos_token="</s>") == theirs


def test_targets_are_exactly_the_responses_and_the_eos_after_each(chars):
    ids, targets = encode_example(chars, {"messages": CHAT}, DEFAULT_CHAT_TEMPLATE)
    eos = chars.eos_id
    # the expected ids, built independently: the rendered text piece by piece, EOS after each answer
    first = chars.encode("Be brief.\n\nUser: What is 38 + 57?\nAssistant: ")
    answer1 = chars.encode("95\n")
    between = chars.encode("User: And 1 + 1?\nAssistant: ")
    answer2 = chars.encode("2\n")
    assert ids == first + answer1 + [eos] + between + answer2 + [eos]
    expected = [False] * len(first) + [True] * (len(answer1) + 1) + [False] * len(between) + [True] * (len(answer2) + 1)
    assert targets == expected
    every, all_targets = encode_example(chars, {"messages": CHAT}, DEFAULT_CHAT_TEMPLATE, train_on_prompt=True)
    assert every == ids and all_targets == [False] + [True] * (len(ids) - 1)


def test_the_prompt_is_the_examples_prefix(chars):
    row = {"prompt": "What is 38 + 57?", "response": "95"}
    ids, targets = encode_example(chars, row, DEFAULT_CHAT_TEMPLATE)
    prompt = encode_prompt(chars, row["prompt"], DEFAULT_CHAT_TEMPLATE)
    assert ids[:len(prompt)] == prompt and targets.index(True) == len(prompt)
    history = encode_prompt(chars, CHAT[:4], DEFAULT_CHAT_TEMPLATE)     # a multi-turn prompt
    full, full_targets = encode_example(chars, {"messages": CHAT}, DEFAULT_CHAT_TEMPLATE)
    assert full[:len(history)] == history and full_targets[len(history)] is True


def llama_tokenizer(tmp_path):
    """A tokenizer whose post-processor adds <s> (Llama 2's), loaded as a checkpoint's."""
    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(["What is 38 + 57? 95 [INST] [/INST] User: Assistant:"] * 3, trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return Tokenizer(backend, CheckpointRoles.read(tmp_path, backend))


@pytest.mark.parametrize("template", [LLAMA2, DEFAULT_CHAT_TEMPLATE])
def test_one_bos_whether_the_template_writes_it_or_not(tmp_path, template):
    tok = llama_tokenizer(tmp_path)
    assert tok.frames_prompts and tok.encode_prompt("95")[0] == tok.bos_id
    ids, targets = encode_example(tok, {"prompt": "What is 38 + 57?", "response": "95"}, template)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids[-1] == tok.eos_id and ids.count(tok.eos_id) == 1 and targets[-1]   # the template's EOS, not two
    assert encode_prompt(tok, "What is 38 + 57?", template).count(tok.bos_id) == 1


def test_eos_is_appended_even_when_the_pad_token_is_the_same():
    backend = Backend(models.WordLevel({"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate("abc: \nUsersitn")}},
                                       unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = Tokenizer(backend, CheckpointRoles(pad=None, bos="<|endoftext|>", eos="<|endoftext|>", unk=None))
    assert tok.pad_id == tok.eos_id == 0
    ids, targets = encode_example(tok, {"prompt": "a", "response": "b"}, DEFAULT_CHAT_TEMPLATE)
    assert ids[-1] == 0 and targets[-1]


def test_bad_conversations_are_refused_in_one_line(chars):
    with pytest.raises(InputError, match="unknown role 'robot'"):
        encode_example(chars, {"messages": [{"role": "robot", "content": "x"}]}, DEFAULT_CHAT_TEMPLATE)
    with pytest.raises(InputError, match="no assistant message"):
        encode_example(chars, {"messages": [{"role": "user", "content": "x"}]}, DEFAULT_CHAT_TEMPLATE)
    with pytest.raises(InputError, match="empty after tokenisation"):
        encode_example(chars, {"prompt": "x", "response": ""}, DEFAULT_CHAT_TEMPLATE)
    with pytest.raises(InputError, match="refuses this conversation: no system"):
        render("{{ raise_exception('no system') }}", CHAT, False)
    with pytest.raises(InputError, match="cannot render"):            # the sandbox: no access to Python internals
        render("{{ messages.__class__.__mro__ }}", CHAT, False)


def test_a_directorys_template_comes_first_then_ours(tmp_path):
    assert chat_template(tmp_path) == DEFAULT_CHAT_TEMPLATE
    (tmp_path / "generation.json").write_text(json.dumps({"chat_template": "trained"}))
    assert chat_template(tmp_path) == "trained"
    (tmp_path / "chat_template.jinja").write_text("jinja file")
    assert chat_template(tmp_path) == "jinja file"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "hf"}]}))
    assert chat_template(tmp_path) == "hf"
