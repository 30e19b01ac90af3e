"""A small training run in its own process, for the tests that kill one (tests/test_resume.py).

    python tests/trainer_child.py lm|translation OUT [--resume] [--kill-at-step N] [--kill-in-save N]
                                  [--sleep S] [--steps N]

--kill-at-step N   SIGKILL this process as step N begins (the work since the last save is lost)
--kill-in-save N   SIGKILL it in the middle of the N-th checkpoint save (training.pt half-written)
--sleep S          sleep S seconds per step (so another process can signal it part-way)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
SHAKESPEARE = "tiny-shakespeare"          # the corpus shipped with glassformer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=["lm", "translation"])
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--kill-in-save", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()

    from glassformer.training import checkpoints, trainer

    original_step = trainer.Trainer.train_step

    def step(self, batches):
        if args.kill_at_step and self.step + 1 == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.sleep:
            time.sleep(args.sleep)
        return original_step(self, batches)

    trainer.Trainer.train_step = step
    if args.kill_in_save:
        saves = {"n": 0}
        original_save = checkpoints.torch.save

        def save(obj, path, *a, **kw):          # write half of training.pt, then die
            saves["n"] += 1
            if saves["n"] == args.kill_in_save:
                with open(path, "wb") as f:
                    f.write(b"PK\x03\x04 half a file")
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original_save(obj, path, *a, **kw)

        checkpoints.torch.save = save

    if args.task == "lm":
        from glassformer.training.lm import LMSettings, train_lm

        settings = LMSettings(preset="gpt-tiny", model={"dropout": 0.1}, block_size=32, batch_size=4,
                              grad_accum=2, steps=args.steps, eval_every=4, eval_batches=2, progress=False,
                              log_every=2)
        run = train_lm(SHAKESPEARE, settings, args.out, resume=args.resume)
    else:
        from glassformer.data.numbers import number_corpus
        from glassformer.training.translation import TranslationSettings, train_translation

        corpus = number_corpus("de", "en", max_number=399, n_valid=20, n_test=20, seed=0)
        settings = TranslationSettings(preset="vaswani-tiny", model={"dropout": 0.1}, vocab_size=200,
                                       max_tokens=300, steps=args.steps, warmup=5, eval_every=4, progress=False,
                                       grad_accum=2, log_every=2)
        run = train_translation(corpus.train, corpus.valid, settings, args.out, resume=args.resume)
    print(f"done {run.result.steps} resumed_from {run.result.resumed_from}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
