"""Decoding, model-agnostic: any model with the decoding interface of ``glassformer.models.decoding`` works.

The interface a model provides:

* ``start_decoding(...) -> (cache, first_tokens)``: a fresh :class:`~glassformer.nn.KVCache`
  (an encoder–decoder encodes the source once here);
* ``decode_step(tokens (batch, t), cache) -> (batch, vocab)`` float32 logits of the token after
  the last of ``tokens``, given everything already in ``cache``; it appends the new positions;
* ``reorder_cache(cache, rows, sources=None)``: keep decoder rows ``rows`` (beams selected) and,
  for an encoder–decoder, encoder rows ``sources`` (finished sentences dropped).

What the searches do to each step's logits (penalties, bans, warps) is in :mod:`.processors`.
"""

from .beam import BeamOptions, BeamOutput, beam_search, length_penalty
from .decode import Decoded, decode, length_limits
from .mbr import MBRChoice, mbr_decode, mbr_rank
from .sampling import SamplingOptions, generate, generate_stream

__all__ = ["SamplingOptions", "generate", "generate_stream", "BeamOptions", "BeamOutput", "beam_search",
           "length_penalty", "MBRChoice", "mbr_decode", "mbr_rank", "Decoded", "decode", "length_limits"]
