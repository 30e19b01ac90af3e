"""The JSON bodies of ``glassformer serve``: one pydantic model per request and per answer, so that
``/openapi.json`` describes the API.  Every request refuses unknown fields, NaN and ±Infinity and text that
is not Unicode with a 422 naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..generation.sampling import MAX_SEED, TEMPERATURE_RANGE

MAX_EMBED_TEXTS = 256
MAX_IMAGE_CHARS = 16 * 2 ** 20          # a base64 image of at most 12 MiB


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
