"""``glassformer quickstart post-training``: the quickstart's post-training variant (base → SFT → DPO → RL).

    glassformer quickstart post-training [--out runs/quickstart-post-training] [--base-steps N] [--sft-steps N]
        [--dpo-steps N] [--rl-steps N] [--time-budget SECONDS] [--test-questions N] [--config FILE.json]
        [--seed N] [--device D]

The ``quickstart`` command (cli/translation.py) reads an optional variant, ``translation`` (the default)
or ``post-training``; this module adds the variant and its flags to that command and runs the chain
(:mod:`glassformer.training.posttrain_quickstart`).  A flag of one variant given to the other is refused
in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import fresh_output_dir, positive_float, positive_int

VARIANTS = ("translation", "post-training")
POST_TRAINING = "post-training"
STAGES = ("base", "sft", "dpo", "rl")
# The chain settings the flags set (ChainSettings fields), and the flags both variants read.
SETTING_FLAGS = tuple(f"{stage}_steps" for stage in STAGES) + ("time_budget", "test_questions")
SHARED = {"help", "variant", "out", "seed", "device", "debug"}


def add_post_training_flags(parser: argparse.ArgumentParser) -> None:
    """Add the variant and the post-training flags to the ``quickstart`` parser, after its own flags
    (which are the translation variant's)."""
    from ..training.posttrain_quickstart import DEFAULT_OUT, STAGE_STEPS, STAGE_TIME_LIMITS, TEST_QUESTIONS, TIME_BUDGET

    translation = {a.dest: (a.option_strings[0], a.default) for a in parser._actions
                   if a.option_strings and a.dest not in SHARED}
    parser.add_argument("variant", nargs="?", choices=VARIANTS, default="translation",
                        help="translation: the number translator (default); post-training: a small GPT pretrained, "
                             "then SFT, DPO and RL on the built-in numbers-instruct task, with the held-out exact "
                             f"match after each stage (models in OUT/<stage>/best; OUT default: {DEFAULT_OUT})")
    g = parser.add_argument_group("post-training (glassformer quickstart post-training)")
    for stage in STAGES:
        g.add_argument(f"--{stage}-steps", type=positive_int, metavar="N",
                       help=f"{'pretraining' if stage == 'base' else stage.upper()} steps "
                            f"(default: {STAGE_STEPS[stage]})")
    shares = ":".join(f"{STAGE_TIME_LIMITS[s]:g}" for s in STAGES)
    g.add_argument("--time-budget", type=positive_float, metavar="SECONDS",
                   help=f"seconds of training over the four stages at most, shared as {shares} (base:SFT:DPO:RL) "
                        f"(default: {TIME_BUDGET:g})")
    g.add_argument("--test-questions", type=positive_int, metavar="N",
                   help=f"held-out questions each stage's model answers (default: {TEST_QUESTIONS})")
    g.add_argument("--config", metavar="FILE.json",
                   help="a JSON object of chain settings (glassformer.training.posttrain_quickstart.ChainSettings: "
                        "the base model, each stage's own settings ...); the flags win over it")
    parser.set_defaults(translation_flags=translation)


def refuse_post_training_flags(args) -> None:
    """The translation variant: a post-training flag is refused in one line."""
    for dest in (*SETTING_FLAGS, "config"):
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"--{dest.replace('_', '-')} is a flag of `glassformer quickstart post-training`; "
                              "the translation quickstart does not read it")


def chain_settings(args):
    """The chain's settings: ``--config``'s, then the flags given (``--seed``/``--device`` when given,
    or when the file does not set them)."""
    from ..models.config import load_config_file
    from ..training.posttrain_quickstart import ChainSettings

    for dest, (flag, default) in getattr(args, "translation_flags", {}).items():
        if getattr(args, dest, default) != default:
            raise ConfigError(f"{flag} is a flag of the translation quickstart; `glassformer quickstart "
                              "post-training` reads --base-steps, --sft-steps, --dpo-steps, --rl-steps, "
                              "--time-budget, --test-questions, --config, --seed, --device and --out")
    settings = load_config_file(args.config) if args.config else {}
    if not isinstance(settings, dict):
        raise ConfigError(f"--config {args.config} must hold a JSON object of chain settings")
    settings.update({dest: getattr(args, dest) for dest in SETTING_FLAGS if getattr(args, dest) is not None})
    for dest, default in (("seed", 0), ("device", "auto")):
        if dest not in settings or getattr(args, dest) != default:
            settings[dest] = getattr(args, dest)
    return ChainSettings.from_dict(settings)


def quickstart_post_training(args) -> int:
    """Run the chain; bad flags, settings or output directory are refused before anything is written."""
    from ..devices import pick_device
    from ..training.posttrain_quickstart import DEFAULT_OUT, previous_chain, run_posttrain_quickstart

    settings = chain_settings(args)
    pick_device(settings.device)
    out = Path(args.out or DEFAULT_OUT)
    previous_chain(out)                          # another run or other files there: refused now
    with fresh_output_dir(out):
        run_posttrain_quickstart(out, settings)
    return 0


__all__ = ["add_post_training_flags", "refuse_post_training_flags", "chain_settings", "quickstart_post_training",
           "VARIANTS", "POST_TRAINING"]
