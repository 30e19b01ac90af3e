"""A Hugging Face directory's generation config sets ``generate``/``translate``'s defaults unless an
option overrides them (issue 18): its greedy or beam search (num_beams, length_penalty,
early_stopping), its top_p, its end ids.  Each is checked against transformers' generate run with
that same generation config."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassformer.tokenizers import Tokenizer  # noqa: E402
from helpers import one_line_error, run_cli  # noqa: E402
from test_hf_marian_spm import marian_dir  # noqa: E402,F401  (a module-scoped fixture)
from test_hf_tokenizers import PROMPTS, SENTENCES, llama2_tokenizer, llama_model, save_tokenizer  # noqa: E402

NEW = 12


def hf_generate(path, prompt, **overrides):
    """transformers' continuation of ``prompt`` with the directory's generation config (``overrides`` on top)."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=NEW, pad_token_id=tok.eos_token_id, **overrides)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def ours(capsys, path, prompt, *options):
    code, out, err = run_cli(capsys, "generate", path, prompt, "--max-new-tokens", NEW, *options)
    assert code == 0, err
    return out


def llama_dir(path, **generation):
    """A seeded tiny Llama with a Llama 2 style tokenizer and this generation config."""
    backend = llama2_tokenizer()
    save_tokenizer(backend, path, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    model = llama_model(path, backend.get_vocab_size(), bos_token_id=1, eos_token_id=2, pad_token_id=None)
    model.generation_config.update(**generation)
    model.save_pretrained(path)
    return path


def test_generate_runs_the_directorys_beam_search_unless_told(tmp_path, capsys):
    path = llama_dir(tmp_path / "beam", do_sample=False, num_beams=2)
    assert json.loads((path / "generation_config.json").read_text())["num_beams"] == 2
    beam = [hf_generate(path, p) for p in PROMPTS]                  # as configured: 2 beams
    greedy = [hf_generate(path, p, num_beams=1) for p in PROMPTS]
    assert beam != greedy                                           # the two searches differ here
    for prompt, b, g in zip(PROMPTS, beam, greedy):
        assert ours(capsys, path, prompt) == prompt + b + "\n"
        assert ours(capsys, path, prompt, "--beam", "1") == prompt + g + "\n"
        assert ours(capsys, path, prompt, "--temperature", "0") == prompt + g + "\n"


def test_generate_uses_the_directorys_top_p(tmp_path, capsys):
    """top_p 0.01 keeps only the most likely token: transformers' sampling is then greedy, and so is ours."""
    path = llama_dir(tmp_path / "top_p", do_sample=True, temperature=1.0, top_k=0, top_p=0.01)
    for prompt in PROMPTS:
        expected = hf_generate(path, prompt)
        assert expected == hf_generate(path, prompt, do_sample=False)
        assert ours(capsys, path, prompt) == prompt + expected + "\n"


def test_generate_refuses_the_directorys_beam_sampling(tmp_path, capsys):
    path = llama_dir(tmp_path / "beam_sample", do_sample=True, num_beams=3)
    capsys.readouterr()                     # transformers' progress bar
    one_line_error(*run_cli(capsys, "generate", path, PROMPTS[0])[::2], "num_beams=3", "do_sample")
    assert run_cli(capsys, "generate", path, PROMPTS[0], "--beam", "3", "--max-new-tokens", NEW)[0] == 0


@pytest.mark.parametrize("setting", [dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                                     dict(penalty_alpha=0.6)])
def test_generate_refuses_a_search_it_does_not_run(tmp_path, capsys, setting):
    """Group beam search and contrastive search are refused by name, not decoded another way."""
    path = llama_dir(tmp_path / "unrun", do_sample=False, **setting)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "generate", path, PROMPTS[0])
    one_line_error(code, err, next(k for k in setting if k != "num_beams"))
    assert run_cli(capsys, "generate", path, PROMPTS[0], "--beam", "2", "--max-new-tokens", NEW)[0] == 0


def test_converted_directory_stops_at_every_end_id_of_the_config(tmp_path, capsys):
    """A Llama whose config ends texts at [</s>, Y] with our own character tokenizer (which knows only
    </s>): ``convert --from hf`` keeps the tokenizer, and generate stops at Y as transformers does."""
    tok = Tokenizer.train_char(SENTENCES)
    hf, converted = tmp_path / "hf", tmp_path / "ours"
    hf.mkdir()
    tok.save(hf / "tokenizer.json")
    end, other = tok.eos_id, tok.token_to_id("e")
    model = llama_model(hf, tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=[end, other], pad_token_id=tok.pad_id)
    prompt = PROMPTS[0]
    ids = torch.tensor([tok.encode_prompt(prompt)])

    def continuation():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=NEW)
        return out[0, ids.shape[1]:].tolist()

    new = continuation()
    with torch.no_grad():                   # Y wins where the model said its 4th token
        model.lm_head.weight[other] = 2 * model.lm_head.weight[new[3]]
    new = continuation()
    assert new[-1] == other and len(new) < NEW and end not in new
    model.save_pretrained(hf)
    code, _, err = run_cli(capsys, "convert", "--from", "hf", hf, converted)
    assert code == 0, err
    assert not (converted / "tokenizer_config.json").exists()
    assert ours(capsys, converted, prompt, "--temperature", "0") == prompt + tok.decode(new[:-1]) + "\n"


def test_translate_runs_the_marian_directorys_beam_search(marian_dir, tmp_path, capsys):
    path = tmp_path / "marian_beam4"
    shutil.copytree(marian_dir, path)
    generation = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**generation, "num_beams": 4}))
    theirs = transformers.MarianTokenizer.from_pretrained(path)
    model = transformers.MarianMTModel.from_pretrained(path).eval()
    assert model.generation_config.num_beams == 4
    texts = ("the small house is here today", "where is the station?", "Zoë's ☃ café", "I like tea and bread.",
             "the station is small", "tea, bread and the house")
    beam, greedy = [], []
    for text in texts:
        with torch.no_grad():
            for found, beams in ((beam, 4), (greedy, 1)):
                out = model.generate(**theirs(text, return_tensors="pt"), num_beams=beams, max_new_tokens=12)
                found.append(theirs.batch_decode(out, skip_special_tokens=True)[0])
    assert beam != greedy
    limit = ("--max-len-a", "0", "--max-len-b", "12")
    code, stdout, err = run_cli(capsys, "translate", path, *texts, *limit)
    assert code == 0, err
    assert stdout.splitlines() == beam
    code, stdout, err = run_cli(capsys, "translate", path, *texts, *limit, "--beam", "1")
    assert code == 0, err
    assert stdout.splitlines() == greedy
