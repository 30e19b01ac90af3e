"""The character tokenizer's Python lookup gives the ids the ``tokenizers`` backend gives."""

import tokenizers

from glassformer.tokenizers import Tokenizer

TEXTS = ["First Citizen:\nBefore we proceed", "héllo\n\tworld ☃ <s> </s>", "", "\r\n  ", "😀x\u0301", "zzz ~ Q"]


def test_char_lookup_equals_the_backend():
    tok = Tokenizer.train_char(["First Citizen:\nBefore we proceed any further, hear me speak. ☃"])
    assert tok._char_ids is not None
    for text in TEXTS:
        assert tok.encode(text) == tok.backend.encode(text, add_special_tokens=False).ids, text
    assert tok.encode_batch(TEXTS, bos=True, eos=True) == [
        [tok.bos_id, *tok.backend.encode(t, add_special_tokens=False).ids, tok.eos_id] for t in TEXTS]


def test_char_lookup_survives_a_save_and_is_not_used_for_other_tokenizers(tmp_path):
    tok = Tokenizer.train_char(["abc"])
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again._char_ids == tok._char_ids
    added = tokenizers.Tokenizer.from_str(tok.backend.to_str())
    added.add_special_tokens(["<sep>"])          # an added token matches a whole string: the backend must read
    assert Tokenizer(added)._char_ids is None
    assert Tokenizer(added).encode("a<sep>b") == added.encode("a<sep>b", add_special_tokens=False).ids
    assert Tokenizer.train_bpe(["a b c"] * 5, vocab_size=30)._char_ids is None
