"""Explaining figures: plot-positions and the attention grid."""

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from helpers import one_line_error, run_cli  # noqa: E402

from glassformer.errors import InputError  # noqa: E402
from glassformer.explain.figures import (  # noqa: E402
    attention_grid_figure,
    block_average,
    positional_encoding_figure,
    save_figure,
)


def test_plot_positions_writes_a_png_of_figsize_times_dpi(tmp_path, capsys):
    out = tmp_path / "pics" / "positions.png"
    code, stdout, err = run_cli(capsys, "plot-positions", "--d-model", 64, "--length", 50, "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out)
    image = mpimg.imread(out)
    fig = positional_encoding_figure(64, 50)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(height), round(width))
    assert [p.name for p in out.parent.iterdir()] == ["positions.png"]      # no temporary left behind


@pytest.mark.parametrize("args", [["--d-model", "0"], ["--d-model", "7"], ["--d-model", "-4"], ["--length", "0"]])
def test_bad_sizes_are_one_line_and_write_nothing(tmp_path, capsys, args):
    out = tmp_path / "positions.png"
    code, _, err = run_cli(capsys, "plot-positions", *args, "--out", out)
    one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_positional_figure_has_heatmap_and_curves():
    fig = positional_encoding_figure(16, 30)
    heat, curves = fig.axes[0], fig.axes[1]
    assert heat.images[0].get_array().shape == (16, 30)
    labels = [line.get_label() for line in curves.get_lines()]
    assert labels[:4] == ["dim 0 (sin)", "dim 1 (cos)", "dim 4 (sin)", "dim 5 (cos)"]
    assert "dim 8 (sin)" in labels


def test_short_input_keeps_tokens_as_tick_labels():
    w = torch.softmax(torch.randn(2, 5, 6), -1)
    fig = attention_grid_figure(w, list("abcde"), list("uvwxyz"), "t")
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (5, 6)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("uvwxyz")
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abcde")
    assert len([a for a in fig.axes if a.images]) == 2


def test_long_input_is_drawn_as_at_most_64_by_64_block_means(tmp_path):
    torch.manual_seed(0)
    n = 200
    w = torch.softmax(torch.randn(3, n, n), -1)
    tokens = [f"t{i}" for i in range(n)]
    fig = attention_grid_figure(w, tokens, tokens, "200 tokens")
    for ax in [a for a in fig.axes if a.images][:3]:
        rows, cols = ax.images[0].get_array().shape
        assert rows <= 64 and cols <= 64
    blocks, row_ranges, _ = block_average(w)
    assert blocks.shape == (3, 50, 50) and row_ranges[0] == (0, 4) and row_ranges[-1] == (196, 200)
    torch.testing.assert_close(blocks[1, 0, 0], w[1, :4, :4].mean())
    assert fig.axes[0].get_xticklabels()[0].get_text() == "0–3"
    path = save_figure(fig, tmp_path / "grid.png")
    assert mpimg.imread(path).shape[2] == 4


def test_uneven_blocks_average_only_real_positions():
    w = torch.arange(70.0)[None, None, :].expand(1, 1, 70)
    blocks, _, cols = block_average(w)
    assert cols[-1] == (68, 70) and blocks[0, 0, -1] == 68.5


def test_bad_attention_input_is_refused():
    with pytest.raises(InputError):
        attention_grid_figure(torch.rand(2, 3, 4), list("ab"), None, "")
    with pytest.raises(InputError):
        attention_grid_figure(torch.rand(4), None, None, "")
