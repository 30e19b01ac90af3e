"""The decoding step has static shapes and static buffers, so it compiles to one graph.

The KV cache is allocated once; a step writes at a position held as a device
tensor and attention reads the whole buffer under a mask derived from it.  So
every step after the first has the same shapes, the same buffer addresses and
no Python number that changes — which is what ``torch.compile`` (and, on a GPU,
CUDA graphs) need.  These tests compile the step on the CPU and count graphs; they also check that the
search loops keep their decisions on the device (no read-back per token) and that
beam search keeps a static batch for a compiled step.

Compiling with inductor on the CPU takes seconds (tens of seconds with a cold
compiler cache), so the tests of ``compile_decoding()`` with its defaults share one
compiled model per family (module fixtures).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters
from torch._inductor.compile_fx import compile_fx

from glassformer.errors import ConfigError, InputError
from glassformer.generation import SamplingOptions, beam_search, generate
from glassformer.generation.beam import BeamOptions
from glassformer.generation.decode import length_limits
from glassformer.generation.sampling import adjust_scores, ban_mask, default_check_every
from glassformer.models import build_model, preset
from glassformer.nn import KVCache, MultiHeadAttention


def lively_gpt(seed: int = 0):
    """A tiny random GPT whose greedy output varies from token to token (a sharper output layer)."""
    torch.manual_seed(seed)
    model = build_model(preset("gpt-tiny", tie_embeddings=False)).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    return model


class CountingBackend:
    """A ``torch.compile`` backend that records every graph it is asked to compile."""

    def __init__(self, inner: str = "eager"):
        self.graphs, self.inner = [], inner

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return compile_fx(gm, example_inputs) if self.inner == "inductor" else gm.forward


def run(model, prompts, n, **options):
    cache, first = model.start_decoding(prompts, n)
    return generate(model, cache, first, SamplingOptions(max_new_tokens=n, **options))


def test_one_inductor_graph_serves_every_step_with_the_eager_tokens():
    model = lively_gpt()
    prompt = torch.tensor([[7]])
    eager = run(model, prompt, 24)
    assert len(set(eager[0].tolist())) > 3                       # a real continuation, not one token repeated
    backend = CountingBackend("inductor")
    model.compile_decoding(backend=backend, fullgraph=True, dynamic=False)
    compiled = run(model, prompt, 24)
    assert torch.equal(compiled, eager)
    assert len(backend.graphs) == 1                              # 24 steps, one graph: no recompilation


def test_prompt_then_steps_is_two_graphs_for_left_padded_batches_and_sampling():
    model = lively_gpt(1)
    prompts = [[3, 9, 4, 11], [5, 6]]                            # left-padded to 4: key padding + position offsets
    eager = run(model, prompts, 16, temperature=0.9, top_k=20, seed=3)
    backend = CountingBackend()
    model.compile_decoding(backend=backend, fullgraph=True, dynamic=False)
    compiled = run(model, prompts, 16, temperature=0.9, top_k=20, seed=3)
    assert torch.equal(compiled, eager)
    assert len(backend.graphs) == 2                              # the 4-token prompt, then every 1-token step


def test_encoder_decoder_step_is_one_graph_too():
    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny")).eval()
    src = torch.randint(4, 50, (3, 7))
    cache, first = model.start_decoding(src, 12)
    eager = generate(model, cache, first, SamplingOptions(max_new_tokens=12))
    backend = CountingBackend()
    model.compile_decoding(backend=backend, fullgraph=True, dynamic=False)
    cache, first = model.start_decoding(src, 12)
    assert torch.equal(generate(model, cache, first, SamplingOptions(max_new_tokens=12)), eager)
    assert len(backend.graphs) == 1


def test_cache_buffers_keep_their_addresses_while_decoding():
    model = lively_gpt()
    cache, first = model.start_decoding(torch.tensor([[1, 2, 3]]), 10)
    keys, values, position = cache.keys.data_ptr(), cache.values.data_ptr(), cache.position.data_ptr()
    feed = first
    for _ in range(11):                                  # the prompt, then one token at a time: 3 + 10 positions
        feed = model.decode_step(feed, cache).argmax(-1, keepdim=True)
    assert (cache.keys.data_ptr(), cache.values.data_ptr(), cache.position.data_ptr()) == (keys, values, position)
    assert cache.length == int(cache.position) == 13 == cache.max_len
    with pytest.raises(InputError, match="14"):
        model.decode_step(feed, cache)


def test_reorder_copies_only_what_was_written():
    cache = KVCache(2, batch=3, kv_heads=2, d_head=4, max_len=8)
    cache.keys[:, :, :, :5] = torch.arange(3.0)[None, :, None, None, None]   # row r holds r in positions 0..4
    cache.keys[:, :, :, 5:] = -7.0                                           # not written yet: must stay untouched
    cache.advance(5)
    address = cache.keys.data_ptr()
    cache.reorder(torch.tensor([2, 2, 0]))                                   # beams selected: same batch size
    assert cache.keys.data_ptr() == address
    assert cache.keys[:, :, :, :5].amax(dim=(0, 2, 3, 4)).tolist() == [2.0, 2.0, 0.0]
    assert bool((cache.keys[:, :, :, 5:] == -7.0).all())
    cache.reorder(torch.tensor([1, 0, 1, 0, 2, 2]))                          # fanned out to beams: a new buffer
    assert cache.keys.shape[1] == 6 and cache.keys[:, :, :, :5].amax(dim=(0, 2, 3, 4)).tolist() == \
        [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]


def test_beam_reorder_goes_through_the_model():
    model = lively_gpt()
    calls = []
    original = model.reorder_cache

    def recording(cache, rows, sources=None):
        calls.append((rows.shape[0], cache.length))
        return original(cache, rows, sources)

    model.reorder_cache = recording
    cache, first = model.start_decoding([[4, 5]], 6)
    beam_search(model, cache, first, BeamOptions(beam=3, max_new_tokens=6, eos_id=None))
    assert calls and calls[0] == (3, 2)                   # the prompt fans out to 3 beams; 2 positions were written


def test_cross_attention_refuses_a_batch_that_does_not_divide():
    attention = MultiHeadAttention(16, 4, cross_attention=True)
    with pytest.raises(InputError, match="multiple"):
        attention(torch.randn(5, 1, 16), torch.randn(2, 3, 16))


# -- compile_decoding() as users get it (the CLI's --compile): one compiled model per family ------------
def fresh_compile_cache():
    """Forget earlier tests' compiled graphs: torch.compile keeps a bounded number per function."""
    torch._dynamo.reset()
    counters.clear()


@pytest.fixture(scope="module")
def gpt_pair():
    """(eager, compiled) copies of one lively GPT; the second decodes through ``compile_decoding()``
    (inductor on the CPU, CUDA graphs on a GPU)."""
    fresh_compile_cache()
    eager = lively_gpt(2)
    compiled = copy.deepcopy(eager)
    compiled.compile_decoding()
    return eager, compiled


def varied_translator(seed: int = 0):
    """A tiny random translator whose greedy outputs vary (untied embeddings; tied ones repeat one token)."""
    torch.manual_seed(seed)
    return build_model(preset("vaswani-tiny", tie_embeddings="none")).eval()


@pytest.fixture(scope="module")
def translator_pair():
    fresh_compile_cache()
    eager = varied_translator()
    compiled = copy.deepcopy(eager)
    compiled.compile_decoding()
    return eager, compiled


def test_compiled_gpt_gives_the_eager_tokens_for_a_left_padded_batch(gpt_pair):
    """(One prompt: ``test_one_inductor_graph_serves_every_step_with_the_eager_tokens``.)"""
    eager, compiled = gpt_pair
    prompts = [[3, 9, 4, 11], [5, 6], [8]]
    expected = run(eager, prompts, 20)
    assert len(set(expected[0].tolist())) > 3
    graphs = counters["stats"]["unique_graphs"]
    cache, first = compiled.start_decoding(prompts, 20)
    assert torch.equal(generate(compiled, cache, first, SamplingOptions(max_new_tokens=20)), expected)
    assert counters["stats"]["unique_graphs"] > graphs           # compiled now (new inputs: key padding)
    # a step writes into the cache: its buffers are marked static, which CUDA graphs need to capture it
    assert all(getattr(t, "_dynamo_static_input_type", None) == "unguarded"
               for t in (cache.keys, cache.values, cache.position))


def sources(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources of different lengths (right-padded) and per-sentence output limits that differ,
    so that sentences finish at different steps."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 50, (3, 7), generator=g)
    src[1, 4:] = 0
    src[2, 2:] = 0
    return src, length_limits(src, 0, a=1.0, b=2)


def test_compiled_translator_gives_the_eager_greedy_and_beam_outputs(translator_pair):
    eager, compiled = translator_pair
    src, limits = sources()
    n = int(limits.max())
    results = []
    graphs = counters["stats"]["unique_graphs"]
    for model in (eager, compiled):
        cache, first = model.start_decoding(src, n)
        greedy = generate(model, cache, first, SamplingOptions(max_new_tokens=n, eos_id=2))
        cache, first = model.start_decoding(src, n)
        beam = beam_search(model, cache, first, BeamOptions(beam=2, n_best=2, max_new_tokens=n), max_lengths=limits)
        results.append((greedy, beam))
    assert counters["stats"]["unique_graphs"] == graphs + 2        # (3, 1) rows, then (3 × 2, 1): no more
    (greedy, beam), (greedy_c, beam_c) = results
    assert len(set(greedy.flatten().tolist())) > 3 and len(set(beam.tokens.flatten().tolist())) > 3
    assert torch.equal(greedy_c, greedy)
    assert torch.equal(beam_c.tokens, beam.tokens) and torch.equal(beam_c.lengths, beam.lengths)
    torch.testing.assert_close(beam_c.scores, beam.scores)
    assert len(set(beam.lengths[:, 0].tolist())) > 1          # sentences did finish at different steps


def test_a_static_beam_batch_gives_what_dropping_finished_sentences_gives():
    model = varied_translator(1)
    src, limits = sources(1)
    outs = []
    for static in (False, True):
        cache, first = model.start_decoding(src, int(limits.max()))
        options = BeamOptions(beam=3, n_best=2, max_new_tokens=int(limits.max()), stopping="heuristic")
        outs.append(beam_search(model, cache, first, options, max_lengths=limits, static_batch=static))
        if static:                                     # every step after the first ran on batch × beam rows
            assert cache.batch == 3 * 3
    dropping, static = outs
    assert len(set(dropping.lengths[:, 0].tolist())) > 1 and len(set(dropping.tokens.flatten().tolist())) > 3
    assert torch.equal(static.tokens, dropping.tokens) and torch.equal(static.lengths, dropping.lengths)
    torch.testing.assert_close(static.scores, dropping.scores)          # batches of other sizes: last bits differ
    torch.testing.assert_close(static.log_probs, dropping.log_probs)


def test_a_failing_compiler_is_one_clear_error(monkeypatch):
    model = lively_gpt()

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here\nsecond line")

    model.compile_decoding(backend=broken_backend)
    cache, first = model.start_decoding([[1, 2]], 4)
    with pytest.raises(ConfigError, match=r"torch.compile could not compile the decoding step.*no C\+\+ compiler here"
                                          r".*without compiling") as caught:
        model.decode_step(first, cache)
    assert "second line" not in str(caught.value)
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(ConfigError, match="torch.compile is not available"):
        lively_gpt().compile_decoding()


# -- the loops keep their decisions on the device --------------------------------------------------------
@contextlib.contextmanager
def host_reads():
    """Record every read of a tensor's value into Python (each one waits for the device)."""
    calls: list[str] = []
    names = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def recording(name, method):
        def read(self, *args, **kwargs):
            calls.append(name)
            return method(self, *args, **kwargs)
        return read

    for name, method in saved.items():
        setattr(torch.Tensor, name, recording(name, method))
    try:
        yield calls
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_k": 10, "top_p": 0.9, "seed": 1,
                                           "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                                           "min_new_tokens": 3}], ids=["greedy", "sample"])
def test_generate_reads_back_every_check_every_tokens_not_every_token(sampling):
    model = lively_gpt()
    reads = {}
    for check_every in (1, 16):
        cache, first = model.start_decoding([[3, 4, 5], [6]], 40)
        options = SamplingOptions(max_new_tokens=40, eos_id=63, banned_ids=(0,), **sampling)   # 63: sampled rarely
        with host_reads() as calls:
            generate(model, cache, first, options, check_every=check_every)
        reads[check_every] = len(calls)
    assert reads[16] <= 40 // 16 + 1 < reads[1]              # the checks, then one read to cut the padding
    # by default: every 16 tokens where a read-back waits for the device, every token on the CPU
    assert default_check_every(torch.device("cuda")) == 16 and default_check_every(torch.device("cpu")) == 1


def test_check_every_changes_when_the_loop_looks_not_the_tokens():
    model = lively_gpt(4)
    prompts = [[3, 9, 4], [5, 6], [8]]
    free = run(model, prompts, 30)                              # no EOS: every row runs 30 steps
    eos = free[1, 5].item()                                     # a token row 1 produces at step 5
    assert eos not in free[1, :5].tolist()
    outputs = []
    for check_every in (1, 4, 16, 64):
        cache, first = model.start_decoding(prompts, 30)
        outputs.append(generate(model, cache, first, SamplingOptions(max_new_tokens=30, eos_id=eos),
                                check_every=check_every))
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    last = max(row.index(eos) if eos in row else 29 for row in outputs[0].tolist())
    assert outputs[0].shape[1] == last + 1                     # ends at the step where the last row finished


def test_ban_mask_bans_what_the_token_ids_ban():
    logits = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    history = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(1))
    options = SamplingOptions(max_new_tokens=8, min_new_tokens=2, eos_id=5, banned_ids=(0, 3, 25),
                              repetition_penalty=1.2, no_repeat_ngram_size=2)
    for step in (0, 1, 2, 5):
        mask = ban_mask(options, 20, logits.device, with_eos=step < options.min_new_tokens)
        with_ids = adjust_scores(logits, history, step, options)
        assert torch.equal(adjust_scores(logits, history, step, options, mask), with_ids)
