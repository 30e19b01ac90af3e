"""Parameter counts: Table 3 of the paper, an independent formula, the table and the CLI command."""

from __future__ import annotations

import json
import re

import pytest
from torch import nn

from glassformer.cli.main import main
from glassformer.explain import (
    format_param_table,
    human_count,
    param_table,
    parameter_kind,
)
from glassformer.models import Transformer, num_parameters, preset
from glassformer.nn import TransformerLayer


def formula_count(d: int, d_ff: int, n_enc: int, n_dec: int, vocab: int) -> int:
    """Unique parameters of the paper's model with one shared (three-way tied) vocabulary, by hand."""
    attention = 4 * d * d + 4 * d                      # W^Q, W^K, W^V, W^O and their biases
    ffn = 2 * d * d_ff + d_ff + d                      # W1, b1, W2, b2
    norm = 2 * d                                       # gain and bias
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    return vocab * d + n_enc * encoder_layer + n_dec * decoder_layer


# --- Table 3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,paper_millions", [("vaswani-base", 65), ("vaswani-big", 213)])
def test_presets_match_table_3(name, paper_millions):
    config = preset(name, src_vocab_size=37000, tgt_vocab_size=37000)
    total = param_table(config).total                  # built on the meta device: no memory, no init
    assert abs(total - paper_millions * 1e6) / (paper_millions * 1e6) < 0.04, total
    c = config
    assert total == formula_count(c.d_model, c.d_ff, c.encoder_layers, c.decoder_layers, 37000)


def test_table_of_a_real_model_agrees_with_num_parameters():
    model = Transformer(preset("vaswani-tiny", tie_embeddings="none"))
    table = param_table(model)
    assert table.total == num_parameters(model) == sum(p.numel() for p in model.parameters())
    assert sum(table.by_kind.values()) == table.total
    assert sum(row.count for row in table.rows if row.depth == 0) == table.total
    assert table.by_kind["output projection"] == 50 * 32 and table.tied == {}


def test_rows_per_component_and_layer():
    table = param_table(preset("vaswani-base"))
    rows = {(row.depth, row.label): row for row in table.rows}
    d, ff = 512, 2048
    enc = rows[(1, "encoder.layers (× 6, each)")]
    assert enc.count == (4 * d * d + 4 * d) + (2 * d * ff + ff + d) + 4 * d
    assert rows[(0, "encoder")].count == 6 * enc.count
    assert rows[(0, "decoder")].count == 6 * rows[(1, "decoder.layers (× 6, each)")].count
    assert rows[(0, "src_embed")].count == 37000 * d
    # Tied matrices are counted once and the other names say so.
    assert rows[(0, "tgt_embed")].count == 0 and "tied to src_embed.token.weight" in rows[(0, "tgt_embed")].note
    assert rows[(0, "generator")].count == 0 and "output projection" in rows[(0, "generator")].note
    assert table.tied == {"tgt_embed.token.weight": "src_embed.token.weight",
                          "generator.proj.weight": "src_embed.token.weight"}
    assert table.by_kind == {"embeddings": 37000 * d, "attention": 6 * 3 * (4 * d * d + 4 * d),
                             "feed-forward": 12 * (2 * d * ff + ff + d), "norms": (6 * 2 + 6 * 3) * 2 * d}


def test_parameter_kinds_by_name():
    assert parameter_kind("encoder.layers.0.self_attention.qkv_proj.weight") == "attention"
    assert parameter_kind("encoder.layers.0.self_attention_norm.weight") == "norms"
    assert parameter_kind("decoder.layers.1.cross_attention.kv_proj.bias") == "attention"
    assert parameter_kind("blocks.3.feed_forward.linear1.weight") == "feed-forward"
    assert parameter_kind("final_norm.bias") == "norms"
    assert parameter_kind("token_embedding.weight") == "embeddings"
    assert parameter_kind("lm_head.weight") == "output projection"
    assert parameter_kind("classifier.weight") == "other"


class TinyDecoderOnly(nn.Module):
    """A GPT-shaped module built from glassformer.nn parts, with its own attribute names."""

    def __init__(self, vocab=20, d=8, n_layers=3):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(16, d)
        self.blocks = nn.ModuleList(TransformerLayer(d, 2, 16, norm_first=True) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.token_embedding.weight


def test_grouping_is_generic_over_module_names():
    model = TinyDecoderOnly()
    table = param_table(model)
    rows = {row.label: row for row in table.rows}
    layer = 4 * 8 * 8 + 4 * 8 + 2 * 8 * 16 + 16 + 8 + 2 * 2 * 8
    assert rows["blocks"].count == 3 * layer and rows["blocks (× 3, each)"].count == layer
    assert rows["token_embedding"].count == 20 * 8 and rows["position_embedding"].count == 16 * 8
    assert rows["lm_head"].count == 0 and "tied to token_embedding.weight" in rows["lm_head"].note
    assert table.by_kind["embeddings"] == 36 * 8 and table.by_kind["norms"] == 3 * 4 * 8 + 2 * 8
    assert table.total == num_parameters(model)


def test_layers_that_differ_are_listed_one_by_one():
    model = TinyDecoderOnly(n_layers=2)
    model.blocks[1] = TransformerLayer(8, 2, 32, norm_first=True)             # a wider feed-forward
    labels = [row.label for row in param_table(model).rows]
    assert "blocks.0" in labels and "blocks.1" in labels and not any("×" in label for label in labels)


def test_human_counts():
    assert human_count(18_944_000) == "18.94M"
    assert human_count(2048) == "2.05K"
    assert human_count(512) == "512"
    assert human_count(0) == "0"
    assert human_count(1_750_000_000) == "1.75B"


def test_formatted_table_is_aligned():
    text = format_param_table(param_table(preset("vaswani-tiny", norm_first=True)))
    lines = text.splitlines()
    assert lines[0].split() == ["component", "params", "share"]
    # Every count and every share ends in the same column, whatever the indentation of its label.
    cells = [re.search(r"(\d[\d.]*[KMB]?)  +(\d+\.\d%)", line) for line in lines[2:]]
    cells = [m for m in cells if m]
    assert len(cells) > 15
    assert len({m.end(1) for m in cells}) == 1 and len({m.end(2) for m in cells}) == 1
    assert lines[-1].startswith("total") and "100.0%" in lines[-1]


# --- the CLI command -----------------------------------------------------------------------


def total_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("total"))


def test_cli_vaswani_base(capsys):
    assert main(["params", "vaswani-base", "--vocab", "37000"]) == 0
    out = capsys.readouterr().out
    line = total_line(out)
    assert "63.08M" in line and "63,082,496" in line
    assert "encoder.layers (× 6, each)" in out and "tied to src_embed.token.weight" in out


def test_cli_vocab_options_change_the_count(capsys):
    assert main(["params", "vaswani-tiny", "--vocab", "1000"]) == 0
    assert f"{formula_count(32, 64, 2, 2, 1000):,}" in total_line(capsys.readouterr().out)
    # Separate vocabularies: the source embedding is its own matrix; target and output stay tied.
    assert main(["params", "vaswani-tiny", "--src-vocab", "100", "--tgt-vocab", "70"]) == 0
    expected = formula_count(32, 64, 2, 2, 70) + 100 * 32
    assert f"{expected:,}" in total_line(capsys.readouterr().out)


def test_cli_model_dir(tmp_path, capsys):
    config = preset("vaswani-tiny", src_vocab_size=90, tgt_vocab_size=90, norm_first=True)
    (tmp_path / "config.json").write_text(config.to_json())
    assert main(["params", str(tmp_path)]) == 0
    expected = formula_count(32, 64, 2, 2, 90) + 2 * 2 * 32          # + the two final norms of pre-norm
    assert f"{expected:,}" in total_line(capsys.readouterr().out)
    json.loads((tmp_path / "config.json").read_text())                # untouched


@pytest.mark.parametrize("argv,message", [
    (["params", "vaswani-huge"], "unknown preset 'vaswani-huge'"),
    (["params", "./no/such/model"], "does not exist"),
    (["params", "vaswani-tiny", "--vocab", "0"], "src_vocab_size=0"),
])
def test_cli_errors_are_one_line_with_exit_2(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err
