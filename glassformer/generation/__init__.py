"""Decoding, model-agnostic: any model with ``decode_step(tokens, cache) -> log-probs`` works.

The decoding interface a model provides:

* ``decode_step(tokens (batch, t), cache: KVCache) -> (batch, vocab)`` log-probabilities
  of the token after the last of ``tokens``, given everything already in ``cache``;
  it appends the new positions to the cache.
* encoder–decoders also ``start_decoding(src, max_new_tokens) -> (cache, first_tokens)``,
  which encodes the source once.
"""

from .beam import BeamOptions, BeamOutput, beam_search, length_penalty
from .decode import Decoded, decode, length_limits
from .mbr import MBRChoice, mbr_decode, mbr_rank
from .sampling import SamplingOptions, generate, generate_stream

__all__ = ["SamplingOptions", "generate", "generate_stream", "BeamOptions", "BeamOutput", "beam_search",
           "length_penalty", "MBRChoice", "mbr_decode", "mbr_rank", "Decoded", "decode", "length_limits"]
