"""Commands of sentence embeddings: ``embed`` (texts -> vectors) and ``similar`` (rank a corpus by a query).

Both read a BERT-style encoder directory — ours, or a Hugging Face / sentence-transformers one
such as all-MiniLM-L6-v2 — and call ``glassformer.tasks.embed``.  Every input is checked
before the model runs, and an output file is written atomically: a refused command writes nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import InputError
from ..files import why_unreadable, write_bytes_atomically
from .common import DEVICE_HELP, add_dtype_flag, positive_int, warnings_as_lines

OUTPUT_KINDS = (".npy", ".jsonl")


def register(subparsers) -> None:
    e = subparsers.add_parser("embed", help="sentence embeddings of texts with a BERT-style encoder (e.g. all-MiniLM-L6-v2)")
    e.add_argument("model_dir")
    e.add_argument("text", nargs="*", default=[], help="texts to embed (or --file)")
    e.add_argument("--file", help="a UTF-8 file of texts, one per line (blank lines are refused)")
    e.add_argument("--out", metavar="FILE", help="write FILE.npy (float32, texts × dimensions) or FILE.jsonl "
                                 '({"text": ..., "embedding": [...]} per line) instead of JSON lines on stdout')
    e.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="keep the mean-pooled vectors as they are (default: unit length, for cosine similarity)")
    _add_common(e)
    e.set_defaults(func=embed_cmd)

    s = subparsers.add_parser("similar", help="rank the lines of a file by cosine similarity to a query")
    s.add_argument("model_dir")
    s.add_argument("--query", required=True, help="the text to compare with")
    s.add_argument("--corpus", required=True, help="a UTF-8 file of texts, one per line (blank lines are refused)")
    s.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="how many lines to print, best first")
    _add_common(s)
    s.set_defaults(func=similar_cmd)


def _add_common(p) -> None:
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts encoded together")
    p.add_argument("--max-len", type=positive_int, default=None, metavar="N",
                   help="tokens per text at most, longer texts are cut with a warning (default: the model's "
                        "max_seq_length from sentence_bert_config.json, else its positions)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_dtype_flag(p)


# -- reading ---------------------------------------------------------------------------------------
def read_lines(path: str, what: str = "file") -> list[str]:
    """One text per line of a UTF-8 file; a blank line is refused with its number."""
    if why := why_unreadable(path):
        raise InputError(f"{what} {path} {why}")
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None
    lines = content.split("\n")              # not splitlines(): its extra separators would shift line numbers
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{what} {path} line {number} is blank; give one text per line")
    if not lines:
        raise InputError(f"{what} {path} holds no texts")
    return lines


def _load_encoder(args):
    """The model directory, refused unless it holds a BERT-style encoder, and the tokens per text at most."""
    from ..devices import pick_device, pick_dtype
    from ..model_dir import load_model_dir
    from ..tasks.embed import check_encoder, sentence_max_len

    device = pick_device(args.device)
    loaded = load_model_dir(args.model_dir, device, pick_dtype(args.dtype, device))
    check_encoder(loaded, args.model_dir, args.command)
    return loaded, args.max_len or sentence_max_len(args.model_dir)


# -- writing ---------------------------------------------------------------------------------------
def _json_line(text: str, vector) -> str:
    """One JSON line; each number as the shortest decimal that reads back as the same float32."""
    return f'{{"text": {json.dumps(text, ensure_ascii=False)}, "embedding": [{", ".join(map(str, vector))}]}}'


def embed_cmd(args) -> int:
    import numpy as np

    from ..tasks import embed

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in OUTPUT_KINDS:
        raise InputError(f"--out {out} has an unknown extension; use .npy (float32 array) or .jsonl (JSON lines)")
    if out is not None and out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name ending in .npy or .jsonl")
    texts = list(args.text) + (read_lines(args.file, "--file") if args.file else [])
    if not texts:
        raise InputError("give texts to embed, or --file FILE with one text per line")
    for i, text in enumerate(args.text):
        if not text.strip():
            raise InputError(f"text {i + 1} on the command line is empty")
    loaded, max_len = _load_encoder(args)
    with warnings_as_lines():
        vectors = embed(loaded, texts, batch_size=args.batch_size, normalize=args.normalize, max_len=max_len)
    vectors = vectors.numpy().astype(np.float32)
    if out is None:
        for text, vector in zip(texts, vectors):
            print(_json_line(text, vector))
        return 0
    if out.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        write_bytes_atomically(out, buffer.getvalue())
    else:
        lines = "".join(_json_line(t, v) + "\n" for t, v in zip(texts, vectors))
        write_bytes_atomically(out, lines.encode("utf-8"))
    print(f"{len(texts)} embeddings of {vectors.shape[1]} dimensions written to {out}")
    return 0


def similar_cmd(args) -> int:
    from ..tasks import most_similar

    if not args.query.strip():
        raise InputError("--query is empty; give the text to compare with")
    corpus = read_lines(args.corpus, "--corpus")
    loaded, max_len = _load_encoder(args)
    with warnings_as_lines():
        ranked = most_similar(loaded, args.query, corpus, args.top_k, batch_size=args.batch_size, max_len=max_len)
    for index, score in ranked:
        print(f"{score:.4f}\t{corpus[index]}")
    return 0


__all__ = ["register", "read_lines", "embed_cmd", "similar_cmd", "OUTPUT_KINDS"]
