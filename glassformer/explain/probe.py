"""Probing word vectors: nearest neighbours, analogies (a − b + c) and a 2-D PCA view.

Two sources of word vectors:

* a GPT or Transformer's token embeddings (the rows of its input embedding matrix): each word
  must be one token of the model's vocabulary, else an :class:`InputError` names it;
* a sentence-embedding model (a BERT with head "none", e.g. all-MiniLM-L6-v2): each word is
  embedded as a one-word text with :func:`~glassformer.generation.embeddings.embed_texts`, over a
  vocabulary of :data:`COMMON_WORDS` (a few hundred common English words) plus the query words.

Similarity is cosine similarity throughout; an analogy excludes its own input words from the
answer (as Mikolov et al. 2013 did: otherwise "king" is usually nearest to king − man + woman).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from ..generation.embeddings import embed_texts, rank_by_similarity

COMMON_WORDS: tuple[str, ...] = tuple("""
the of and to in is it you that he was for on are with as his they be at one have this from or had by
word but what some we can out other were all there when up use your how said an each she which do their
time if will way about many then them write would like so these her long make thing see him two has look
more day could go come did number sound no most people my over know water than call first who may down
side been now find

man woman boy girl child baby king queen prince princess lord lady father mother son daughter brother
sister husband wife uncle aunt grandfather grandmother actor actress emperor empress duke duchess
hero heroine nephew niece gentleman monk nun waiter waitress

dog cat horse cow pig sheep goat chicken duck bird fish mouse rat rabbit lion tiger bear wolf fox deer
elephant monkey snake frog whale shark eagle owl bee ant spider puppy kitten

apple banana orange grape lemon bread cheese butter milk egg rice meat beef pork soup cake cookie
sugar salt pepper coffee tea juice wine beer pizza sandwich

red blue green yellow black white brown pink purple gray

car bus train plane boat ship bicycle truck road street bridge city town village country house home
school church hospital office shop store market bank library park garden farm forest river lake sea
ocean mountain hill island beach desert sky sun moon star rain snow wind cloud storm fire ice stone

paris france london england berlin germany rome italy madrid spain tokyo japan beijing china moscow
russia

head face eye ear nose mouth hand arm leg foot heart blood bone hair skin

happy sad angry afraid calm good bad big small large little old young new hot cold fast slow strong
weak rich poor easy hard high low early late beautiful ugly clean dirty

run walk swim fly jump sing dance read speak talk eat drink sleep think love hate play work buy sell
give take open close begin end win lose teach learn

book pen paper letter phone computer table chair bed door window wall floor room kitchen money gold
silver iron music song game ball movie picture art war peace army soldier doctor nurse teacher student
lawyer farmer police judge writer painter scientist engineer

monday tuesday morning evening night week month year summer winter spring autumn
""".split())


def _unique(words: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(words))


@dataclass
class WordVectors:
    """Words and one vector per word (row i for ``words[i]``)."""

    words: list[str]
    vectors: Tensor                       # (n, d)

    def index(self, word: str) -> int:
        try:
            return self.words.index(word)
        except ValueError:
            raise InputError(f"word {word!r} is not in the vocabulary") from None

    def vector(self, word: str) -> Tensor:
        return self.vectors[self.index(word)]


def nearest(vectors: Tensor, words: Sequence[str], query_vec: Tensor, k: int = 5,
            exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
    """The ``k`` words whose vectors are most cosine-similar to ``query_vec``, best first, as
    (word, cosine); the words in ``exclude`` are skipped (ties keep vocabulary order)."""
    if k < 1:
        raise ConfigError(f"k={k} is invalid; it must be a positive integer")
    if vectors.dim() != 2 or vectors.shape[0] != len(words):
        raise InputError(f"{len(words)} words but vectors of shape {tuple(vectors.shape)}; one row per word")
    query = query_vec.reshape(-1)
    if query.shape[0] != vectors.shape[1]:
        raise InputError(f"the query has {query.shape[0]} dimensions and the vectors {vectors.shape[1]}")
    skip = set(exclude)
    return [(words[i], score) for i, score in rank_by_similarity(query, vectors) if words[i] not in skip][:k]


def analogy(table: WordVectors, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
    """"a is to b as ? is to c": the words nearest to a − b + c, excluding a, b and c
    (``analogy(king, man, woman)`` → queen, ideally)."""
    query = table.vector(a) - table.vector(b) + table.vector(c)
    return nearest(table.vectors, table.words, query, k, exclude=(a, b, c))


def neighbours(table: WordVectors, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` words nearest to ``word``, itself excluded."""
    return nearest(table.vectors, table.words, table.vector(word), k, exclude=(word,))


def pca_2d(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """(n, d) -> the points on their first two principal components (n, 2), and the fraction of the
    variance each explains (2,), largest first (via torch.linalg.svd of the centred matrix)."""
    x = vectors.float()
    if x.dim() != 2 or x.shape[0] < 2:
        raise InputError(f"PCA needs two or more vectors, (n, d); got shape {tuple(x.shape)}")
    x = x - x.mean(0, keepdim=True)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    coords = x @ vh[:2].T
    if coords.shape[1] < 2:                       # d == 1: one component only
        coords = F.pad(coords, (0, 2 - coords.shape[1]))
    var = s ** 2
    share = var / var.sum().clamp_min(torch.finfo(var.dtype).tiny)
    return coords, F.pad(share[:2], (0, max(0, 2 - share.shape[0])))


# -- where the vectors come from -----------------------------------------------------------------
def is_sentence_encoder(model) -> bool:
    """A BERT without a head (e.g. all-MiniLM-L6-v2): its words get sentence embeddings."""
    return getattr(model.config, "family", None) == "bert" and getattr(model.config, "head", None) == "none"


def token_embedding_matrix(model) -> Tensor:
    """The input token-embedding matrix of a GPT, Transformer (target side) or BERT."""
    for name in ("embed", "tgt_embed", "src_embed"):
        embed = getattr(model, name, None)
        if embed is not None and hasattr(embed, "token"):
            return embed.token.weight
    raise ConfigError(f"{type(model).__name__} has no token embedding to probe")


def token_vectors(model, tokenizer, words: Sequence[str] | None = None) -> WordVectors:
    """Token-embedding vectors.  With ``words``: those words, each of which must be a single token
    (tried as is and with a leading space, as byte-level BPE spells a word after a space); without:
    every token of the vocabulary."""
    if tokenizer is None:
        raise ConfigError("the model directory has no tokenizer.json; its tokens cannot be named")
    matrix = token_embedding_matrix(model).detach().float().cpu()
    if words is None:
        names = [tokenizer.id_to_token(i) or f"<{i}>" for i in range(min(tokenizer.vocab_size, matrix.shape[0]))]
        return WordVectors(names, matrix[: len(names)])
    ids = [single_token_id(tokenizer, w) for w in _unique(words)]
    return WordVectors(_unique(words), matrix[ids])


def single_token_id(tokenizer, word: str) -> int:
    """The id of ``word`` as one token, or an :class:`InputError` naming the word."""
    unk = getattr(tokenizer, "unk_id", None)
    for candidate in (word, " " + word):
        ids = tokenizer.encode(candidate)
        if len(ids) == 1 and ids[0] != unk:
            return ids[0]
    direct = tokenizer.token_to_id(word)
    if direct is not None and direct != unk:
        return direct
    raise InputError(f"word {word!r} is not a single token of the model's vocabulary "
                     f"(it splits into {len(tokenizer.encode(word))}); choose a word the vocabulary holds")


def sentence_vectors(model, tokenizer, words: Sequence[str], vocabulary: Sequence[str] = COMMON_WORDS,
                     **embed_options) -> WordVectors:
    """Sentence embeddings of ``vocabulary`` plus ``words`` (each embedded as a one-word text)."""
    names = _unique([*vocabulary, *words])
    return WordVectors(names, embed_texts(model, tokenizer, names, **embed_options))


def word_vectors(model, tokenizer, words: Sequence[str], **embed_options) -> WordVectors:
    """The right source for ``model``: sentence embeddings over :data:`COMMON_WORDS` + ``words``
    for a sentence encoder, else the token embeddings of the whole vocabulary (``words`` checked)."""
    if is_sentence_encoder(model):
        return sentence_vectors(model, tokenizer, words, **embed_options)
    for w in words:
        single_token_id(tokenizer, w)
    table = token_vectors(model, tokenizer)
    # name the query words as the user spelled them (a byte-level token may carry a space marker)
    for w in words:
        table.words[single_token_id(tokenizer, w)] = w
    return table


__all__ = ["COMMON_WORDS", "WordVectors", "nearest", "analogy", "neighbours", "pca_2d", "is_sentence_encoder",
           "token_embedding_matrix", "token_vectors", "single_token_id", "sentence_vectors", "word_vectors"]
