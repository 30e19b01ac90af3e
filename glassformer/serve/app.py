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

This file holds the routes and the error handlers; the bodies are in :mod:`.schemas`, the endpoints'
work in :mod:`.served`, what differs per family in :mod:`.adapters` and the page in ``static/index.html``.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GlassformerError
from ..model_dir import ModelDir, load_model_dir
from .schemas import (ERRORS, AttentionRequest, AttentionResponse, CaptionResponse, ClassifyRequest, ClassifyResponse,
                      EmbedRequest, EmbedResponse, FillMaskRequest, FillMaskResponse, GenerateRequest, GenerateResponse,
                      ImageRequest, InfoResponse, TranslateRequest, TranslateResponse)
from .served import ApiError, Served


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


# -- the page: static/index.html (HTML, CSS and script), its __PLACEHOLDERS__ filled in for the model --
PAGE = files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")
_WORDS = {"generate": ("Generate", "a prompt to continue"), "translate": ("Translate", "a sentence to translate"),
          "embed": ("Embed", "texts to embed, one per line (each is shown with its nearest neighbour)"),
          "fill-mask": ("Fill in", "a sentence with [MASK] where a word should be"),
          "classify": ("Classify", ""), "caption": ("Caption", "")}
PAGE_MAX_CELLS = 64         # the page asks for at most 64 × 64 averaged cells, whatever the input's length


def render_page(served: Served) -> str:
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
