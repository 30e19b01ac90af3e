"""The ``probe`` command: nearest words, analogies and a 2-D PCA picture of word vectors.

    glassformer probe MODEL_DIR --analogy king man woman [--top-k 5]
    glassformer probe MODEL_DIR --neighbours dog [--plot words.png --words cat dog car bus]

A GPT / Transformer directory is probed through its token embeddings (each word must be one
token); a sentence encoder (a BERT with no head, e.g. all-MiniLM-L6-v2) through the sentence
embedding of each word over a built-in list of common English words.  Output: ``word<TAB>cosine``
lines, best first.  ``--plot`` writes a PNG atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, InputError
from .common import DEVICE_HELP, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("probe", help="nearest words, analogies (a - b + c) and a PCA plot of word vectors")
    p.add_argument("model_dir")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"),
                      help="words nearest to A - B + C (king man woman -> queen), the three excluded")
    what.add_argument("--neighbours", "--neighbors", metavar="WORD", help="words nearest to WORD")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="how many words to print, best first")
    p.add_argument("--plot", metavar="OUT.png", help="also draw a 2-D PCA scatter of --words (default: the query "
                                                      "and answer words) to this PNG")
    p.add_argument("--words", nargs="+", metavar="WORD", help="the words to plot with --plot")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(func=probe_cmd)


def probe_cmd(args) -> int:
    import torch

    from ..devices import pick_device
    from ..explain.figures import pca_figure, save_figure
    from ..explain.probe import analogy, neighbours, word_vectors
    from ..model_dir import load_model_dir

    if args.words and not args.plot:
        raise InputError("--words names the words to plot; give --plot OUT.png too")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise InputError(f"--plot {args.plot}: the picture is a PNG; name it *.png")
    loaded = load_model_dir(args.model_dir, pick_device(args.device))
    if loaded.tokenizer is None:
        raise CheckpointError(f"{args.model_dir} has no tokenizer; probe needs one to name words")
    query = list(args.analogy) if args.analogy else [args.neighbours]
    table = word_vectors(loaded.model, loaded.tokenizer, query + list(args.words or []))
    if args.analogy:
        results = analogy(table, *args.analogy, k=args.top_k)
    else:
        results = neighbours(table, args.neighbours, k=args.top_k)
    for word, score in results:
        print(f"{word}\t{score:.4f}")
    if args.plot:
        words = list(dict.fromkeys(args.words or query + [w for w, _ in results]))
        if len(words) < 2:
            raise InputError("--plot needs two or more words")
        vectors = torch.stack([table.vector(w) for w in words])
        save_figure(pca_figure(vectors, words), args.plot, dpi=100, tight=True)
    return 0
