"""A tokenizer trained for a distributed run is trained once, on the main process, and sent to the
others: Hugging Face's WordPiece trainer breaks ties between equally frequent pairs in a random
(hash-map) order, so processes that each trained their own would number the vocabulary differently
and learn from different token ids (silently, or crash on a vocabulary of another size)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glassformer.tokenizers import Tokenizer
from glassformer.training.distributed import World
from glassformer.training.recipe import Run, trained_once


def _worker(rank: int, store_file: str, out: str) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store_file, 2), rank=rank, world_size=2)
    try:
        run = Run(out_dir=None, world=World("ddp", rank, 2), device=torch.device("cpu"), precision="fp32", resume=False)
        # Each process would train on its own text: a different vocabulary on each, as happens by chance.
        tok = trained_once(run, lambda: Tokenizer.train_char([f"text of process {rank}: " + "xyz"[rank:]]))
        torch.save({"vocab": tok.backend.get_vocab(), "ids": tok.encode("process 1: z")}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_process_gets_the_main_process_tokenizer(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "tok")), nprocs=2)
    main, other = (torch.load(tmp_path / f"tok.{r}") for r in (0, 1))
    assert main == other
    assert main["vocab"] == Tokenizer.train_char(["text of process 0: xyz"]).backend.get_vocab()


def test_one_process_trains_it_itself():
    run = Run(out_dir=None, world=World(), device=torch.device("cpu"), precision="fp32", resume=False)
    tok = Tokenizer.train_char(["abc"])
    assert trained_once(run, lambda: tok) is tok

