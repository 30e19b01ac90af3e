"""The decoding settings of ``generate`` and ``translate`` are plain functions of ``glassformer.tasks``
(``generation_plan``, ``translate_options``): called from Python with keyword arguments they give
what the commands decode with, the model directory's settings unless an option overrides them."""

import json

import pytest
from helpers import run_cli
from test_inference_options import sharp_gpt_dir

from glassformer.model_dir import load_model_dir
from glassformer.tasks import complete_batch, generation_plan, translate_options

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    """A random GPT whose directory asks for top-k 3 sampling at temperature 0.7, 2 new tokens at least."""
    return sharp_gpt_dir(tmp_path_factory.mktemp("gpt") / "model", TEXT,
                         {"task": "lm", "temperature": 0.7, "top_k": 3, "min_new_tokens": 2})


def test_generation_plan_takes_the_directorys_settings_unless_given(gpt_dir):
    loaded = load_model_dir(gpt_dir)
    plan = generation_plan(loaded, ["the ", "a"], max_new_tokens=5)
    o = plan.options
    assert (o.temperature, o.top_k, o.top_p, o.min_new_tokens, o.max_new_tokens) == (0.7, 3, None, 2, 5)
    assert plan.search is None and plan.ids == [loaded.tokenizer.encode_prompt(p) for p in ("the ", "a")]
    # a given temperature sets the strategy: the directory's top_k is not applied either
    given = generation_plan(loaded, ["the "], temperature=0.0, top_k=None, min_new_tokens=0, seed=7).options
    assert (given.temperature, given.top_k, given.min_new_tokens, given.seed) == (0.0, None, 0, 7)
    # the default length: 200 new tokens, at most half the context
    assert generation_plan(loaded, ["the "]).options.max_new_tokens == min(200, loaded.config.max_len // 2)


def test_a_search_takes_no_sampling_settings_from_the_directory(gpt_dir):
    plan = generation_plan(load_model_dir(gpt_dir), ["the "], max_new_tokens=5, beam=2)
    assert plan.search == {"beam": 2, "alpha": 0.6, "length_penalty_kind": "gnmt", "stopping": "exact"}
    assert (plan.options.temperature, plan.options.top_k) == (0.0, None)
    assert generation_plan(load_model_dir(gpt_dir), ["the "], n_best=2).search["beam"] == 1


def test_the_generate_command_decodes_what_generation_plan_says(gpt_dir, capsys):
    loaded = load_model_dir(gpt_dir)
    prompts = ["the ", "a"]
    plan = generation_plan(loaded, prompts, max_new_tokens=6, seed=3)
    texts = complete_batch(loaded.model, loaded.tokenizer, plan.ids, plan.options, streams=[0, 1])
    code, out, err = run_cli(capsys, "generate", gpt_dir, *prompts, "--max-new-tokens", 6, "--seed", 3)
    assert code == 0, err
    assert [json.loads(line)["completion"] for line in out.splitlines()] == texts


def test_translate_options_map_a_hugging_face_beam_search():
    """transformers' num_beams / length_penalty / early_stopping, and its min_length counting the start token."""
    generation = {"hugging_face": {"generation_config": {"num_beams": 4, "length_penalty": 1.2,
                                                         "early_stopping": True, "min_length": 3}}}
    opts = translate_options(generation)
    assert (opts["beam"], opts["alpha"], opts["length_penalty_kind"], opts["stopping"]) == (4, 1.2, "hf", "first")
    assert opts["min_new_tokens"] == 2 and "seed" not in opts and "mbr_candidates" not in opts
    ours = translate_options(generation, beam=2, alpha=0.5, seed=1, mbr=True, mbr_candidates=8)
    assert (ours["beam"], ours["alpha"], ours["length_penalty_kind"], ours["stopping"]) == (2, 0.5, "gnmt", "exact")
    assert (ours["seed"], ours["mbr"], ours["mbr_candidates"]) == (1, True, 8)
