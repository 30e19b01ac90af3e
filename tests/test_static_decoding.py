"""The decoding step has static shapes and static buffers, so it compiles to one graph.

The KV cache is allocated once; a step writes at a position held as a device
tensor and attention reads the whole buffer under a mask derived from it.  So
every step after the first has the same shapes, the same buffer addresses and
no Python number that changes — which is what ``torch.compile`` (and, on a GPU,
CUDA graphs) need.  These tests compile the step on the CPU and count graphs.
"""

from __future__ import annotations

import pytest
import torch
from torch._inductor.compile_fx import compile_fx

from glassformer.errors import InputError
from glassformer.generation import SamplingOptions, beam_search, generate
from glassformer.generation.beam import BeamOptions
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
