"""Model configs: JSON-serialisable dataclasses, validated when built, with named presets."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..errors import ConfigError
from ..files import read_json


@dataclasses.dataclass
class ModelConfig:
    """Base of every family's config.  Subclasses set ``family`` and add fields."""

    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if getattr(self, "d_ff", 0) is None:            # a family's default feed-forward width
            self.d_ff = 4 * self.d_model
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field, the value and what is valid."""

    # -- helpers for validate() ------------------------------------------------
    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid; it must be a positive integer")

    def _probability(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value!r} is invalid; it must be in [0, 1)")

    def _choice(self, name: str, choices) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is invalid; choose one of {sorted(choices)}")

    def _kv_heads_divide(self) -> None:
        kv, h = getattr(self, "n_kv_heads"), self.n_heads
        if kv is not None and (not isinstance(kv, int) or isinstance(kv, bool) or kv < 1 or h % kv != 0):
            raise ConfigError(f"n_kv_heads={kv!r} is invalid with n_heads={h}; it must be a positive integer that "
                              "divides n_heads (each key/value head serves n_heads/n_kv_heads query heads)")

    def _heads_divide(self, d_model: str = "d_model", n_heads: str = "n_heads") -> None:
        d, h = getattr(self, d_model), getattr(self, n_heads)
        if d % h != 0:
            raise ConfigError(f"{d_model}={d} is not divisible by {n_heads}={h}; each head needs d_model/n_heads dimensions")

    # -- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return dataclass_from_dict(cls, {k: v for k, v in data.items() if k != "family"}, f"{cls.family} config field")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclasses.dataclass
class EncoderDecoderConfig(ModelConfig):
    """What every encoder–decoder family's config shares (the Transformer's, the recurrent one's): the
    special tokens' ids, as the tokenizers number them, and what the decoder starts from."""

    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    decoder_start_id: int | None = None  # first decoder input; None = bos_id

    @property
    def start_id(self) -> int:
        return self.bos_id if self.decoder_start_id is None else self.decoder_start_id

    def _one_vocabulary_if_tied(self, *sharing: str) -> None:
        """A ``tie_embeddings`` in ``sharing`` (the source embedding among the tied ones) needs one vocabulary."""
        if self.tie_embeddings in sharing and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                f"tie_embeddings='all' needs one shared vocabulary, but src_vocab_size={self.src_vocab_size} "
                f"and tgt_vocab_size={self.tgt_vocab_size}; use tie_embeddings='decoder' or a shared vocabulary")


def dataclass_from_dict(cls, data: dict[str, Any], what: str = "setting"):
    """``cls(**data)``, but an unknown key is a :class:`ConfigError` listing the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; valid ones are {sorted(known)}")
    return cls(**data)


# preset name -> function returning its config
PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_preset(name: str, config_cls: type[ModelConfig], **fields: Any) -> None:
    """Name the config ``config_cls(**fields)`` (built afresh each time it is asked for)."""
    PRESETS[name] = functools.partial(config_cls, **fields)


def _families(family: str | tuple[str, ...] | None) -> tuple[str, ...] | None:
    return (family,) if isinstance(family, str) else family


def preset_names(family: str | tuple[str, ...] | None = None) -> list[str]:
    """The names of the presets (of one ``family``, e.g. ``"gpt"``, or of several, if given), sorted."""
    families = _families(family)
    return sorted(n for n, make in PRESETS.items() if families is None or make().family in families)


def preset(name: str, *, family: str | tuple[str, ...] | None = None, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with fields overridden (e.g. vocabulary sizes).

    ``family`` (``"transformer"``, ``"gpt"``, or several: ``("transformer", "recurrent")``) refuses a
    preset of another family, and an unknown name is answered with the presets of those families only."""
    families = _families(family)
    if name not in PRESETS:
        kind = f"{' or '.join(families)} " if families else ""
        raise ConfigError(f"unknown preset {name!r}; available {kind}presets: {', '.join(preset_names(family))}")
    config = PRESETS[name]()
    if families is not None and config.family not in families:
        raise ConfigError(f"preset {name!r} is a {config.family!r} model; a {' or '.join(map(repr, families))} "
                          f"preset is needed: {', '.join(preset_names(family))}")
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model field(s) {unknown} for preset {name!r} ({config.family}){_elsewhere(unknown, config.family)}; "
                          f"valid ones are {sorted(known)}")
    return config.replace(**overrides) if overrides else config


FAMILIES: dict[str, type[ModelConfig]] = {}


def _elsewhere(names: list[str], family: str) -> str:
    """": n_heads is an option of transformer, gpt models, not of recurrent ones": which families have
    the fields ``names`` that ``family``'s config lacks (a Transformer option given to an LSTM preset)."""
    owners = {n: [f for f, cls in FAMILIES.items() if n in {x.name for x in dataclasses.fields(cls)}] for n in names}
    said = [f"{n} is an option of {', '.join(fams)} models" for n, fams in owners.items() if fams]
    return f": {'; '.join(said)}, not of {family} ones" if said else ""


def register_family(config_cls: type[ModelConfig]) -> type[ModelConfig]:
    FAMILIES[config_cls.family] = config_cls
    return config_cls


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    family = data.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"config family {family!r} is unknown; expected one of {sorted(FAMILIES)}")
    return FAMILIES[family].from_dict(data)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON file of config overrides (or a full config)."""
    return read_json(path, what="config file", error=ConfigError)
