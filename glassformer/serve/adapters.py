"""What ``glassformer serve`` does differently for each model family, stated once per family and looked
up by ``config.family`` (no ``if family == ...`` in the server): the endpoints it serves, what it reads,
and how ``/v1/attention`` encodes its text and runs the model over it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..model_dir import ModelDir


def _max_len(config) -> int:
    return int(config.max_len)


def _cls_and_patches(config) -> int:
    """A ViT's sequence: [CLS] and one token per patch."""
    return (config.image_size // config.patch_size) ** 2 + 1


def _bert_endpoints(loaded: ModelDir) -> list[str]:
    """A BERT with a masked-LM head (and a tokenizer that knows [MASK]) fills in masks first and embeds too."""
    fills_masks = loaded.config.head == "mlm" and loaded.tokenizer.mask_id is not None
    return ["fill-mask", "embed"] if fills_masks else ["embed"]


@dataclass(frozen=True)
class Adapter:
    """One family as the server sees it.

    ``endpoints``: what it serves besides ``/v1/attention``, its main job (the page's) first;
    ``reads_images``: its input is an image, not a text; ``needs_tokenizer``: it reads or writes text;
    ``context``: the most tokens it takes, from its config; ``stack``: the name prefix of the
    self-attention modules ``/v1/attention`` shows (a translator's, a captioner's: its encoder's);
    ``lacking``: for an endpoint it may not serve, how the refusal names the model.
    ``/v1/attention`` over a text: ``tokenizer`` reads the text (``prompt``: as generate reads a
    prompt), ``frame`` turns its ids into the model's input ids, ``run`` is the forward pass captured.
    """

    endpoints: Callable[[ModelDir], list[str]]
    reads_images: bool = False
    needs_tokenizer: bool = True
    context: Callable[[Any], int] = _max_len
    stack: str = ""
    lacking: dict[str, str] = field(default_factory=dict)
    tokenizer: Callable[[ModelDir], Any] = lambda loaded: loaded.tokenizer
    prompt: bool = False
    frame: Callable[[ModelDir, Any, str, list[int]], list[int]] = lambda loaded, tok, text, ids: ids
    run: Callable[[Any, Any], Any] = lambda model, src: model.encode(src)


# A translator reads its text with the source tokenizer and ends it with EOS, as translate does.
_TRANSLATOR = dict(tokenizer=lambda loaded: loaded.src_tokenizer,
                   frame=lambda loaded, tok, text, ids: ids + [loaded.config.eos_id])

ADAPTERS: dict[str, Adapter] = {
    "gpt": Adapter(lambda loaded: ["generate"], prompt=True, run=lambda model, src: model.hidden_states(src)),
    "transformer": Adapter(lambda loaded: ["translate"], stack="encoder.", **_TRANSLATOR),
    "recurrent": Adapter(lambda loaded: ["translate"], **_TRANSLATOR),   # no self-attention: its attention is 'cross'
    "bert": Adapter(_bert_endpoints, lacking={"fill-mask": "a BERT without a masked-LM head"},
                    frame=lambda loaded, tok, text, ids: tok.encode_sentences([text])[0][0]),      # [CLS] ... [SEP]
    "vit": Adapter(lambda loaded: ["classify"], reads_images=True, needs_tokenizer=False, context=_cls_and_patches),
    "caption": Adapter(lambda loaded: ["caption"], reads_images=True, stack="encoder."),
}
