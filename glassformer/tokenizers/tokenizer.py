"""One Tokenizer class over ``tokenizers.Tokenizer``: BPE (Metaspace or byte-level) and characters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..errors import CheckpointError, ConfigError, InputError
from ..files import read_json

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS, UNK = SPECIAL_TOKENS
# BERT's vocabulary names the same roles differently: [CLS] begins a sequence, [SEP] ends each sentence.
BERT_SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
MASK_TOKENS = ("[MASK]", "<mask>")


class Tokenizer:
    """Text <-> token ids.

    Build one with :meth:`train_bpe`, :meth:`train_byte_bpe`, :meth:`train_char`
    or :meth:`load`; it wraps a ``tokenizers.Tokenizer`` (``.backend``).
    """

    def __init__(self, backend: tokenizers.Tokenizer, roles: "CheckpointRoles | None" = None):
        self.backend = backend
        self.roles = roles                   # a checkpoint's own special tokens (None: glassformer's)
        backend.no_padding()           # a checkpoint's tokenizer.json may pad or cut; batching does that here
        backend.no_truncation()
        names = BERT_SPECIAL_TOKENS if backend.token_to_id("[CLS]") is not None else SPECIAL_TOKENS
        if roles is not None:
            names = [roles.pad, roles.bos, roles.eos, roles.unk]
        self.special_tokens = names          # pad, begin (bos / [CLS]), end (eos / [SEP]), unknown
        ids = [None if t is None else backend.token_to_id(t) for t in names]
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids
        self.mask_id = next((backend.token_to_id(t) for t in MASK_TOKENS if backend.token_to_id(t) is not None), None)
        # Every token that ends a text (a checkpoint may list several, as Llama 3 does), the main one first.
        self.eos_ids: tuple[int, ...] = (self.eos_id,) if self.eos_id is not None else ()
        # Prompts framed by tokenizer.json's post-processor (a checkpoint's own tokenizer: BOS exactly
        # where it adds one); glassformer's own tokenizers frame nothing.
        self.frames_prompts = False
        self.clean_up_spaces = False         # transformers' clean_up_tokenization_spaces, as a checkpoint says
        self.has_pad = self.pad_id is not None
        self._char_ids = _char_table(backend)  # a character vocabulary's ids looked up in Python: the same, ~400x faster
        if roles is not None:
            # Generation stops where transformers' generate does: at the configs' end ids if they
            # state any, else at the tokenizer's end-of-text token.
            if roles.eos_ids:
                self.eos_ids = tuple(sorted(set(roles.eos_ids), key=lambda i: (i != self.eos_id, i)))
                self.eos_id = self.eos_ids[0]
            self.frames_prompts = True
            self.clean_up_spaces = roles.clean_up_spaces
            if self.pad_id is None:
                # No pad token: rows are left-padded under the attention mask with a stand-in id that
                # is never seen nor emitted (the end-of-text id, as transformers' generate does).
                self.pad_id = roles.pad_id if roles.pad_id is not None else self.eos_id

    # -- training ------------------------------------------------------------------
    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "Tokenizer":
        """Subword BPE (Sennrich et al. 2016) over whitespace-separated words; spaces kept as '▁'."""
        backend = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    @classmethod
    def train_byte_bpe(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "Tokenizer":
        """Byte-level BPE (GPT-2): any text is encodable, no unknown tokens."""
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    @classmethod
    def train_wordpiece(cls, texts: Iterable[str], vocab_size: int = 8000, *, lowercase: bool = True,
                        min_frequency: int = 2) -> "Tokenizer":
        """BERT's WordPiece (Wu et al. 2016): words split on whitespace and punctuation, then into the
        longest known pieces, continuations marked '##'; lower-cased and accents stripped if
        ``lowercase``.  Sequences are framed as ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``."""
        backend = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        _bert_pipeline(backend, lowercase=lowercase, strip_accents=lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                            special_tokens=[*BERT_SPECIAL_TOKENS, "[MASK]"])
        backend.train_from_iterator(texts, trainer)
        _bert_template(backend)
        return cls(backend)

    @classmethod
    def from_wordpiece_vocab(cls, vocab_file: str | Path, *, lowercase: bool = True,
                             strip_accents: bool | None = None) -> "Tokenizer":
        """A BERT tokenizer from a checkpoint's ``vocab.txt`` (one piece per line, the line number is
        the id); ``strip_accents`` None follows ``lowercase``, as BERT's tokenizer does."""
        vocab = models.WordPiece.read_file(str(vocab_file))
        backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        _bert_pipeline(backend, lowercase=lowercase, strip_accents=strip_accents)
        _bert_template(backend)
        return cls(backend)

    @classmethod
    def train_char(cls, texts: Iterable[str]) -> "Tokenizer":
        """One token per character seen in ``texts``; unseen characters become ``<unk>``."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for ch in sorted(chars):
            vocab.setdefault(ch, len(vocab))
        backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
        return cls(backend)

    # -- use -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def kind(self) -> str:
        model = type(self.backend.model).__name__
        if model == "WordLevel":
            return "char"
        return "byte-bpe" if isinstance(self.backend.pre_tokenizer, pre_tokenizers.ByteLevel) else "bpe"

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        return self.encode_batch([text], bos=bos, eos=eos)[0]

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False, eos: bool = False) -> list[list[int]]:
        if self._char_ids is not None:
            table, unk = self._char_ids, self.unk_id
            encoded = [[table.get(ch, unk) for ch in text] for text in texts]
        else:
            encoded = [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        head, tail = ([self.bos_id] if bos else []), ([self.eos_id] if eos else [])
        return [head + ids + tail for ids in encoded]

    def encode_sentences(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                         max_len: int | None = None) -> tuple[list[list[int]], list[list[int]], list[bool]]:
        """Sentences (or sentence pairs) framed for an encoder: ``[CLS] A [SEP] (B [SEP])``, with
        each token's segment (0 for A, 1 for B).  Longer than ``max_len``: cut (the longest
        sentence first, the frame kept).  Returns (ids, segments, which were cut)."""
        texts = list(texts)
        items = list(zip(texts, pairs)) if pairs is not None else texts
        full = self.backend.encode_batch(items, add_special_tokens=True)
        cut = [max_len is not None and len(e.ids) > max_len for e in full]
        if any(cut):
            self.backend.enable_truncation(max_len, strategy="longest_first")
            try:
                full = self.backend.encode_batch(items, add_special_tokens=True)
            finally:
                self.backend.no_truncation()
        return [e.ids for e in full], [e.type_ids for e in full], cut

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids as the model reads them: framed by a checkpoint's post-processor (its BOS
        added there and only there), unframed for glassformer's own tokenizers."""
        return self.backend.encode(text, add_special_tokens=self.frames_prompts).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text, special tokens dropped (whether or not the backend marks them special:
        a character vocabulary holds them as plain entries)."""
        special = {self.pad_id if self.has_pad else None, self.bos_id, *self.eos_ids, self.unk_id, self.mask_id}
        text = self.backend.decode([int(i) for i in ids if int(i) not in special], skip_special_tokens=True)
        return _clean_up_spaces(text) if self.clean_up_spaces else text

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.backend.id_to_token(idx)

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write tokenizer.json; a checkpoint's own tokenizer also writes what its special tokens do
        (``tokenizer_roles.json`` beside it: BOS, EOS, the end ids, pad or none), which :meth:`load`
        reads back, so a converted checkpoint frames, pads and stops as its source did."""
        path = Path(path)
        self.backend.save(str(path))
        if self.roles is not None:
            roles_file(path).write_text(json.dumps(asdict(self.roles), indent=2) + "\n", encoding="utf-8")

    def save_hf(self, directory: str | Path) -> None:
        """Write tokenizer.json and the tokenizer_config.json that names its special tokens, as
        transformers' ``PreTrainedTokenizerFast`` reads them."""
        directory = Path(directory)
        self.backend.save(str(directory / "tokenizer.json"))
        if self.roles is not None:
            named = {"bos": self.roles.bos, "eos": self.roles.eos, "unk": self.roles.unk, "pad": self.roles.pad}
        elif self.special_tokens == BERT_SPECIAL_TOKENS:
            named = dict(zip(["pad", "cls", "sep", "unk"], BERT_SPECIAL_TOKENS))
        else:
            named = dict(zip(["pad", "bos", "eos", "unk"], SPECIAL_TOKENS))
        mask = next((t for t in MASK_TOKENS if self.backend.token_to_id(t) is not None), None)
        settings = {"tokenizer_class": "PreTrainedTokenizerFast",
                    **{f"{role}_token": t for role, t in {**named, "mask": mask}.items() if t is not None},
                    "clean_up_tokenization_spaces": self.clean_up_spaces}
        (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """A tokenizer.json written by :meth:`save` (with its roles file when it has one)."""
        path = Path(path)
        backend = _read_backend(path)
        if roles_file(path).is_file():
            return cls(backend, CheckpointRoles.from_file(roles_file(path), backend))
        if not any(all(backend.token_to_id(t) is not None for t in names)
                   for names in (SPECIAL_TOKENS, BERT_SPECIAL_TOKENS)):
            missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
            raise CheckpointError(f"tokenizer {path} lacks the special tokens {missing}; glassformer needs "
                                  f"{SPECIAL_TOKENS} (or BERT's {BERT_SPECIAL_TOKENS}), or a "
                                  f"{roles_file(path).name} naming its own")
        return cls(backend)

    @classmethod
    def load_checkpoint(cls, path: str | Path) -> "Tokenizer":
        """A Hugging Face directory's own tokenizer: tokenizer.json with the special tokens and roles
        its tokenizer_config.json / special_tokens_map.json name, and the end-of-text ids (several,
        possibly) and padding id of its generation_config.json / config.json."""
        path = Path(path)
        backend = _read_backend(path / "tokenizer.json")
        return cls(backend, CheckpointRoles.read(path, backend))

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of ``text`` this tokenizer cannot represent (they become ``<unk>``, which
        decoding drops), each once, in order of appearance; ``[]`` for byte-level BPE."""
        encoding = self.backend.encode(text, add_special_tokens=False)
        spans = [text[start:end] for idx, (start, end) in zip(encoding.ids, encoding.offsets) if idx == self.unk_id]
        candidates = dict.fromkeys(ch for span in spans for ch in span)
        # A span can cover a known character next to an unknown one; keep those that are unknown alone.
        return [ch for ch in candidates if self.unk_id in self.backend.encode(ch, add_special_tokens=False).ids]

    def check_known(self, text: str, what: str = "text") -> None:
        """Refuse text whose tokens are all unknown (a char tokenizer seeing another alphabet)."""
        ids = self.encode(text)
        if ids and all(i == self.unk_id for i in ids):
            raise InputError(f"every character of the {what} {text[:40]!r} is unknown to this tokenizer; "
                             "use characters from the training text")


def _char_table(backend: tokenizers.Tokenizer) -> dict[str, int] | None:
    """Character -> id of a vocabulary built by :meth:`Tokenizer.train_char` (one token per character:
    a WordLevel model over a split into single characters, no normaliser, no added tokens), where a
    Python lookup gives the backend's ids; None for any other tokenizer."""
    if type(backend.model).__name__ != "WordLevel" or backend.normalizer is not None:
        return None                          # (before serialising: a large BPE's JSON takes a while)
    split = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    if (backend.get_added_tokens_decoder() or split.get("type") != "Split"
            or split.get("pattern") != {"Regex": r"[\s\S]"} or split.get("behavior") != "Isolated"
            or split.get("invert")):
        return None
    return {token: idx for token, idx in backend.get_vocab().items() if len(token) == 1}


def roles_file(tokenizer_file: Path) -> Path:
    """Where a checkpoint tokenizer's roles are kept beside its tokenizer.json (tokenizer_roles.json)."""
    return tokenizer_file.with_name(f"{tokenizer_file.stem}_roles.json")


def _read_backend(file: Path) -> tokenizers.Tokenizer:
    """The ``tokenizers`` object of a tokenizer.json; a missing or unreadable file is a CheckpointError."""
    if not file.is_file():
        raise CheckpointError(f"tokenizer file {file} is missing")
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # the library raises a bare Exception on bad JSON
        raise CheckpointError(f"tokenizer file {file} is corrupt or not a tokenizer.json: {e}") from None


def _clean_up_spaces(text: str) -> str:
    """transformers' ``clean_up_tokenization_spaces``: the space before punctuation and contractions removed."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


@dataclass
class CheckpointRoles:
    """The special tokens of a Hugging Face checkpoint's tokenizer and what each one does."""

    pad: str | None
    bos: str | None
    eos: str | None
    unk: str | None
    eos_ids: tuple[int, ...] = ()        # generation stops at any of them
    pad_id: int | None = None            # the padding id the model's configs state (no pad token)
    clean_up_spaces: bool = False

    @classmethod
    def read(cls, path: Path, backend: tokenizers.Tokenizer) -> "CheckpointRoles":
        def json_of(name: str) -> dict:
            file = path / name
            data = read_json(file, what=name, error=CheckpointError) if file.is_file() else {}
            if not isinstance(data, dict):
                raise CheckpointError(f"{file} must hold a JSON object")
            return data

        settings = {**json_of("tokenizer_config.json"), **json_of("special_tokens_map.json")}
        model, generation = json_of("config.json"), json_of("generation_config.json")

        def token(role: str) -> str | None:
            value = settings.get(f"{role}_token")
            return value.get("content") if isinstance(value, dict) else value

        def ids(key: str) -> tuple[int, ...]:
            value = generation.get(key, model.get(key))
            return tuple(value) if isinstance(value, list) else (() if value is None else (value,))

        roles = cls(pad=token("pad"), bos=token("bos"), eos=token("eos"), unk=token("unk"),
                    eos_ids=ids("eos_token_id"), pad_id=next(iter(ids("pad_token_id")), None),
                    # transformers (5) skips the clean-up for a BPE model, where it would strip real spaces
                    clean_up_spaces=bool(settings.get("clean_up_tokenization_spaces", False))
                    and type(backend.model).__name__ != "BPE")
        return roles.checked(backend, path)

    @classmethod
    def from_file(cls, file: Path, backend: tokenizers.Tokenizer) -> "CheckpointRoles":
        """The roles :meth:`Tokenizer.save` wrote (tokenizer_roles.json)."""
        data = read_json(file, what="tokenizer roles", error=CheckpointError)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not set(data) <= names:
            raise CheckpointError(f"{file} must hold a JSON object with the keys {sorted(names)}")
        roles = cls(**{**data, "eos_ids": tuple(data.get("eos_ids") or ())})
        return roles.checked(backend, file)

    def checked(self, backend: tokenizers.Tokenizer, source: Path) -> "CheckpointRoles":
        """These roles, if every named token is in the vocabulary and every stated id is one of its
        tokens; else a CheckpointError naming ``source`` and the role."""
        for role in ("pad", "bos", "eos", "unk"):
            value = getattr(self, role)
            if value is not None and (not isinstance(value, str) or backend.token_to_id(value) is None):
                raise CheckpointError(f"{source}: the {role} token {value!r} is not in tokenizer.json's vocabulary")
        size = backend.get_vocab_size(with_added_tokens=True)
        for key, values in (("eos_token_id", self.eos_ids), ("pad_token_id", (self.pad_id,))):
            for idx in values:
                if idx is not None and not (isinstance(idx, int) and 0 <= idx < size):
                    raise CheckpointError(f"{source}: {key} {idx!r} is not a token of tokenizer.json (ids 0..{size - 1});"
                                          " the tokenizer and the model's configs disagree")
        return self


def _bert_pipeline(backend: tokenizers.Tokenizer, *, lowercase: bool, strip_accents: bool | None) -> None:
    """BERT's normaliser (clean text, CJK characters spaced, lower case, accents), pre-tokenizer
    (whitespace and punctuation) and WordPiece decoder."""
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _bert_template(backend: tokenizers.Tokenizer) -> None:
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
