"""The served model: the loaded model directory and the work of every endpoint, each refusal an
:class:`ApiError` (the status and the one-line message of the JSON answer).  What differs per family
is looked up in :data:`~glassformer.serve.adapters.ADAPTERS`."""

from __future__ import annotations

import base64
import binascii
import io
import threading

import torch

from ..errors import CheckpointError
from ..model_dir import ModelDir
from .adapters import ADAPTERS
from .schemas import (AttentionRequest, AttentionResponse, ClassifyRequest, FillMaskRequest, GenerateRequest,
                      ImageRequest)


class ApiError(Exception):
    """An answer other than 200: ``status`` and the one-line ``message`` of the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Served:
    """The loaded model and what the endpoints need of it; every model call under ``lock``."""

    def __init__(self, loaded: ModelDir, name: str):
        self.loaded, self.name = loaded, name
        self.family = loaded.config.family
        if self.family not in ADAPTERS:
            raise CheckpointError(f"{name} holds a {self.family!r} model; serve takes a GPT ('gpt'), translation "
                                  "('transformer', 'recurrent'), BERT ('bert'), ViT ('vit') or image-to-text "
                                  "('caption') model directory")
        self.adapter = adapter = ADAPTERS[self.family]
        if loaded.tokenizer is None and adapter.needs_tokenizer:
            raise CheckpointError(f"{name} has no tokenizer.json; serve needs one to read or write text")
        self.model = loaded.model.eval()
        self.reads_images = adapter.reads_images
        self.max_len = adapter.context(loaded.config)
        # No text longer than max_len tokens of the longest vocabulary entry fits: such a text is refused
        # before tokenizing (5 MB of text takes seconds to tokenize, and would be refused after).
        texts = [t for t in (loaded.tokenizer, loaded.src_tokenizer) if t is not None]
        longest = max((len(t.id_to_token(i) or "") for t in texts for i in range(t.vocab_size)), default=1)
        self.max_chars = self.max_len * max(longest, 1)
        self.lock = threading.Lock()
        from ..explain.attention import attention_modules

        modules = attention_modules(self.model).items()
        self.self_attention = [(n, m) for n, m in modules if not m.cross_attention and n.startswith(adapter.stack)]
        self.cross_attention = [(n, m) for n, m in modules if m.cross_attention]
        shown = self.self_attention or self.cross_attention        # a recurrent translator has only the latter
        self.heads = shown[0][1].n_heads if shown else 0
        self.endpoints = adapter.endpoints(loaded) + ["attention"]
        self.task = self.endpoints[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def require(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            what = self.adapter.lacking.get(endpoint, f"a {self.family!r} model")
            raise ApiError(400, f"/v1/{endpoint} does not fit this model: it is {what}, which serves "
                                + ", ".join(f"/v1/{e}" for e in self.endpoints))

    def too_long(self, n: int, what: str) -> ApiError:
        return ApiError(413, f"the {what} has {n} tokens but the model takes at most {self.max_len}; shorten it")

    def check_length(self, text: str, what: str) -> None:
        """413 at once, before any tokenizing, for a text with more characters than the model's tokens hold."""
        if len(text) > self.max_chars:
            raise ApiError(413, f"the {what} has {len(text):,} characters, too many for a model that takes at most "
                                f"{self.max_len} tokens ({self.max_chars:,} characters even at the longest tokens); "
                                "shorten it")

    # -- the endpoints' work ----------------------------------------------------------------------
    def generate(self, req: GenerateRequest) -> str:
        from ..generation import SamplingOptions
        from ..tasks import complete_batch

        self.require("generate")
        tok = self.loaded.tokenizer
        ids = self._ids(req.prompt, "prompt", prompt=True)
        room = self.max_len - req.max_new_tokens
        if room < 1:
            raise ApiError(400, f"max_new_tokens={req.max_new_tokens} leaves no room for a prompt in the model's "
                                f"context of {self.max_len} tokens; use at most {self.max_len - 1}")
        if len(ids) > room:
            raise ApiError(413, f"the prompt has {len(ids)} tokens; with {req.max_new_tokens} new tokens at most "
                                f"{room} fit in the model's context of {self.max_len}; shorten it or lower "
                                "max_new_tokens")
        options = SamplingOptions(max_new_tokens=req.max_new_tokens, temperature=req.temperature,
                                  eos_id=tok.eos_id, pad_id=tok.pad_id, seed=req.seed)
        with self.lock, torch.inference_mode():
            return complete_batch(self.model, tok, [ids], options)[0]

    def translate(self, text: str) -> str:
        from ..tasks import translate

        self.require("translate")
        ids = self._ids(text, "text", self.loaded.src_tokenizer)
        if len(ids) + 1 > self.max_len:
            raise self.too_long(len(ids) + 1, "text (with its end token)")
        with self.lock:
            return translate(self.model, self.loaded.src_tokenizer, self.loaded.tokenizer, [text])[0]

    def embed(self, texts: list[str]) -> list[list[float]]:
        from ..generation.embeddings import embed_texts

        self.require("embed")
        tok = self.loaded.tokenizer
        for i, text in enumerate(texts):
            self._ids(text, f"text {i}")
        ids, _, _ = tok.encode_sentences(texts)
        for i, row in enumerate(ids):
            if len(row) > self.max_len:
                raise self.too_long(len(row), f"text {i} (with [CLS] and [SEP])")
        with self.lock:
            vectors = embed_texts(self.model, tok, texts, truncate=False)
        return vectors.tolist()

    def fill_mask(self, req: FillMaskRequest) -> dict:
        from ..tasks import fill_mask, mask_ids

        self.require("fill-mask")
        tok = self.loaded.tokenizer
        self._ids(req.text, "text")
        ids, _ = mask_ids(tok, req.text, len(req.text) + 2 ** 20, False)       # no [MASK]: a clear 400
        if len(ids) > self.max_len:
            raise self.too_long(len(ids), "text (with [CLS] and [SEP])")
        with self.lock:
            result = fill_mask(self.model, tok, req.text, req.top_k, device=self.device)
        return {"filled": result["filled"], "masks": result["masks"]}

    def classify(self, req: ClassifyRequest) -> list[dict]:
        from ..tasks import classify_images

        self.require("classify")
        image = self._image(req.image)
        with self.lock:
            return classify_images(self.loaded, [image], req.top_k, self.name, device=self.device)[0]

    def caption(self, req: ImageRequest) -> str:
        from ..tasks import caption_files

        self.require("caption")
        image = self._image(req.image)
        with self.lock:
            return caption_files(self.loaded, [image], self.name, device=self.device)[0]

    def attention(self, req: AttentionRequest) -> AttentionResponse:
        from ..explain.figures import block_average, range_labels

        cross = req.kind == "cross"
        modules = self.cross_attention if cross else self.self_attention
        if cross and not modules:
            raise ApiError(400, f"kind 'cross' needs an encoder–decoder model; this {self.family!r} model has "
                                "only self-attention (use kind 'self')")
        if not cross and not modules:
            raise ApiError(400, f"kind 'self' needs self-attention; this {self.family!r} model has only its decoder's "
                                "attention over the source (use kind 'cross')")
        if req.target is not None and not cross:
            raise ApiError(422, "target is only for kind 'cross' (a decoder attending over the encoder's input)")
        wanted, other = ("image", "text") if self.reads_images else ("text", "image")
        if getattr(req, wanted) is None or getattr(req, other) is not None:
            raise ApiError(422, f"this {self.family!r} model reads {wanted}s: give \"{wanted}\""
                                + (" (the image file, base64-encoded)" if wanted == "image" else "")
                                + f" and no \"{other}\"")
        n = len(modules)
        if not 0 <= req.layer < n:
            raise ApiError(422, f"layer {req.layer} does not exist; this model has {n} {req.kind}-attention layers "
                                f"(0..{n - 1})")
        name, module = modules[req.layer]
        if not 0 <= req.head < module.n_heads:
            raise ApiError(422, f"head {req.head} does not exist; layer {req.layer} has {module.n_heads} heads "
                                f"(0..{module.n_heads - 1})")
        if self.reads_images:
            queries, keys, weights = self._image_attention(req, name)
        else:
            queries, keys, weights = self._text_attention(req, name, cross)
        rows, cols = queries, keys
        if req.max_cells is not None:
            weights, row_blocks, col_blocks = block_average(weights, req.max_cells)
            rows, cols = range_labels(row_blocks, queries), range_labels(col_blocks, keys)
        return AttentionResponse(tokens=queries, key_tokens=keys, weights=weights.tolist(), rows=rows, cols=cols)

    def _image_attention(self, req: AttentionRequest, name: str) -> tuple[list[str], list[str], torch.Tensor]:
        """An image model's (queries, keys, (q, k) weights) of module ``name``, head ``req.head``:
        the explain report's capture, whose tokens are [CLS] and the patches (and the caption)."""
        from ..explain.report import explain

        if req.target is not None and req.target.strip():
            self.check_length(req.target, "target")
            self.loaded.tokenizer.check_known(req.target, "target")
        image = io.BytesIO(self._image(req.image))
        with self.lock:
            entry = explain(self.loaded, image, req.target, layers=[name], heads=[req.head]).attention[0]
        return entry.q_tokens, entry.k_tokens, entry.weights[0].float()

    def _text_attention(self, req: AttentionRequest, name: str, cross: bool) -> tuple[list[str], list[str],
                                                                                        torch.Tensor]:
        """A text model's (queries, keys, (q, k) weights) of module ``name``, head ``req.head``."""
        from ..explain.attention import capture_attention

        adapter = self.adapter
        tok = adapter.tokenizer(self.loaded)
        ids = adapter.frame(self.loaded, tok, req.text, self._ids(req.text, "text", tok, prompt=adapter.prompt))
        if len(ids) > self.max_len:
            raise self.too_long(len(ids), "text")
        keys = [tok.id_to_token(i) or "" for i in ids]
        src = torch.tensor([ids], device=self.device)
        with self.lock, torch.inference_mode():
            if cross:
                target_ids = self._target_ids(req.text, req.target)
                queries = [self.loaded.tokenizer.id_to_token(i) or "" for i in target_ids]
            else:
                queries = keys
            with capture_attention(self.model, layers=[name], heads=[req.head]) as cap:
                if cross:
                    self.model(src, torch.tensor([target_ids], device=self.device))
                else:
                    adapter.run(self.model, src)
        return queries, keys, cap.weights[name][0, 0].float()                # (queries, keys)

    def _target_ids(self, text: str, target: str | None) -> list[int]:
        """A translator's decoder input for ``target`` (default: the translation of ``text``): the
        start token and the target's tokens, at most the model's length.  Call under the lock."""
        from ..tasks import translate

        config = self.loaded.config
        given = target is not None
        if not given:
            target = translate(self.model, self.loaded.src_tokenizer, self.loaded.tokenizer, [text])[0]
        elif target.strip():
            self.check_length(target, "target")
            self.loaded.tokenizer.check_known(target, "target")
        ids = [config.start_id] + (self.loaded.tokenizer.encode(target) if target.strip() else [])
        if len(ids) > self.max_len:
            if given:
                raise self.too_long(len(ids), "target (with its start token)")
            ids = ids[: self.max_len]             # a translation that ran to the length limit
        return ids

    def _image(self, encoded: str) -> bytes:
        """The bytes of a base64 image (a ``data:...;base64,`` prefix allowed); 400 when it is not base64."""
        if encoded.startswith("data:") and "," in encoded:
            encoded = encoded.split(",", 1)[1]
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "the image is not base64; send the image file's bytes base64-encoded") from None
        if not data:
            raise ApiError(400, "the image is empty; send an image file base64-encoded")
        return data

    def _ids(self, text: str, what: str, tok=None, *, prompt: bool = False) -> list[int]:
        """Token ids of ``text`` (``prompt``: a GPT prompt as generate reads it, framed by a checkpoint
        tokenizer's post-processor); 400 when it tokenizes to nothing (or to unknown tokens only)."""
        tok = tok or self.loaded.tokenizer
        self.check_length(text, what)
        ids = (tok.encode_prompt(text) if prompt else tok.encode(text)) if text.strip() else []
        if not ids:
            raise ApiError(400, f"the {what} is empty (it tokenizes to nothing); give some text")
        tok.check_known(text, what)
        return ids
