"""Model families: each a config dataclass and a thin composition of ``glassformer.nn``."""

from .bert import Bert, BertConfig
from .caption import CaptionConfig, CaptionModel
from .config import FAMILIES, PRESETS, ModelConfig, config_from_dict, preset
from .gpt import GPT, GPTConfig
from .recurrent import RecurrentConfig, RecurrentEncoderDecoder
from .transformer import Transformer, TransformerConfig, num_parameters
from .vit import ViT, ViTConfig

MODEL_CLASSES = {"transformer": Transformer, "gpt": GPT, "bert": Bert, "vit": ViT, "caption": CaptionModel,
                 "recurrent": RecurrentEncoderDecoder}

TRANSLATORS = ("transformer", "recurrent")
"""The families that translate (token ids in, token ids out): ``train translation`` trains them and
``translate`` / ``evaluate`` decode them."""


def build_model(config: ModelConfig):
    """The model of a config's family, freshly initialised."""
    return MODEL_CLASSES[config.family](config)


__all__ = ["FAMILIES", "PRESETS", "TRANSLATORS", "ModelConfig", "config_from_dict", "preset", "build_model",
           "Transformer", "TransformerConfig", "GPT", "GPTConfig", "Bert", "BertConfig", "ViT", "ViTConfig", "CaptionModel", "CaptionConfig",
           "RecurrentConfig", "RecurrentEncoderDecoder", "num_parameters"]
