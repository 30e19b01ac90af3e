"""A model directory served over HTTP: a JSON API under ``/v1/`` and one HTML page at ``/``.

    app = create_app("runs/lm/best")           # the model is loaded once, here
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (request and response bodies are pydantic models, so ``/openapi.json`` describes them):

* ``POST /v1/generate``  {"prompt", "max_new_tokens", "temperature", "seed"} -> {"text"}   (GPT)
* ``POST /v1/translate`` {"text"} -> {"translation"}                                      (encoder–decoder)
* ``POST /v1/embed``     {"texts": [...]} -> {"embeddings": [[...]]}                        (BERT)
* ``POST /v1/fill-mask`` {"text", "top_k"} -> {"filled", "masks"}               (BERT with a masked-LM head)
* ``POST /v1/classify``  {"image", "top_k"} -> {"classes"}                                   (ViT)
* ``POST /v1/caption``   {"image"} -> {"caption"}                                        (image to text)
* ``POST /v1/attention`` {"text", "layer", "head", "kind", "target", "max_cells"} -> {"tokens",
  "key_tokens", "weights", "rows", "cols"}: the attention probabilities of one layer and head on one
  full forward pass: self-attention (a translator: its encoder's), or ``kind="cross"`` a translator's
  decoder cross-attention of ``target`` (default: its translation) over the source.  ``max_cells``
  averages blocks of positions so that a long input comes back as at most max_cells² cells.  Image
  models take ``"image"`` instead of ``"text"`` (their tokens are [CLS] and the patches); an
  image-to-text model's ``kind="cross"`` is its caption (``target``, default its own) over the patches.
* ``GET /v1/info``: the model's family, endpoints, layers, heads and context.

There is no ``/docs`` or ``/redoc`` page: FastAPI's would load Swagger UI from a CDN, and the server
fetches nothing from the network; ``/openapi.json`` describes the API to any viewer.

An ``"image"`` is the image file (PNG, JPEG, ...) base64-encoded, optionally as a ``data:`` URL.

Every error is a 4xx with a JSON body ``{"error": "..."}``: malformed JSON and wrong fields 422 (a
number out of its range, NaN or infinite; text that is not Unicode, such as JSON's lone surrogate
``"\\ud800"``), input longer than the model takes 413 (a text with more characters than the model's
tokens could hold is refused before it is tokenized), an endpoint the model type does not serve 400, a layer or
head out of range 422 (naming the valid range), text that tokenizes to nothing 400, and any
:class:`~glassformer.errors.GlassformerError` of the library 400.  The model is not re-entrant:
every model call runs under one lock, so concurrent requests are answered one after the other.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CheckpointError, GlassformerError
from ..generation.sampling import MAX_SEED, TEMPERATURE_RANGE
from ..model_dir import ModelDir, load_model_dir

# family -> the endpoint that does its main job ("attention" serves them all; a BERT with a
# masked-LM head fills in masks first and embeds too)
TASKS = {"gpt": "generate", "transformer": "translate", "bert": "embed", "vit": "classify", "caption": "caption"}
IMAGE_FAMILIES = ("vit", "caption")
MAX_EMBED_TEXTS = 256
MAX_IMAGE_CHARS = 16 * 2 ** 20          # a base64 image of at most 12 MiB


class ApiError(Exception):
    """An answer other than 200: ``status`` and the one-line ``message`` of the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# -- request and response bodies ----------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)   # NaN, ±Infinity (Python's JSON reads them): 422

    @field_validator("*")
    @classmethod
    def _unicode(cls, value: Any) -> Any:
        """Text must be Unicode: JSON's "\\ud800" decodes to a lone surrogate, which no tokenizer (and no
        UTF-8 answer) can hold — a 422 naming the field, never a 500."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise ValueError(f"holds a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}, "
                                     "which is not Unicode text; send UTF-8 text") from None
        return value


class GenerateRequest(_Body):
    prompt: str = Field(description="the text to continue")
    max_new_tokens: int = Field(50, ge=1, le=512, description="tokens to generate")
    temperature: float = Field(0.0, ge=0.0, le=TEMPERATURE_RANGE[1], description="sampling temperature: 0 = greedy, "
                               f"else from {TEMPERATURE_RANGE[0]:g} to {TEMPERATURE_RANGE[1]:g}")
    seed: int | None = Field(0, ge=0, le=MAX_SEED, description="sampling seed, 0 to 2**64 - 1 (same seed, same text)")


class GenerateResponse(BaseModel):
    text: str = Field(description="the continuation (without the prompt)")


class TranslateRequest(_Body):
    text: str = Field(description="one source sentence")


class TranslateResponse(BaseModel):
    translation: str


class EmbedRequest(_Body):
    texts: list[str] = Field(min_length=1, max_length=MAX_EMBED_TEXTS, description="texts to embed")


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="one unit vector per text, in input order")


class FillMaskRequest(_Body):
    text: str = Field(description="a text with [MASK] wherever a word should be filled in")
    top_k: int = Field(5, ge=1, le=100, description="candidates per mask")


class Candidate(BaseModel):
    token: str
    id: int
    probability: float


class Mask(BaseModel):
    position: int = Field(description="the mask's position among the tokens ([CLS] is 0)")
    candidates: list[Candidate]


class FillMaskResponse(BaseModel):
    filled: str = Field(description="the text with every mask replaced by its most likely token")
    masks: list[Mask]


class ImageRequest(_Body):
    image: str = Field(max_length=MAX_IMAGE_CHARS, description="the image file, base64-encoded (or a data: URL)")


class ClassifyRequest(ImageRequest):
    top_k: int = Field(5, ge=1, le=100, description="classes to return")


class ClassProbability(BaseModel):
    label: str
    id: int
    probability: float


class ClassifyResponse(BaseModel):
    classes: list[ClassProbability] = Field(description="the most likely classes, most likely first")


class CaptionResponse(BaseModel):
    caption: str


class AttentionRequest(_Body):
    text: str | None = Field(None, description="the input of a text model (a translator: the source sentence)")
    image: str | None = Field(None, max_length=MAX_IMAGE_CHARS, description="the input of an image model: "
                              "the image file, base64-encoded")
    layer: int = Field(0, description="layer, 0-based")
    head: int = Field(0, description="attention head, 0-based")
    kind: Literal["self", "cross"] = Field("self", description="'self': self-attention (a translator's encoder); "
                                           "'cross': a translator's decoder attending over the source")
    target: str | None = Field(None, description="kind 'cross': the target sentence (default: the translation)")
    max_cells: int | None = Field(None, ge=2, le=1024, description="average blocks of consecutive positions so "
                                  "that the grid has at most max_cells rows and columns (default: every token)")


class AttentionResponse(BaseModel):
    tokens: list[str] = Field(description="the query tokens (a cross-attention: the target's)")
    key_tokens: list[str] = Field(description="the tokens attended to (a cross-attention: the source's)")
    weights: list[list[float]] = Field(description="weights[i][j]: how much row i attends to column j")
    rows: list[str] = Field(description="the label of each row: its token, or the position range averaged")
    cols: list[str] = Field(description="the label of each column: its token, or the position range averaged")


class InfoResponse(BaseModel):
    family: str
    task: str = Field(description="the main endpoint (the page's)")
    endpoints: list[str]
    layers: int = Field(description="self-attention layers (a translator: its encoder's)")
    cross_layers: int = Field(description="cross-attention layers (0 without a decoder over a source)")
    heads: int
    max_len: int


class ErrorResponse(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413, 422)}


# -- the served model --------------------------------------------------------------------------
class Served:
    """The loaded model and what the endpoints need of it; every model call under ``lock``."""

    def __init__(self, loaded: ModelDir, name: str):
        self.loaded, self.name = loaded, name
        self.family = loaded.config.family
        if self.family not in TASKS:
            raise CheckpointError(f"{name} holds a {self.family!r} model; serve takes a GPT ('gpt'), translation "
                                  "('transformer'), BERT ('bert'), ViT ('vit') or image-to-text ('caption') model "
                                  "directory")
        if loaded.tokenizer is None and self.family != "vit":
            raise CheckpointError(f"{name} has no tokenizer.json; serve needs one to read or write text")
        self.model = loaded.model.eval()
        config = loaded.config
        self.reads_images = self.family in IMAGE_FAMILIES
        self.max_len = int(config.max_len) if self.family != "vit" else (config.image_size // config.patch_size) ** 2 + 1
        # No text longer than max_len tokens of the longest vocabulary entry fits: such a text is refused
        # before tokenizing (5 MB of text takes seconds to tokenize, and would be refused after).
        texts = [t for t in (loaded.tokenizer, loaded.src_tokenizer) if t is not None]
        longest = max((len(t.id_to_token(i) or "") for t in texts for i in range(t.vocab_size)), default=1)
        self.max_chars = self.max_len * max(longest, 1)
        self.lock = threading.Lock()
        from ..explain.attention import attention_modules

        stack = "encoder." if self.family in ("transformer", "caption") else ""
        modules = attention_modules(self.model).items()
        self.self_attention = [(n, m) for n, m in modules if not m.cross_attention and n.startswith(stack)]
        self.cross_attention = [(n, m) for n, m in modules if m.cross_attention]
        self.heads = self.self_attention[0][1].n_heads if self.self_attention else 0
        tok = loaded.tokenizer
        self.fills_masks = (self.family == "bert" and config.head == "mlm" and tok.mask_id is not None)
        self.task = "fill-mask" if self.fills_masks else TASKS[self.family]
        self.endpoints = [self.task] + (["embed"] if self.fills_masks else []) + ["attention"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def require(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            what = "a BERT without a masked-LM head" if endpoint == "fill-mask" and self.family == "bert" \
                else f"a {self.family!r} model"
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
        from ..generation.text import complete_batch

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
        from ..generation.translation import translate

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
        from ..data.images import load_image
        from ..models.vit import top_classes

        self.require("classify")
        config = self.loaded.config
        image = load_image(self._image(req.image), config.channels, config.image_size)
        with self.lock, torch.inference_mode():
            logits = self.model(image[None].to(self.device))
        return top_classes(logits, config.class_names, req.top_k)[0]

    def caption(self, req: ImageRequest) -> str:
        from ..data.captions import load_strip
        from ..tasks import caption_images

        self.require("caption")
        config = self.loaded.config
        image = load_strip(self._image(req.image), config.channels, config.image_size, config.image_width)
        with self.lock, torch.inference_mode():
            return caption_images(self.model, self.loaded.tokenizer, image[None].to(self.device))[0]

    def attention(self, req: AttentionRequest) -> AttentionResponse:
        from ..explain.figures import block_average, range_labels

        cross = req.kind == "cross"
        modules = self.cross_attention if cross else self.self_attention
        if cross and not modules:
            raise ApiError(400, f"kind 'cross' needs an encoder–decoder model; this {self.family!r} model has "
                                "only self-attention (use kind 'self')")
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
            entry = explain(self.loaded, image, req.target, layers=[name], heads=[req.head])["attention"][0]
        return entry["q_tokens"], entry["k_tokens"], entry["weights"][0].float()

    def _text_attention(self, req: AttentionRequest, name: str, cross: bool) -> tuple[list[str], list[str],
                                                                                        torch.Tensor]:
        """A text model's (queries, keys, (q, k) weights) of module ``name``, head ``req.head``."""
        from ..explain.attention import capture_attention

        tok = self.loaded.src_tokenizer if self.family == "transformer" else self.loaded.tokenizer
        ids = self._ids(req.text, "text", tok, prompt=self.family == "gpt")
        if self.family == "transformer":
            ids = ids + [self.loaded.config.eos_id]
        elif self.family == "bert":
            ids = tok.encode_sentences([req.text])[0][0]
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
                elif self.family == "gpt":
                    self.model.hidden_states(src)
                else:
                    self.model.encode(src)
        return queries, keys, cap.weights[name][0, 0].float()                # (queries, keys)

    def _target_ids(self, text: str, target: str | None) -> list[int]:
        """A translator's decoder input for ``target`` (default: the translation of ``text``): the
        start token and the target's tokens, at most the model's length.  Call under the lock."""
        from ..generation.translation import translate

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


# -- the application -----------------------------------------------------------------------------
def create_app(model_dir: str | Path | ModelDir, *, device: str | torch.device = "cpu") -> FastAPI:
    """A FastAPI app serving ``model_dir`` (a path, loaded here once, or an already loaded
    :class:`~glassformer.model_dir.ModelDir`).  Raises :class:`CheckpointError` for a model
    directory serve cannot use (a family other than gpt / transformer / bert, no tokenizer)."""
    if isinstance(model_dir, ModelDir):
        loaded, name = model_dir, "the model directory"
    else:
        loaded, name = load_model_dir(model_dir, device), str(model_dir)
    served = Served(loaded, name)
    app = FastAPI(title="glassformer", version="1", docs_url=None, redoc_url=None,   # their pages load from a CDN
                  description=f"A {served.family!r} model ({name}) served by glassformer")
    app.state.served = served

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for e in errors[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(parts) if parts else "invalid request"
        return JSONResponse({"error": message, "detail": jsonable(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(GlassformerError)
    async def library_error(request: Request, exc: GlassformerError) -> JSONResponse:
        text = str(exc).strip()
        return JSONResponse({"error": text.splitlines()[0] if text else type(exc).__name__}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"unexpected error ({type(exc).__name__}): {exc}"}, status_code=500)

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS,
              summary="continue a prompt (GPT models)")
    def generate(req: GenerateRequest) -> GenerateResponse:
        return GenerateResponse(text=served.generate(req))

    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS,
              summary="translate one sentence (encoder-decoder models)")
    def translate(req: TranslateRequest) -> TranslateResponse:
        return TranslateResponse(translation=served.translate(req.text))

    @app.post("/v1/embed", response_model=EmbedResponse, responses=ERRORS,
              summary="sentence embeddings (BERT encoders)")
    def embed(req: EmbedRequest) -> EmbedResponse:
        return EmbedResponse(embeddings=served.embed(req.texts))

    @app.post("/v1/attention", response_model=AttentionResponse, responses=ERRORS,
              summary="attention probabilities of one layer and head (self-attention, or a translator's cross-attention)")
    def attention(req: AttentionRequest) -> AttentionResponse:
        return served.attention(req)

    @app.post("/v1/fill-mask", response_model=FillMaskResponse, responses=ERRORS,
              summary="the most likely tokens at each [MASK] (BERT with a masked-LM head)")
    def fill_mask(req: FillMaskRequest) -> FillMaskResponse:
        return FillMaskResponse(**served.fill_mask(req))

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS,
              summary="the most likely classes of one image (ViT)")
    def classify(req: ClassifyRequest) -> ClassifyResponse:
        return ClassifyResponse(classes=served.classify(req))

    @app.post("/v1/caption", response_model=CaptionResponse, responses=ERRORS,
              summary="the greedy caption of one image (image-to-text models)")
    def caption(req: ImageRequest) -> CaptionResponse:
        return CaptionResponse(caption=served.caption(req))

    @app.get("/v1/info", response_model=InfoResponse, summary="what the served model is")
    def info() -> InfoResponse:
        return InfoResponse(family=served.family, task=served.task, endpoints=served.endpoints,
                            layers=len(served.self_attention), cross_layers=len(served.cross_attention),
                            heads=served.heads, max_len=served.max_len)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(served))

    return app


def jsonable(errors: list[dict]) -> list[dict]:
    """Pydantic's error list with only JSON values (its ``ctx`` may hold exception objects)."""
    out = []
    for e in errors:
        out.append({k: (v if k != "ctx" else {ck: str(cv) for ck, cv in v.items()})
                    for k, v in e.items() if k in ("type", "loc", "msg", "ctx")})
    return out


# -- the page ------------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>glassformer: __FAMILY__</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
textarea { width: 100%; box-sizing: border-box; font: inherit; }
button, select, input { font: inherit; }
#output { white-space: pre-wrap; background: #f4f4f4; padding: .6rem; min-height: 1.5rem; border-radius: 4px; }
.error { color: #b00; }
table.grid { border-collapse: collapse; margin-top: .6rem; font-size: 12px; }
table.grid td { width: 1.6rem; height: 1.6rem; border: 1px solid #eee; text-align: center; }
table.grid th { font-weight: normal; padding: 0 .3rem; white-space: pre; }
table.grid thead th { writing-mode: vertical-rl; text-align: right; vertical-align: bottom; padding: .3rem 0; line-height: 1.6rem; }
.note { color: #666; font-size: 13px; }
</style></head>
<body>
<h1>glassformer <small>(__FAMILY__ model, /v1/__TASK__)</small></h1>
<p __TEXT_HIDDEN__><textarea id="input" rows="4" placeholder="__PLACEHOLDER__"></textarea></p>
<p __IMAGE_HIDDEN__><input id="image" type="file" accept="image/*"> <img id="preview" alt="" height="64" style="image-rendering: pixelated"></p>
<p><button id="run">__BUTTON__</button>
<span id="generate-options" __GEN_HIDDEN__>max new tokens <input id="max-new" type="number" min="1" max="512" value="50">
temperature <input id="temperature" type="number" min="0" step="0.1" value="0"></span></p>
<div id="output"></div>
<h2>Attention</h2>
<p><span __CROSS_HIDDEN__>attention <select id="kind"><option value="self">encoder self-attention</option>
<option value="cross">decoder cross-attention (__CROSS_WHAT__)</option></select></span>
layer <select id="layer"></select> head <select id="head">__HEADS__</select>
<button id="show-attention">show attention</button></p>
<p class="note">Longer inputs are shown as averages over blocks of positions (at most __MAX_CELLS__ × __MAX_CELLS__ cells); hover over a cell for its weight.</p>
<div id="attention"></div>
<h3>Head view</h3>
<p class="note">A line from each row token (left) to each column token (right), as opaque as the attention weight.</p>
<svg id="headview" width="560" height="40"></svg>
<script>
const TASK = "__TASK__", LAYERS = {self: __SELF_LAYERS__, cross: __CROSS_LAYERS__}, MAX_CELLS = __MAX_CELLS__;
const $ = (id) => document.getElementById(id);
const IMAGES = __IMAGES__;
let image = null;                // the chosen image file, base64
$("image").addEventListener("change", () => {
  const file = $("image").files[0]; if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { $("preview").src = reader.result; image = reader.result.split(",")[1]; };
  reader.readAsDataURL(file);
});
function input() {               // the input part of a request: the text, or the chosen image
  if (!IMAGES) return {text: $("input").value};
  if (image === null) throw new Error("choose an image file first");
  return {image: image};
}
async function call(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}
function showError(where, e) { where.innerHTML = ""; const s = document.createElement("span"); s.className = "error"; s.textContent = e.message; where.appendChild(s); }
function cosine(a, b) { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }   // unit vectors
async function run() {
  const text = $("input").value, out = $("output");
  out.textContent = "...";
  try {
    if (TASK === "classify") {
      const d = await call("/v1/classify", {...input(), top_k: 5});
      out.textContent = d.classes.map((c) => c.label + "  " + c.probability.toFixed(3)).join("\\n");
    } else if (TASK === "caption") {
      out.textContent = (await call("/v1/caption", input())).caption;
    } else if (TASK === "generate") {
      const d = await call("/v1/generate", {prompt: text, max_new_tokens: Number($("max-new").value), temperature: Number($("temperature").value)});
      out.textContent = text + d.text;
    } else if (TASK === "translate") {
      out.textContent = (await call("/v1/translate", {text: text})).translation;
    } else if (TASK === "fill-mask") {
      const d = await call("/v1/fill-mask", {text: text, top_k: 5});
      out.textContent = d.filled + "\\n" + d.masks.map((m, i) => "[MASK] " + (i + 1) + ": " +
        m.candidates.map((c) => c.token + " " + c.probability.toFixed(3)).join(", ")).join("\\n");
    } else {
      const lines = text.split("\\n").filter((l) => l.trim());
      const d = await call("/v1/embed", {texts: lines});
      out.textContent = d.embeddings.map((v, i) => {
        let best = -1, score = -2;
        d.embeddings.forEach((w, j) => { if (j !== i && cosine(v, w) > score) { best = j; score = cosine(v, w); } });
        return lines[i] + "\\n  " + (best < 0 ? "(give two or more lines to see neighbours)" :
          "nearest: " + lines[best] + " (cosine " + score.toFixed(3) + ")") + "  [" + v.length + " dims]";
      }).join("\\n");
    }
  } catch (e) { showError(out, e); }
  attention();
}
function fillLayers() {
  const select = $("layer"), keep = select.value, n = LAYERS[$("kind").value];
  select.innerHTML = "";
  for (let i = 0; i < n; i++) { const o = document.createElement("option"); o.value = o.textContent = i; select.appendChild(o); }
  select.value = keep !== "" && Number(keep) < n ? keep : "0";
}
async function attention() {
  const where = $("attention"), kind = $("kind").value;
  try {
    const body = {...input(), layer: Number($("layer").value), head: Number($("head").value), kind: kind, max_cells: MAX_CELLS};
    const d = await call("/v1/attention", body);
    const table = document.createElement("table"); table.className = "grid";
    const head = table.createTHead().insertRow(); head.appendChild(document.createElement("th"));
    d.cols.forEach((t) => { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); });
    const tbody = table.createTBody();
    const top = Math.max(...d.weights.flat(), 1e-9);          // averaged blocks are faint: scale to the largest
    d.weights.forEach((row, i) => {
      const tr = tbody.insertRow(); const th = document.createElement("th"); th.textContent = d.rows[i]; tr.appendChild(th);
      row.forEach((w, j) => { const td = tr.insertCell(); td.style.background = "rgba(30, 90, 200, " + (w / top).toFixed(3) + ")";
        td.title = w.toFixed(4); td.dataset.tip = d.rows[i] + " \\u2192 " + d.cols[j] + ": " + w.toFixed(4); });
    });
    where.innerHTML = ""; where.appendChild(table);
    headView(d, top);
  } catch (e) { showError(where, e); $("headview").innerHTML = ""; }
}
function headView(d, top) {                    // lines from the rows' tokens to the columns' tokens
  const svg = $("headview"), NS = svg.namespaceURI, step = 16, x0 = 150, x1 = 410;
  svg.innerHTML = "";
  svg.setAttribute("height", step * Math.max(d.rows.length, d.cols.length) + 10);
  const label = (x, i, text, anchor) => { const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", step * i + 14); t.setAttribute("text-anchor", anchor);
    t.setAttribute("font-size", "12"); t.textContent = text; svg.appendChild(t); };
  d.rows.forEach((t, i) => label(x0 - 6, i, t, "end"));
  d.cols.forEach((t, j) => label(x1 + 6, j, t, "start"));
  d.weights.forEach((row, i) => row.forEach((w, j) => {
    if (w <= 0) return;
    const l = document.createElementNS(NS, "line");
    l.setAttribute("x1", x0); l.setAttribute("y1", step * i + 10); l.setAttribute("x2", x1); l.setAttribute("y2", step * j + 10);
    l.setAttribute("stroke", "rgb(30, 90, 200)"); l.setAttribute("stroke-width", "2");
    l.setAttribute("stroke-opacity", (w / top).toFixed(3)); svg.appendChild(l);
  }));
}
fillLayers();
$("run").addEventListener("click", run);
$("show-attention").addEventListener("click", attention);
$("kind").addEventListener("change", () => { fillLayers(); attention(); });
$("layer").addEventListener("change", attention);
$("head").addEventListener("change", attention);
</script>
</body></html>
"""

_WORDS = {"generate": ("Generate", "a prompt to continue"), "translate": ("Translate", "a sentence to translate"),
          "embed": ("Embed", "texts to embed, one per line (each is shown with its nearest neighbour)"),
          "fill-mask": ("Fill in", "a sentence with [MASK] where a word should be"),
          "classify": ("Classify", ""), "caption": ("Caption", "")}
PAGE_MAX_CELLS = 64         # the page asks for at most 64 × 64 averaged cells, whatever the input's length


def render_page(served: Served) -> str:
    import html

    button, placeholder = _WORDS[served.task]
    options = lambda n: "".join(f'<option value="{i}">{i}</option>' for i in range(n))  # noqa: E731
    return (PAGE.replace("__FAMILY__", html.escape(served.family)).replace("__TASK__", served.task)
            .replace("__BUTTON__", button).replace("__PLACEHOLDER__", placeholder)
            .replace("__GEN_HIDDEN__", "" if served.task == "generate" else "hidden")
            .replace("__CROSS_HIDDEN__", "" if served.cross_attention else "hidden")
            .replace("__CROSS_WHAT__", "caption over patches" if served.reads_images else "target over source")
            .replace("__TEXT_HIDDEN__", "hidden" if served.reads_images else "")
            .replace("__IMAGE_HIDDEN__", "" if served.reads_images else "hidden")
            .replace("__IMAGES__", "true" if served.reads_images else "false")
            .replace("__SELF_LAYERS__", str(len(served.self_attention)))
            .replace("__CROSS_LAYERS__", str(len(served.cross_attention)))
            .replace("__MAX_CELLS__", str(PAGE_MAX_CELLS)).replace("__HEADS__", options(served.heads)))


__all__ = ["create_app", "render_page", "GenerateRequest", "GenerateResponse", "TranslateRequest", "TranslateResponse",
           "EmbedRequest", "EmbedResponse", "FillMaskRequest", "FillMaskResponse", "ImageRequest", "ClassifyRequest",
           "ClassifyResponse", "CaptionResponse", "AttentionRequest", "AttentionResponse", "InfoResponse"]
