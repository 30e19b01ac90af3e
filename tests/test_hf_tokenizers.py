"""Hugging Face directories with their own tokenizers, as real checkpoints ship them.

Each directory holds a seeded tiny model (save_pretrained) and a tokenizer built with the
``tokenizers`` library the way the family's released tokenizer.json is (GPT-2's byte-level BPE
whose one special token is ``<|endoftext|>``; Llama 2's ``<unk> <s> </s>`` with a post-processor
adding ``<s>``; Llama 3's ``<|begin_of_text|>``/``<|end_of_text|>`` and several end ids; T5's
``<pad> </s> <unk>`` with ``</s>`` appended), wrapped in ``PreTrainedTokenizerFast`` and saved next
to it.  ``glassformer generate`` / ``translate`` must print what transformers' greedy ``generate``
decoded by ``AutoTokenizer`` on the same directory gives.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as Backend  # noqa: E402
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from glassformer.model_dir import load_model_dir  # noqa: E402
from helpers import one_line_error, run_cli  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; all who wander are not lost.",
    "It was the best of times, it was the worst of times.",
] * 4
PROMPTS = ["The quick brown", "It was the best of times, it was"]
NEW = 12


def noisy(model, seed=0, scale=0.3):
    """Larger weights than the initialiser's: varied continuations from a random model."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def hf_greedy(path, prompt, n=NEW):
    """transformers' greedy continuation of ``prompt``: (prompt ids, new ids, new text decoded by its tokenizer)."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    prompt_ids, new = enc["input_ids"][0].tolist(), out[0, enc["input_ids"].shape[1]:].tolist()
    return prompt_ids, new, tok.decode(new, skip_special_tokens=True)


def ours_cli(capsys, path, prompt, n=NEW):
    code, out, err = run_cli(capsys, "generate", path, prompt, "--temperature", "0", "--max-new-tokens", n)
    assert code == 0, err
    return out


def check_generate(capsys, path, tmp_path):
    """``generate`` (one prompt, streamed, and a left-padded batch) prints transformers' greedy text;
    the prompt is framed as transformers frames it; ``explain`` reads the directory."""
    from glassformer.generation.text import prompt_ids

    loaded = load_model_dir(path)
    for prompt in PROMPTS:
        theirs_prompt, _, text = hf_greedy(path, prompt)
        assert prompt_ids(loaded.tokenizer, prompt, loaded.config.max_len, NEW) == theirs_prompt
        assert ours_cli(capsys, path, prompt) == prompt + text + "\n"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "generate", path, "--prompts-file", prompts, "--temperature", "0",
                             "--max-new-tokens", NEW)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["completion"] for r in rows] == [hf_greedy(path, p)[2] for p in PROMPTS]
    code, _, err = run_cli(capsys, "explain", path, PROMPTS[0], "--out", tmp_path / "x.html")
    assert code == 0, err


def save_tokenizer(backend, path, **special):
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(path)


# -- GPT-2 -------------------------------------------------------------------------------------------
def gpt2_tokenizer():
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return backend


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_gpt2_tok")
    backend = gpt2_tokenizer()
    eot = backend.token_to_id("<|endoftext|>")
    save_tokenizer(backend, path, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=backend.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=eot, eos_token_id=eot)
    torch.manual_seed(0)
    noisy(transformers.GPT2LMHeadModel(config)).save_pretrained(path)
    return path


def test_gpt2_tokenizer_roles_come_from_the_checkpoint(gpt2_dir):
    tok = load_model_dir(gpt2_dir).tokenizer
    eot = tok.token_to_id("<|endoftext|>")
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.eos_ids) == (eot, eot, eot, (eot,))
    assert not tok.has_pad            # no pad token: batches pad under the mask with a stand-in id


def test_gpt2_generate_matches_transformers(gpt2_dir, capsys, tmp_path):
    check_generate(capsys, gpt2_dir, tmp_path)


# -- Llama 2: <unk> <s> </s>, no pad token, the post-processor adds <s> -----------------------------------
def llama2_tokenizer():
    backend = Backend(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    return backend


def llama_model(path, vocab, seed=0, **ids):
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, **ids)
    torch.manual_seed(seed)
    return noisy(transformers.LlamaForCausalLM(config), seed)


@pytest.fixture(scope="module")
def llama2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_llama2_tok")
    backend = llama2_tokenizer()
    save_tokenizer(backend, path, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    llama_model(path, backend.get_vocab_size(), bos_token_id=1, eos_token_id=2, pad_token_id=None).save_pretrained(path)
    return path


def test_llama2_tokenizer_roles_and_one_bos(llama2_dir):
    tok = load_model_dir(llama2_dir).tokenizer
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.eos_ids) == (0, 1, 2, (2,))
    assert not tok.has_pad
    assert tok.encode_prompt("The quick")[:2].count(1) == 1 and tok.encode_prompt("The quick")[0] == 1


def test_llama2_generate_matches_transformers(llama2_dir, capsys, tmp_path):
    check_generate(capsys, llama2_dir, tmp_path)


# -- Llama 3: byte-level BPE, <|begin_of_text|> added by the post-processor, several end ids --------------
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def llama3_tokenizer():
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.add_special_tokens(LLAMA3_SPECIAL)          # after the BPE vocabulary, as Llama 3's
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return backend


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """The generation config ends a text at <|end_of_text|> or <|eot_id|>; <|eot_id|>'s output row is
    made to win where the model would next say what it says at the 4th step of PROMPTS[0], so the
    continuation ends there, at the second end id."""
    path = tmp_path_factory.mktemp("hf_llama3_tok")
    backend = llama3_tokenizer()
    save_tokenizer(backend, path, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    bos, end, eot = (backend.token_to_id(t) for t in LLAMA3_SPECIAL)
    model = llama_model(path, backend.get_vocab_size(), bos_token_id=bos, eos_token_id=end, pad_token_id=None)
    model.save_pretrained(path)
    _, new, _ = hf_greedy(path, PROMPTS[0])
    with torch.no_grad():
        model.lm_head.weight[eot] = 2 * model.lm_head.weight[new[3]]
    model.generation_config.eos_token_id = [end, eot]
    model.save_pretrained(path)
    return path


def test_llama3_generation_stops_at_any_end_id(llama3_dir, capsys, tmp_path):
    tok = load_model_dir(llama3_dir).tokenizer
    end, eot = tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")
    assert tok.eos_ids == (end, eot) and tok.bos_id == tok.token_to_id("<|begin_of_text|>")
    assert tok.unk_id is None and not tok.has_pad
    _, new, _ = hf_greedy(llama3_dir, PROMPTS[0])
    assert new[-1] == eot and len(new) < NEW          # transformers stopped at the second end id
    check_generate(capsys, llama3_dir, tmp_path)


# -- T5: a Unigram over Metaspace, <pad> </s> <unk>, the post-processor appends </s> ------------------------
def t5_tokenizer():
    """A SentencePiece-like Unigram vocabulary (spelled out: Unigram training is not deterministic):
    the sentences' words, then their characters, scored like log-probabilities."""
    words = sorted({"▁" + w for line in SENTENCES for w in line.split()})
    chars = sorted({c for line in SENTENCES for c in line if c != " "} | {"▁"})
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(w, -2.0 - 0.01 * i) for i, w in enumerate(words)] + [(c, -8.0) for c in chars]
    backend = Backend(models.Unigram(pieces, unk_id=2))
    backend.add_special_tokens(["<pad>", "</s>", "<unk>"])
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", backend.token_to_id("</s>"))])
    return backend


def t5_greedy(path):
    """transformers' greedy translations of PROMPTS, decoded by its tokenizer: (texts, generated ids)."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    texts, ids = [], []
    for text in PROMPTS:
        with torch.no_grad():
            out = model.generate(**hf_tok(text, return_tensors="pt"), do_sample=False, max_new_tokens=NEW)
        texts.append(hf_tok.decode(out[0], skip_special_tokens=True))
        ids.append(out[0, 1:].tolist())
    return texts, ids


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_t5_tok")
    backend = t5_tokenizer()
    save_tokenizer(backend, path, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = transformers.T5Config(
        vocab_size=backend.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    noisy(transformers.T5ForConditionalGeneration(config), scale=0.6).save_pretrained(path)
    return path


def test_t5_translate_reads_its_tokenizer_and_matches_transformers(t5_dir, capsys, tmp_path):
    tok = load_model_dir(t5_dir).tokenizer
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, None)
    expected, ids = t5_greedy(t5_dir)
    assert 0 in ids[1][:-1]             # transformers bans nothing: <pad> is generated, and decoded to nothing
    code, out, err = run_cli(capsys, "translate", t5_dir, *PROMPTS, "--max-len-a", "0", "--max-len-b", NEW)
    assert code == 0, err
    assert out.splitlines() == expected
    code, _, err = run_cli(capsys, "explain", t5_dir, PROMPTS[0], "--out", tmp_path / "x.html")
    assert code == 0, err


@pytest.mark.parametrize("make", [gpt2_tokenizer, t5_tokenizer])
def test_clean_up_tokenization_spaces_as_transformers(make, tmp_path):
    """Real GPT-2 and T5 tokenizer configs say clean_up_tokenization_spaces: transformers applies it
    to a Unigram's text, not to a BPE's."""
    from glassformer.tokenizers import Tokenizer

    save_tokenizer(make(), tmp_path, eos_token="</s>" if make is t5_tokenizer else "<|endoftext|>",
                   clean_up_tokenization_spaces=True)
    hf, ours = transformers.AutoTokenizer.from_pretrained(tmp_path), Tokenizer.load_checkpoint(tmp_path)
    for text in ["It was , he said . Is it ? I 'm sure ! do n't", "a ' b"]:
        ids = hf(text)["input_ids"]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)



def test_llama3_beam_search_ends_at_any_end_id(llama3_dir):
    """Beam search ends hypotheses at either end id, as transformers' beam search does."""
    from glassformer.generation import BeamOptions, beam_search
    from glassformer.generation.text import prompt_ids

    loaded = load_model_dir(llama3_dir)
    tok = loaded.tokenizer
    hf = transformers.AutoModelForCausalLM.from_pretrained(llama3_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(llama3_dir)
    ended = 0
    for prompt in PROMPTS:
        ids = prompt_ids(tok, prompt, loaded.config.max_len, NEW)
        with torch.no_grad():
            theirs = hf.generate(**hf_tok(prompt, return_tensors="pt"), max_new_tokens=NEW, num_beams=3,
                                 do_sample=False, length_penalty=1.0, early_stopping=False,
                                 pad_token_id=tok.pad_id)[0, len(ids):].tolist()
        cache, first = loaded.model.start_decoding([ids], NEW, tok.pad_id)
        best = beam_search(loaded.model, cache, first, BeamOptions(
            beam=3, alpha=1.0, length_penalty_kind="hf", stopping="heuristic", max_new_tokens=NEW,
            eos_id=tok.eos_id, eos_ids=tok.eos_ids, pad_id=tok.pad_id))
        ours = best.tokens[0, 0, : int(best.lengths[0, 0])].tolist()
        assert ours == theirs[: len(ours)] and set(theirs[len(ours):]) <= {tok.pad_id}
        ended += ours[-1] == tok.eos_ids[1]
    assert ended                         # some best beam ended at the second end id (<|eot_id|>)


@pytest.mark.parametrize("which", ["gpt2_dir", "llama2_dir", "llama3_dir"])
def test_convert_keeps_a_checkpoint_tokenizer_both_ways(which, request, capsys, tmp_path):
    """convert --from hf keeps the checkpoint's own tokenizer and what its special tokens do
    (tokenizer_roles.json): the converted directory generates what transformers generates on the
    source; convert --to hf writes a tokenizer_config.json that transformers' AutoTokenizer reads with
    the same special tokens, and transformers generates the same text on it."""
    source = request.getfixturevalue(which)
    ours, back = tmp_path / "ours", tmp_path / "back"
    code, _, err = run_cli(capsys, "convert", source, ours, "--from", "hf")
    assert code == 0, err
    assert (ours / "tokenizer_roles.json").is_file()
    for prompt in PROMPTS:
        assert ours_cli(capsys, ours, prompt) == prompt + hf_greedy(source, prompt)[2] + "\n"
    before, after = load_model_dir(source).tokenizer, load_model_dir(ours).tokenizer
    assert (after.bos_id, after.eos_ids, after.pad_id, after.has_pad) == (
        before.bos_id, before.eos_ids, before.pad_id, before.has_pad)
    code, _, err = run_cli(capsys, "convert", ours, back, "--to", "hf")
    assert code == 0, err
    src_tok, back_tok = (transformers.AutoTokenizer.from_pretrained(p) for p in (source, back))
    for role in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(back_tok, role) == getattr(src_tok, role), role
    for prompt in PROMPTS:
        assert hf_greedy(back, prompt) == hf_greedy(source, prompt)


def test_t5_convert_keeps_its_tokenizer_both_ways(t5_dir, capsys, tmp_path):
    ours, back = tmp_path / "ours", tmp_path / "back"
    code, _, err = run_cli(capsys, "convert", t5_dir, ours, "--from", "hf")
    assert code == 0, err
    expected, ids = t5_greedy(t5_dir)
    code, out, err = run_cli(capsys, "translate", ours, *PROMPTS, "--max-len-a", "0", "--max-len-b", NEW)
    assert code == 0, err
    assert out.splitlines() == expected
    code, _, err = run_cli(capsys, "convert", ours, back, "--to", "hf")
    assert code == 0, err
    assert t5_greedy(back) == (expected, ids)


def test_a_roles_file_that_contradicts_the_tokenizer_is_refused(gpt2_dir, capsys, tmp_path):
    ours = tmp_path / "ours"
    code, _, err = run_cli(capsys, "convert", gpt2_dir, ours, "--from", "hf")
    assert code == 0, err
    roles = json.loads((ours / "tokenizer_roles.json").read_text())
    (ours / "tokenizer_roles.json").write_text(json.dumps({**roles, "eos_ids": [10_000]}))
    code, _, err = run_cli(capsys, "generate", ours, "The")
    one_line_error(code, err, "tokenizer_roles.json", "eos_token_id 10000", "not a token")


def test_a_checkpoint_eos_id_outside_the_tokenizer_is_refused(gpt2_dir, capsys, tmp_path):
    import shutil

    path = tmp_path / "bad"
    shutil.copytree(gpt2_dir, path)
    generation = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": [5, 10_000]}))
    code, _, err = run_cli(capsys, "generate", path, "The")
    one_line_error(code, err, "eos_token_id 10000", "not a token of tokenizer.json")


def test_llama2_explain_and_serve_read_the_prompt_as_generate_does(llama2_dir):
    """explain and serve frame a prompt with the checkpoint's post-processor (its one <s>), as generate
    and transformers do: serve's greedy text equals transformers', and explain's tokens start with <s>."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from glassformer.explain.report import explain
    from glassformer.serve.app import create_app

    prompt = "The quick"
    prompt_ids, _, text = hf_greedy(llama2_dir, prompt)
    report = explain(llama2_dir, prompt, max_new_tokens=2, saliency_steps=2)
    assert len(report["tokens"]["input"]) == len(prompt_ids) and report["tokens"]["input"][0] == "<s>"
    answer = TestClient(create_app(llama2_dir)).post("/v1/generate", json={"prompt": prompt, "max_new_tokens": NEW})
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == text


# -- the generation config's shared rules: repetition penalty, n-gram ban, minimum length, bad words ----------
RULES = {"repetition_penalty": 1.6, "no_repeat_ngram_size": 2, "min_length": 12, "bad_words_ids": [[5], [7]]}


def with_rules(source, path, **rules):
    """A copy of ``source`` whose generation_config.json also states ``rules``."""
    import shutil

    shutil.copytree(source, path)
    file = path / "generation_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **rules}))
    return path


def test_generate_applies_the_directory_rules_as_transformers(llama2_dir, capsys, tmp_path):
    """A generation config's repetition_penalty, no_repeat_ngram_size, min_length (which counts the
    prompt) and single-token bad_words_ids shape generate's greedy text as they shape transformers';
    an option given on the command line overrides the directory's."""
    path = with_rules(llama2_dir, tmp_path / "rules", **RULES)
    plain = with_rules(llama2_dir, tmp_path / "plain")
    changed = 0
    for prompt in PROMPTS:
        prompt_ids, new, text = hf_greedy(path, prompt)
        assert not {5, 7} & set(new) and len(prompt_ids) + len(new) >= RULES["min_length"]
        assert ours_cli(capsys, path, prompt) == prompt + text + "\n"
        changed += text != hf_greedy(plain, prompt)[2]
    assert changed                       # the rules made a difference
    code, out, err = run_cli(capsys, "generate", path, PROMPTS[0], "--temperature", "0", "--max-new-tokens", NEW,
                             "--repetition-penalty", "1", "--no-repeat-ngram-size", "0", "--min-new-tokens", "0")
    assert code == 0, err
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    enc = tok(PROMPTS[0], return_tensors="pt")
    theirs = model.generate(**enc, do_sample=False, max_new_tokens=NEW, repetition_penalty=1.0,
                            no_repeat_ngram_size=0, min_length=0, pad_token_id=tok.eos_token_id)
    assert out == PROMPTS[0] + tok.decode(theirs[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) + "\n"


def test_translate_applies_the_directory_rules_as_transformers(t5_dir, capsys, tmp_path):
    """The same rules in a T5 directory (min_length counts the decoder's start token)."""
    path = with_rules(t5_dir, tmp_path / "rules", **{**RULES, "min_length": 6})
    expected, ids = t5_greedy(path)
    assert expected != t5_greedy(t5_dir)[0]
    code, out, err = run_cli(capsys, "translate", path, *PROMPTS, "--max-len-a", "0", "--max-len-b", NEW)
    assert code == 0, err
    assert out.splitlines() == expected


def test_bad_words_of_several_tokens_are_refused(llama2_dir, capsys, tmp_path):
    path = with_rules(llama2_dir, tmp_path / "rules", bad_words_ids=[[5, 6]])
    code, _, err = run_cli(capsys, "generate", path, "The", "--temperature", "0")
    one_line_error(code, err, "bad_words_ids", "several tokens")


def test_translate_stops_at_any_end_id_the_directory_lists(t5_dir, capsys, tmp_path):
    """A generation config listing several end ids (here </s> and <unk>, whose output row is made to win
    where the model would say a word of its second translation): translate stops at each, as
    transformers does."""
    _, ids = t5_greedy(t5_dir)
    at, word = next((i, t) for i, t in enumerate(ids[1]) if i > 0 and t not in (0, 1, ids[1][0]))
    path = with_rules(t5_dir, tmp_path / "ends", eos_token_id=[1, 2])
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    with torch.no_grad():
        model.shared.weight[2] = 2 * model.shared.weight[word]
    model.save_pretrained(path)
    expected, theirs = t5_greedy(path)
    assert theirs[1][-1] == 2 and len(theirs[1]) <= at + 1
    code, out, err = run_cli(capsys, "translate", path, *PROMPTS, "--max-len-a", "0", "--max-len-b", NEW)
    assert code == 0, err
    assert out.splitlines() == expected
