"""A source (or a decoding) longer than the translator's position table is refused in one line naming
the length and max_len — not an IndexError (on a GPU, a device-side assert); relative positions (T5)
have no table and take any length, as transformers does."""

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_translator

from glassformer.data.numbers import number_corpus
from glassformer.errors import ConfigError, InputError
from glassformer.generation.translation import translate
from glassformer.model_dir import load_model_dir
from glassformer.models import build_model, preset

MAX_LEN = 16


def _translator(positional: str):
    torch.manual_seed(0)
    config = preset("vaswani-tiny", src_vocab_size=50, tgt_vocab_size=50, max_len=MAX_LEN, positional=positional)
    return build_model(config).eval()


@pytest.mark.parametrize("positional", ["sinusoidal", "sinusoidal-split", "learned", "rotary"])
def test_too_long_source_target_or_decoding_is_refused(positional):
    model = _translator(positional)
    fits, too_long = torch.full((2, MAX_LEN), 5), torch.full((2, MAX_LEN + 1), 5)
    with torch.no_grad():
        assert model(fits, fits).shape == (2, MAX_LEN, 50)          # the whole table is usable
        for src, tgt, what in [(too_long, fits, "source"), (fits, too_long, "target")]:
            with pytest.raises(InputError, match=rf"the {what} has {MAX_LEN + 1} tokens .*max_len={MAX_LEN}"):
                model(src, tgt)
        with pytest.raises(InputError, match=rf"{MAX_LEN + 1} tokens .*max_len={MAX_LEN}; shorten"):
            model.start_decoding(too_long, 4)
        model.start_decoding(fits, MAX_LEN)                          # the last new token is never fed back
        with pytest.raises(ConfigError, match=rf"max_new_tokens={MAX_LEN + 1} .*max_len={MAX_LEN}, so at most"):
            model.start_decoding(fits, MAX_LEN + 1)


def test_relative_positions_take_sources_longer_than_max_len(tmp_path):
    """T5's relative buckets have no table: a source longer than max_len (n_positions) is computed, and
    computed as transformers computes it."""
    from test_hf_t5 import hf_t5

    hf, ours = hf_t5(tmp_path, "relu", True)
    n = ours.config.max_len + 40
    src = torch.randint(3, 60, (1, n), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(3, 60, (1, 6), generator=torch.Generator().manual_seed(2))
    tgt[:, 0] = 0
    with torch.no_grad():
        theirs = hf(input_ids=src, decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt), theirs, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    corpus = number_corpus("de", "en", max_number=999, n_train=300, n_valid=10, n_test=10, seed=5)
    return untrained_translator(tmp_path_factory.mktemp("m") / "model", corpus, 120, max_len=MAX_LEN)


def test_translate_and_cli_refuse_a_long_text(capsys, model_dir):
    long_text = " ".join(["neunhundertneunundneunzig"] * 30)
    loaded = load_model_dir(model_dir)
    with pytest.raises(InputError, match=rf"at most {MAX_LEN} \(max_len\)"):
        translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, [long_text])
    code, _, err = run_cli(capsys, "translate", model_dir, long_text)
    one_line_error(code, err, "input line 1", f"at most {MAX_LEN} (max_len)", "shorten")
