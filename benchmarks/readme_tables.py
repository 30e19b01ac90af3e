"""The README's results, rendered from ``benchmarks/results/*.json``: no figure is typed by hand.

Every table or sentence with a measured figure in the README's "Results" section
sits between a pair of marker comments, one pair per block::

    <!-- results:gpt -->
    ...rendered from the results files, never edited by hand...
    <!-- /results:gpt -->

    python benchmarks/readme_tables.py            # print every block as rendered now
    python benchmarks/readme_tables.py --write    # rewrite the README's blocks
    python benchmarks/readme_tables.py --check    # exit 1, listing differences, if the README is stale

The check also fails when a figure appears in the Results section outside the
blocks (``figures_outside_blocks``).  ``tests/test_readme_figures.py`` runs the check.

A block whose results file is missing, or in a format this script does not read,
says so in the README instead of showing figures.  Nothing here needs torch.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
RESULTS = HERE / "results"
SECTION_START, SECTION_END = "## Results", "## Command line"
BEGIN = "<!-- results:{name} -->"
END = "<!-- /results:{name} -->"
_BLOCK = re.compile(r"<!-- results:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)


class NotMeasured(Exception):
    """A block cannot be rendered: its results file is missing or incomplete."""


# ---------------------------------------------------------------------------------------------
# reading results


def load(results: Path, name: str) -> dict[str, Any]:
    path = results / f"{name}.json"
    if not path.is_file():
        raise NotMeasured(f"`benchmarks/results/{name}.json` is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def lookup(data: dict[str, Any], *paths: str) -> Any:
    """The value at the first dotted path present in ``data`` (``"test.bleu"``), else None."""
    for path in paths:
        node: Any = data
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return node
    return None


# ---------------------------------------------------------------------------------------------
# formatting


def num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def measured_on(machine: dict[str, Any], extra: str = "") -> str:
    """'measured 2026-11-23 on AMD EPYC (2 cores), 2 threads, torch 2.13.0+cpu, transformers 5.23.0'."""
    where = machine.get("gpu") or machine.get("cpu") or "an unrecorded machine"
    if not machine.get("gpu") and machine.get("cpu_count"):
        where += f" ({machine['cpu_count']} cores)"
    parts = [f"measured {machine.get('date') or '(date not recorded)'} on {where}"]
    if machine.get("threads"):
        parts.append(f"{machine['threads']} thread{'s' if machine['threads'] != 1 else ''}")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    if machine.get("transformers"):
        parts.append(f"transformers {machine['transformers']}")
    return ", ".join(parts) + (f"; {extra}" if extra else "")


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def timing(protocol: dict[str, Any]) -> str:
    """How a comparison was timed, from the protocol stored with it."""
    text = (f"{protocol['schedule']} order, {protocol['warmup']} warm-up and {protocol['rounds']} timed "
            f"round{'s' if protocol['rounds'] != 1 else ''} of {protocol['calls_per_round']} "
            f"call{'s' if protocol['calls_per_round'] != 1 else ''} each")
    if protocol.get("inference_mode"):
        text += ", every call under `torch.inference_mode()`"
    if protocol.get("grad_mode"):
        text += f", {protocol['grad_mode']}"
    if protocol.get("bf16"):
        text += ", bf16 autocast"
    return text + f"; headline: {protocol['headline']}"


def quick_warning(*results: dict[str, Any]) -> str:
    return ("**Smoke-run figures (`--quick`), not a measurement.** " if any(r.get("quick") for r in results) else "")


# ---------------------------------------------------------------------------------------------
# the blocks

# The demo (benchmarks/bench_quickstart.py -> results/quickstart.json: the quickstart's own results.json under
# "quickstart", the wall time of the whole command beside it).  Each field lists the dotted paths it accepts,
# first match wins, so a renamed key needs one edit here.
DEMO_FIELDS = {
    "test_sentences": ("quickstart.sentences", "test_sentences"),
    "exact_match": ("quickstart.exact_match", "exact_match"),
    "bleu": ("quickstart.bleu", "bleu"),
    "chrf": ("quickstart.chrf", "chrf"),
    "by_range": ("quickstart.by_range", "by_range"),
    "spoken_forms": ("quickstart.spoken_forms", "spoken_forms"),
    "train_steps": ("quickstart.train_steps", "train_steps"),
    "max_steps": ("quickstart.max_steps", "max_steps"),
    "time_limited": ("quickstart.time_limited", "time_limited"),
    "train_s": ("quickstart.train_seconds", "train_seconds"),
    "threads": ("quickstart.threads", "machine.threads"),
    "params": ("quickstart.params", "quickstart.parameters", "params"),
    "demo_wall_s": ("wall_seconds", "wall_s"),
    "fresh_clone": ("fresh_clone",),
}
# The goals the demo is held to (specification, not measurement).
DEMO_TARGETS = {"exact_match": 98.0, "wall_minutes": 15}
MISSING = "— *(not in quickstart.json yet)*"


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _range_cell(value: Any) -> str:
    """One range's exact match: {"seen": {"exact_match", "n"}, "held_out": {...}}; a part with
    no numbers (or none recorded) is shown as such."""
    if _is_num(value):
        return f"{value:.1f}%"
    if not isinstance(value, dict):
        return MISSING
    pieces = []
    for key, label in (("seen", "seen in training"), ("held_out", "held out")):
        part = value.get(key)
        if isinstance(part, dict) and _is_num(part.get("exact_match")):
            count = f" of {part['n']:,}" if _is_num(part.get("n")) else ""
            pieces.append(f"{label} {part['exact_match']:.1f}%{count}")
        elif _is_num(part):
            pieces.append(f"{label} {part:.1f}%")
        elif isinstance(part, dict) and part.get("n") == 0:
            pieces.append(f"{label}: none")
    return " · ".join(pieces) or MISSING


def render_demo(results: Path) -> str:
    r = load(results, "quickstart")
    f = {key: lookup(r, *paths) for key, paths in DEMO_FIELDS.items()}
    n = f["test_sentences"]
    em = MISSING
    if _is_num(f["exact_match"]):
        em = f"**{f['exact_match']:.2f}%** (target ≥ {DEMO_TARGETS['exact_match']:g}%)"
    rows = [(f"exact match on {num(n)} held-out test numbers" if _is_num(n) else "exact match on the held-out test numbers",
             em)]
    rows.append(("sacreBLEU / chrF", f"{f['bleu']:.2f} / {f['chrf']:.2f}"
                 if _is_num(f["bleu"]) and _is_num(f["chrf"]) else MISSING))
    if isinstance(f["by_range"], dict) and f["by_range"]:
        rows += [(f"exact match on {name}", _range_cell(value)) for name, value in f["by_range"].items()]
    else:
        rows.append(("exact match per range of numbers (seen in training / held out)", MISSING))
    rows.append(('exact match on spoken forms ("hundert" for "einhundert", all ranges)',
                 _range_cell(f["spoken_forms"])))
    training = []
    if _is_num(f["train_steps"]):
        training.append(f"{num(f['train_steps'])}" + (f" of {num(f['max_steps'])}" if _is_num(f["max_steps"]) else "")
                        + " steps" + (" (cut by the time limit)" if f["time_limited"] else ""))
    if _is_num(f["train_s"]):
        training.append(f"{num(f['train_s'])} s" + (f" on {f['threads']} threads" if _is_num(f["threads"]) else ""))
    if _is_num(f["params"]):
        training.append(f"{f['params'] / 1e6:.2f}M parameters")
    rows.append(("training", ", ".join(training) or MISSING))
    wall = MISSING
    if _is_num(f["demo_wall_s"]):
        wall = (f"**{num(f['demo_wall_s'])} s** (target ≤ {DEMO_TARGETS['wall_minutes']} min)")
    what = ("whole `make demo` wall time, installation included" if f["fresh_clone"] is not False
            else "`glassformer quickstart` wall time (in a checkout, no installation)")
    rows.append((what, wall))
    machine = r.get("machine") if isinstance(r.get("machine"), dict) else {}
    lines = [f"{quick_warning(r)}*{sentence(measured_on(machine))}; [results](benchmarks/results/quickstart.md).*",
             "", "| | measured |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def decoding_model(r: dict[str, Any], results: Path) -> str:
    """Which model the decoding block measured: the demo block's own (the same weights) or another."""
    digest = r.get("model_sha256")
    try:
        demo = load(results, "quickstart")
    except NotMeasured:
        demo = {}
    if digest and digest == demo.get("model_sha256"):
        commit = (demo.get("machine") or {}).get("git_commit")
        return f"the demo's model (trained by the run above{f' at commit {commit}' if commit else ''})"
    return (f"a quickstart model other than the demo's above (weights sha256 {digest})" if digest
            else "a quickstart model (which one was not recorded)")


def render_decoding(results: Path) -> str:
    r = load(results, "numbers_decoding")
    rows = r["results"]
    lines = [f"{quick_warning(r)}*{r['test_sentences']:,} held-out test numbers, {decoding_model(r, results)}; "
             f"{measured_on(r['machine'])}; sentences/s timed in {timing(r['protocol'])}; "
             "[results](benchmarks/results/numbers_decoding.md).*", "",
             "| decoding | exact match % | sacreBLEU | chrF | sentences/s |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {x['strategy']} | {x['exact_match']:.2f} | {x['bleu']:.2f} | {x['chrf']:.2f} | "
              f"{num(x['sentences_per_s']['median'])} |" for x in rows]
    by_name = {x["strategy"]: x for x in rows}
    greedy = by_name.get("greedy")
    beam = next((x for x in rows if x["options"].get("beam") and not x["options"].get("mbr")), None)
    samples = next((x for x in rows if x["options"].get("mbr") and x["options"].get("mbr_source") != "beam"), None)
    if greedy and beam:
        gain = beam["exact_match"] - greedy["exact_match"]
        text = (f"The task has one right answer per input, so search has little to add to a model that greedy "
                f"decoding already gets right {greedy['exact_match']:.2f}% of the time (beam "
                f"{beam['options']['beam']}: {signed(gain, 2)} points)")
        if samples:
            text += (f"; MBR over ancestral samples ({signed(samples['exact_match'] - greedy['exact_match'], 2)} "
                     "points) suffers because unbiased samples at temperature 1 are often wrong on such a peaked "
                     "task (MBR is meant for tasks with many good outputs)")
        lines += ["", text + "."]
    return "\n".join(lines)


def render_params(results: Path) -> str:
    r = load(results, "params")

    def human(n: float) -> str:
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"

    def paper(m: dict) -> str:
        if not m.get("paper_params"):
            return ""
        p = m["paper_params"]
        written = f"{p / 1e9:.1f}B" if p >= 1e9 else f"{p / 1e6:g}M"
        return f" (paper: {written}, {signed(100 * m['difference_vs_paper'])}%)"

    parts = [f"`{m['preset']}` at vocabulary {num(m['vocab'])}"
             + (f" (padded to {num(m['padded_vocab'])})" if m.get("padded_vocab", m["vocab"]) != m["vocab"] else "")
             + f": {human(m['params'])}{paper(m)}" for m in r["models"]]
    return ("**Parameters** (`glassformer params`, built on the meta device, tied matrices once; "
            "[results](benchmarks/results/params.md)): " + "; ".join(parts) + ".")


def render_gpt_beam(results: Path) -> str:
    g, b = load(results, "gpt_cpu"), load(results, "beam_cpu")
    peak = g["matmul_peak"][g["mfu_dtype"]]
    lines = [
        f"{quick_warning(g, b)}**Against Hugging Face `transformers`, same shapes and weights** "
        "([GPT results](benchmarks/results/gpt_cpu.md), [beam results](benchmarks/results/beam_cpu.md)); "
        "figures are medians over rounds (timing below), ratio = glassformer / Hugging Face:", "",
        "| benchmark | glassformer | Hugging Face | ratio | ratio of best rounds | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def target(ratio: float, goal: float) -> str:
        return f"≥ {goal:g}× — {'met' if ratio >= goal else 'not met'}"

    for key in ("train_a", "train_b"):
        t = g[key]
        s = t["shape"]
        label = (f"GPT training ({key[-1]}) {s['n_layers']}L d{s['d_model']}, block {s['block']}, "
                 f"batch {s['batch']}, tok/s")
        lines.append(f"| {label} | {num(t['tokens_per_s']['ours']['median'])} (MFU {100 * t['mfu']['ours']:.0f}%) | "
                     f"{num(t['tokens_per_s']['hf']['median'])} (MFU {100 * t['mfu']['hf']:.0f}%) | "
                     f"{t['ratio']['median']:.2f}× | {t['ratio']['best']:.2f}× | "
                     f"{target(t['ratio']['median'], t['target_ratio'])} |")
    gen = g["generate_b"]
    rate = gen["tokens_per_s"]
    lines.append(f"| GPT greedy generation (b), batch {gen['batch']}, {gen['new_tokens']} tokens, cached, tok/s | "
                 f"{num(rate['ours_cached']['median'], 1)} (uncached: {num(rate['ours_uncached']['median'])}) | "
                 f"{num(rate['hf_cached']['median'], 1)} | {gen['ratio']['median']:.2f}× | {gen['ratio']['best']:.2f}× | "
                 f"{target(gen['ratio']['median'], gen['target_ratio'])} |")
    setup, mem, sps = b["setup"], b["memory"], b["sentences_per_s"]
    lines.append(f"| Marian-shaped beam {setup['beam']}, batch {setup['batch']}, {setup['new_tokens']} tokens, "
                 f"sentences/s | {num(sps['ours']['median'], 1)} (peak +{mem['ours']['peak_growth_mib']:.1f} MiB) | "
                 f"{num(sps['hf']['median'], 1)} (peak +{mem['hf']['peak_growth_mib']:.1f} MiB) | "
                 f"{b['ratio']['median']:.2f}× | {b['ratio']['best']:.2f}× | "
                 f"{target(b['ratio']['median'], b['target_ratio'])} |")
    ms = gen["ms_per_token"]
    goal = gen["target_ratio"]
    lines += [
        "",
        f"GPT: {measured_on(g['machine'])}; training timed in {timing(g['train_a']['protocol'])}; generation in "
        f"{timing(gen['protocol'])}.  Beam: {measured_on(b['machine'])}; {timing(b['protocol'])}.", "",
        f"MFU is against this machine's {peak['dtype']} matrix-multiply throughput measured in the same run "
        f"({peak['n']}×{peak['n']} products, {len(peak['samples_gflops'])} samples): median "
        f"{peak['median_gflops']:.0f} GFLOP/s (best {peak['best_gflops']:.0f}).", "",
        ("Beam outputs are token-for-token identical to" if b["identical_tokens"] else
         "**Beam outputs differ** from") + f" `MarianMTModel.generate(num_beams={setup['beam']})` "
        "with the same weights and Hugging Face's length normalisation (`length_penalty_kind=\"hf\"`); our default is "
        "GNMT's penalty `((5+|Y|)/6)^α`, the one the paper used — see `docs/decoding.md`.", "",
        f"At batch {gen['batch']} a cached step of shape (b) costs {ms['linears_only']:.2f} ms in matrix products "
        f"alone (memory-bound: all weights are read once per token) and {ms['ours_cached']:.2f} ms in all "
        f"(Hugging Face: {ms['hf_cached']:.2f} ms); {goal:g}× Hugging Face would need "
        f"{ms['hf_cached'] / goal:.2f} ms per token.",
    ]
    return "\n".join(lines)


def render_train_translation(results: Path) -> str:
    r = load(results, "train_translation")
    s, ms, sps, tps = r["shape"], r["step_ms"], r["steps_per_s"], r["target_tokens_per_s"]
    ratio, goal = r["ratio"], r["target_ratio"]
    verdict = f"≥ {goal:g}× — {'met' if ratio['median'] >= goal else 'not met'}"
    lines = [f"{quick_warning(r)}**Translation training step against Hugging Face `MarianMTModel`** "
             f"([results](benchmarks/results/train_translation.md)): `{s['preset']}`'s shape, vocabulary "
             f"{num(s['vocab'])} tied three ways, batch {s['batch']} × {s['src_len']} + {s['tgt_len']} tokens, "
             f"dropout as the preset on both sides, label smoothing {r['recipe']['label_smoothing']:g}, fused Adam, "
             f"clipping, fp32; ours through `Trainer.train_step`; both start from the same weights and compute the same "
             "loss.", "",
             "| | step ms | steps/s | target tokens/s | ratio | target |", "| --- | ---: | ---: | ---: | ---: | --- |",
             f"| glassformer | {ms['ours']['median']:.1f} | {sps['ours']['median']:.2f} | "
             f"{num(tps['ours']['median'])} | **{ratio['median']:.2f}×** | {verdict} |",
             f"| Hugging Face | {ms['hf']['median']:.1f} | {sps['hf']['median']:.2f} | {num(tps['hf']['median'])} | | |",
             ""]
    text = (f"{sentence(measured_on(r['machine']))}; {timing(r['protocol'])}.  Median of each round's own ratio "
            f"{ratio['of_paired_rounds']:.2f}×")
    one = r.get("one_thread")
    if one:
        text += f"; at {one['threads']} thread: {one['ratio']['median']:.2f}×"
    lines.append(text + ".")
    return "\n".join(lines)


def render_lm_quality(results: Path) -> str:
    r = load(results, "lm_quality")
    runs, variants = r["runs"], r["variants"]
    seeds = sorted({x["seed"] for x in runs})
    target = r["target_val_loss"]
    lines = [f"{quick_warning(r)}**Language-model quality** ([results](benchmarks/results/lm_quality.md)): "
             f"{r['setting']}, {num(r['steps'])} steps on Tiny Shakespeare; validation loss over "
             f"{r['final_eval_windows']} windows.  Target ≤ {target:g} ({r['target_source']}).  "
             f"*{sentence(measured_on(r['machine']))}.*", "",
             "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | target |",
             "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: | --- |"]
    for name in ("default", "no bias"):
        v = variants.get(name)
        if v is None:
            lines.append(f"| {name} | " + " | ".join("—" for _ in seeds) + " | not measured yet | |")
            continue
        loss = {x["seed"]: x["val_loss"] for x in runs if x["variant"] == name}
        cells = [f"{loss[s]:.4f}" if s in loss else "—" for s in seeds]
        gap = v["val_loss_mean"] - target
        verdict = "met" if gap <= 0 else f"missed by {gap:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{v['val_loss_mean']:.4f}** | {verdict} |")
    walls = [x["wall_s"] for x in runs]
    threads = sorted({x["threads"] for x in runs})
    lines += ["", f"A run takes {num(min(walls))}–{num(max(walls))} s (median {num(statistics.median(walls))} s) on "
              f"{'/'.join(map(str, threads))} thread(s) of a shared CPU."]
    return "\n".join(lines)


def render_nanogpt(results: Path) -> str:
    """The same baby GPT trained by glassformer and by nanoGPT's own train.py, side by side."""
    r = load(results, "nanogpt_cpu")
    sides, speed = r["summary"]["sides"], r["summary"]["speed_vs_nanogpt"]
    lines = [f"{quick_warning(r)}**Beside nanoGPT** ([results](benchmarks/results/nanogpt_cpu.md)): the same "
             f"setting, {num(r['steps'])} steps, nanoGPT's unmodified `train.py` in a scratch folder; "
             f"{r['schedule']} order, {r['repeats']} round(s) each, medians.  "
             f"*{sentence(measured_on(r['machine']))}.*", "",
             "| side | wall time | training steps/s | validation loss, its own measure | validation loss, all of the "
             "validation text | nanoGPT's wall time / ours |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, side in sides.items():
        ratio = f"**{speed[name]['wall']:.2f}×**" if name in speed else ""
        lines.append(f"| {name} | {side['wall_s']:.1f} s | {side['steps_per_s']:.2f} | {side['val_loss']:.4f} | "
                     f"{side['full_val_loss']:.4f} | {ratio} |")
    return "\n".join(lines)


def render_bert(results: Path) -> str:
    """Sentence embeddings and masked-LM training against Hugging Face, and fine-tuned classification."""
    e, m, c = load(results, "embed"), load(results, "mlm"), load(results, "classify")
    sps, ratio = e["sentences_per_s"], e["ratio"]
    t = m["train"]
    shape = t["shape"]

    def verdict(value: float, goal: float) -> str:
        return f"≥ {goal:g}× — {'met' if value >= goal else 'not met'}"

    lines = [f"{quick_warning(e, m, c)}**BERT against Hugging Face** ([embeddings](benchmarks/results/embed.md), "
             f"[masked LM](benchmarks/results/mlm.md)).", "",
             "| | glassformer | Hugging Face | ratio | target |", "| --- | ---: | ---: | ---: | --- |",
             f"| embedding {e['n_sentences']} sentences of {e['tokens']['min']}–{e['tokens']['max']} tokens with "
             f"all-MiniLM-L6-v2 (batch {e['batch_size']}), sentences/s | {sps['ours']['median']:.1f} | "
             f"{sps['hf']['median']:.1f} | **{ratio['ours']['median']:.2f}×** | "
             f"{verdict(ratio['ours']['median'], e['target_ratio'])} |",
             f"| the same without our length-sorted batches | {sps['ours_input_order']['median']:.1f} | "
             f"{sps['hf']['median']:.1f} | {ratio['ours_input_order']['median']:.2f}× | |",
             f"| masked-LM training ({shape['n_layers']} layers of {shape['d_model']}, vocabulary "
             f"{num(shape['vocab'])}, batch {shape['batch']} × {shape['block']}), tokens/s | "
             f"{num(t['tokens_per_s']['ours']['median'])} | {num(t['tokens_per_s']['hf']['median'])} | "
             f"**{t['ratio']['median']:.2f}×** | {verdict(t['ratio']['median'], t['target_ratio'])} |", "",
             f"Embeddings: {sentence(measured_on(e['machine']))}; {timing(e['protocol'])}; largest difference from "
             f"Hugging Face's embeddings {e['max_abs_diff']['ours_vs_hf']:.1e}.  Masked LM: "
             f"{measured_on(m['machine'])}; {timing(t['protocol'])}; the same first loss on both sides "
             f"({t['first_loss']['ours']:.5f}).", "",
             f"**Fine-tuning a classifier** ([results](benchmarks/results/classify.md)) on the built-in "
             f"number-language task ({len(c['labels'])} languages, {num(c['sizes']['train'])} training and "
             f"{num(c['sizes']['test'])} test numbers never seen in training):", "",
             "| model | steps | test accuracy | macro-F1 | training time |", "| --- | ---: | ---: | ---: | ---: |"]
    for run in c["runs"]:
        lines.append(f"| {run['model']} | {num(run['steps'])} | **{100 * run['test_accuracy']:.2f}%** | "
                     f"{run['test_macro_f1']:.4f} | {num(run['train_s'])} s |")
    lines += ["", f"{sentence(measured_on(c['machine']))}."]
    return "\n".join(lines)


def render_families(results: Path) -> str:
    """ViT and image-to-text accuracy on the digits; Llama generation and ViT inference against Hugging Face."""
    v, c, g, i = (load(results, n) for n in ("vit_digits", "caption_digits", "llama_generate", "vit"))

    def verdict(value: float, goal: float) -> str:
        return f"≥ {goal:g}× — {'met' if value >= goal else 'not met'}"

    lines = [f"{quick_warning(v, c, g, i)}**ViT and image to text on scikit-learn's digits** "
             f"([ViT](benchmarks/results/vit_digits.md), [captions](benchmarks/results/caption_digits.md)): "
             "test images never seen in training or validation.", "",
             "| command | held-out result | training |", "| --- | ---: | ---: |",
             f"| `{v['command']}` | **{100 * v['test_accuracy']:.2f}%** accuracy on {num(v['test_images'])} images | "
             f"{num(v['steps'])} steps, {num(v['train_seconds'])} s ({num(v['wall_seconds'])} s in all) |",
             f"| `{c['command']}` | **{100 * c['test_exact_match']:.1f}%** exact match on {num(c['test_strips'])} "
             f"strips of {c['digits_per_strip'][0]}–{c['digits_per_strip'][1]} digits | {num(c['steps'])} steps, "
             f"{num(c['train_seconds'])} s |", "",
             f"ViT: {measured_on(v['machine'])}.  Captions: {measured_on(c['machine'])}.", "",
             f"**Against Hugging Face** ([Llama generation](benchmarks/results/llama_generate.md), "
             f"[ViT inference](benchmarks/results/vit.md)); the same weights, identical tokens and logits:", "",
             "| | glassformer | Hugging Face | ratio | target | matrix products alone allow |",
             "| --- | ---: | ---: | ---: | --- | ---: |"]
    shape = g["shape"]
    for b in g["batches"]:
        t = b["tokens_per_s"]
        lines.append(f"| Llama greedy generation ({shape['num_hidden_layers']} layers of {shape['hidden_size']}, "
                     f"GQA {shape['num_attention_heads']}/{shape['num_key_value_heads']}), batch {b['batch']}, "
                     f"tokens/s | {t['ours']['median']:.1f} | {t['hf']['median']:.1f} | **{b['ratio']['median']:.2f}×** | "
                     f"{verdict(b['ratio']['median'], g['target_ratio'])} | {b['ratio_ceiling']:.2f}× |")
    for b in i["batches"]:
        t = b["images_per_s"]
        lines.append(f"| ViT-B/16 inference, batch {b['batch']}, images/s | {t['ours']['median']:.2f} | "
                     f"{t['hf']['median']:.2f} | **{b['ratio']['median']:.2f}×** | "
                     f"{verdict(b['ratio']['median'], i['target_ratio'])} | {b['ratio_ceiling']:.2f}× |")
    lines += ["", f"Llama: {measured_on(g['machine'])}.  ViT: {measured_on(i['machine'])}.  On this CPU in float32 "
              "both models spend over 80% of their time in the same matrix products as Hugging Face's, so the "
              "last column (the ratio if everything else took no time) bounds what any implementation can reach."]
    return "\n".join(lines)


def render_posttrain(results: Path) -> str:
    """Post-training against the peers: LoRA vs peft, SFT, DPO and one GRPO step vs trl, one row each."""
    rows, found, missing = [], [], []
    peers = (  # (results file, its key or None, what is compared, the rate and its unit, the peer)
        ("lora", "lora", "LoRA forward + backward (r 8 on q, v)", "tokens_per_s", "tokens/s", "peft"),
        ("sft", "sft", "SFT step, loss on the responses", "tokens_per_s", "tokens/s", "trl"),
        ("dpo", "dpo", "DPO step (reference log-probabilities precomputed)", "pairs_per_s", "pairs/s", "trl"),
        ("grpo_cpu", None, "GRPO step", "steps_per_s", "steps/s", "trl"),
    )
    for name, key, what, rate, unit, peer in peers:
        try:
            r = load(results, name)
        except NotMeasured:
            missing.append(f"{what} (`benchmarks/bench_{name.removesuffix('_cpu')}.py`)")
            continue
        found.append(r)
        x = r[key] if key else r
        if name == "grpo_cpu":
            shape = x.get("model_shape")            # (older files: the 124M shape or --quick's, unnamed)
            model = f", {shape['n_layer']} layers, d_model {shape['n_embd']}" if shape else ""
            what += f" ({x['prompts']} prompts × group {x['group']}, {x['new_tokens']} new tokens{model})"
        ours, theirs = x[rate]["ours"]["median"], x[rate][peer]["median"]
        ratio, goal = x["ratio"]["median"], x["target_ratio"]
        rows.append(f"| {what} | {ours:,.4g} {unit} | {theirs:,.4g} {unit} ({peer}) | **{ratio:.2f}×** | "
                    f"≥ {goal:g}× — {'met' if ratio >= goal else 'not met'} |")
    if not rows:
        raise NotMeasured("none of `benchmarks/results/{lora,sft,dpo,grpo_cpu}.json` exists")
    machines = sorted({measured_on(r["machine"]) for r in found})
    return "\n".join([
        f"{quick_warning(*found)}**Post-training against `peft` and `trl`** ([LoRA](benchmarks/results/lora.md), "
        "[SFT](benchmarks/results/sft.md), [DPO](benchmarks/results/dpo.md), [GRPO](benchmarks/results/grpo_cpu.md)): "
        "the same GPT-2-shaped model (glassformer's own Hugging Face export on the peer's side), the same data and "
        "batch, ABBA order, medians.  *" + "; ".join(sentence(m) for m in machines) + ".*", "",
        "| what | glassformer | peer | ours / peer | goal |", "| --- | ---: | ---: | ---: | --- |", *rows,
        *([""] + [f"Not measured yet: {', '.join(missing)}."] if missing else [])])


def render_posttrain_chain(results: Path) -> str:
    """The post-training quickstart: held-out exact match after each stage (all and per question type), its
    steps and training seconds, the wall time, and why a stage did not help (the chain's own notes)."""
    r = load(results, "posttrain_chain")
    summary = r["summary"]
    stages = summary["stages"]
    kinds = [k for k in next(iter(stages.values()))["exact_match"] if k != "all"]
    dpo = ("DPO on the SFT model's own wrong answers" if stages["dpo"].get("pairs") == "self-made" else
           "DPO on plausible wrong answers")
    rl = f"GRPO on {', '.join(stages['rl']['kinds'])} questions" if stages["rl"].get("kinds") else "GRPO"
    lines = [f"{quick_warning(r)}**The post-training chain** ([details](benchmarks/results/posttrain_chain.md)): "
             f"`{r['command'].replace(' --out SCRATCH/run', '')}` from an empty directory — a small GPT "
             f"pretrained on the numbers-instruct questions as text, then SFT, {dpo}, {rl} — in "
             f"**{r['wall_seconds']:.0f} s** of wall time.  Exact match on {summary['test_questions']} held-out "
             "questions (numbers never seen in training), greedy decoding.  "
             f"*{sentence(measured_on(r['machine']))}.*", "",
             "| stage | all | " + " | ".join(kinds) + " | steps | training (s) |",
             "| --- |" + " ---: |" * (len(kinds) + 3)]
    for name, stage in stages.items():
        shares = stage["exact_match"]
        steps = f"{stage['steps']}" + (" (cut by its time limit)" if stage["time_limited"] else "")
        lines.append(f"| {name} | **{100 * shares['all']:.1f}%** | " +
                     " | ".join(f"{100 * shares[k]:.1f}%" for k in kinds) +
                     f" | {steps} | {stage['train_seconds']:.0f} |")
    notes = summary.get("notes", [])
    return "\n".join(lines + ([""] + notes if notes else []))


def render_fsdp_memory(results: Path) -> str:
    """What each of FSDP's two processes holds against one process, and their peak resident memory."""
    r = load(results, "fsdp_memory")
    runs = [("one process", x) for x in r["runs"]["one process"]] + \
           [(f"FSDP, 2 processes: rank {x['rank']}", x) for x in r["runs"]["FSDP, 2 processes"]]
    if any("peak_rss_built_mb" not in x for _, x in runs):
        raise NotMeasured("`benchmarks/results/fsdp_memory.json` predates the peak RSS once built; rerun the benchmark")
    one = runs[0][1]
    held_one = one["parameter_mb"] + one["optimizer_state_mb"]
    lines = [f"**FSDP memory** ([details](benchmarks/results/fsdp_memory.md)): a GPT of {num(one['parameters'])} "
             f"parameters trained {r['steps']} steps with AdamW by one process and by two under FSDP (torchrun, gloo "
             "on the CPU). The model is built on the meta device; each FSDP process materialises only its shards. "
             "Peak RSS (with glibc returning every freed block over 64 KiB to the system) once built: before any "
             "step; the peak of a run comes from the steps (gradients, AdamW's state, the gathered blocks, the "
             f"communication buffers). *{sentence(measured_on(r['machine']))}.*", "",
             "| run | parameters + optimiser state held | share of one process | peak RSS once built | peak RSS |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, x in runs:
        held = x["parameter_mb"] + x["optimizer_state_mb"]
        lines.append(f"| {name} | {held:,.0f} MB | {held / held_one:.2f} | {x['peak_rss_built_mb']:,.0f} MB | "
                     f"{x['peak_rss_mb']:,.0f} MB |")
    return "\n".join(lines)


def render_why_transformers(results: Path) -> str:
    """``glassformer compare``: the Transformer and the attention LSTM for the same wall time, on the
    number task and on the long-range recall probe."""
    r = load(results, "compare_numbers")
    t, p = r["translation"], r["probe"]
    sizes = ", ".join(f"`{m['name']}` ({', '.join(f'{k} {v}' for k, v in m['overrides'].items()) or 'as the preset'}: "
                      f"{num(m['parameters'])} parameters)" for m in t["models"])
    lines = [f"{quick_warning(r)}**The Transformer against the recurrent encoder–decoder** "
             f"([report](benchmarks/results/compare_numbers.md), `glassformer compare`): {sizes}, each trained for "
             f"{num(r['budget_seconds'])} s of wall time per task, one after the other, by the same recipe; greedy "
             f"decoding of each model's best checkpoint on {num(t['eval_pairs'])} held-out test numbers "
             f"(German → English).  *{sentence(measured_on(r['machine']))}.*", "",
             "| model | steps | target tokens/s | best validation loss | exact match | BLEU | BLEU short / medium / "
             "long source |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in t["models"]:
        speed = num(m["target_tokens_per_s"]) if m["target_tokens_per_s"] is not None else "—"
        thirds = " / ".join(f"{m['by_length'][b]['bleu']:.1f}" for b in ("short", "medium", "long"))
        lines.append(f"| {m['name']} | {num(m['steps'])} | {speed} | {m['best_valid_loss']:.3f} | "
                     f"**{m['eval']['exact_match']:.1f}%** | {m['eval']['bleu']:.1f} | {thirds} |")
    d = p["distances"]
    lines += ["", f"Long-range probe (recall the marked symbol, with N random symbols after it and N before the "
                  f"marker; accuracy on {num(p['test_per_distance'])} held-out examples per distance, same budget):", "",
              "| model | " + " | ".join(f"N = {k}" for k in d) + " |", "| --- | " + " | ".join("---:" for _ in d) + " |"]
    for m in p["models"]:
        lines.append(f"| {m['name']} | " + " | ".join(f"{m['accuracy'][str(k)]:.0f}%" for k in d) + " |")
    pub = r.get("published")
    if pub:
        others = [f"{name} {value:g}" for name, value in pub.items() if name != "source"]
        lines += ["", f"For orientation only (another corpus, larger models trained to convergence on a GPU): "
                      f"{pub['source']}: {', '.join(others)}."]
    return "\n".join(lines + ["", lstm_step_line(results)])


def lstm_step_line(results: Path) -> str:
    """The recurrent step against the same model written directly in PyTorch (bench_lstm_step.py)."""
    try:
        s = load(results, "lstm_step")["lstm_step"]
    except NotMeasured:
        return "The LSTM step against plain PyTorch: not measured yet (`benchmarks/bench_lstm_step.py`)."
    speed = s["target_tokens_per_s"]
    return (f"The `{s['preset']}` training step (forward, backward, AdamW; batch {s['shape']['batch']}) against the "
            f"same model written directly in PyTorch ([details](benchmarks/results/lstm_step.md)): "
            f"{num(speed['ours']['median'])} vs {num(speed['plain']['median'])} target tokens/s, "
            f"**{s['ratio']['median']:.2f}×** (goal: within 10%).")


BLOCKS: dict[str, Callable[[Path], str]] = {
    "demo": render_demo,
    "decoding": render_decoding,
    "params": render_params,
    "vs-hf": render_gpt_beam,
    "train-translation": render_train_translation,
    "lm-quality": render_lm_quality,
    "nanogpt": render_nanogpt,
    "bert": render_bert,
    "families": render_families,
    "fsdp-memory": render_fsdp_memory,
    "posttrain": render_posttrain,
    "posttrain-chain": render_posttrain_chain,
    "why-transformers": render_why_transformers,
}
SCRIPTS = {
    "demo": "benchmarks/bench_quickstart.py",
    "decoding": "benchmarks/bench_numbers_decoding.py",
    "params": "benchmarks/param_counts.py",
    "vs-hf": "benchmarks/bench_gpt.py and benchmarks/bench_beam.py",
    "train-translation": "benchmarks/bench_train_translation.py",
    "lm-quality": "benchmarks/lm_quality.py",
    "nanogpt": "benchmarks/bench_nanogpt.py",
    "bert": "benchmarks/bench_embed.py, benchmarks/bench_mlm.py and benchmarks/classify_accuracy.py",
    "families": "benchmarks/vit_digits.py, benchmarks/caption_digits.py, benchmarks/bench_llama_generate.py and "
                "benchmarks/bench_vit.py",
    "fsdp-memory": "benchmarks/fsdp_memory.py",
    "posttrain": "benchmarks/bench_lora.py, benchmarks/bench_sft.py, benchmarks/bench_dpo.py and benchmarks/bench_grpo.py",
    "posttrain-chain": "benchmarks/bench_posttrain_chain.py",
    "why-transformers": "benchmarks/compare_numbers.py and benchmarks/bench_lstm_step.py",
}


def render_block(name: str, results: Path = RESULTS) -> str:
    """One block's Markdown; a note in place of figures when its results are missing or unreadable."""
    try:
        return BLOCKS[name](results)
    except NotMeasured as e:
        return f"*Not measured yet: {e}; `{SCRIPTS[name]}` writes it (`make bench`).*"
    except (KeyError, TypeError, ValueError) as e:
        return (f"*Not measured yet: the results of `{SCRIPTS[name]}` are in an older format "
                f"(missing {e}); rerun (`make bench`).*")


def render_all(results: Path = RESULTS) -> dict[str, str]:
    return {name: render_block(name, results) for name in BLOCKS}


# ---------------------------------------------------------------------------------------------
# the README


def blocks_in(text: str) -> dict[str, str]:
    """The blocks present in ``text``: name -> body (between the markers, blank edges stripped)."""
    return {m["name"]: m["body"].strip("\n") for m in _BLOCK.finditer(text)}


def apply(text: str, rendered: dict[str, str]) -> str:
    """``text`` with every block's body replaced by its rendering (markers kept)."""
    def body(m: re.Match) -> str:
        name = m["name"]
        if name not in rendered:
            return m.group(0)
        return f"{BEGIN.format(name=name)}\n{rendered[name]}\n{END.format(name=name)}"

    return _BLOCK.sub(body, text)


def results_section(text: str) -> str:
    start = text.find(SECTION_START)
    end = text.find(SECTION_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"README has no section between {SECTION_START!r} and {SECTION_END!r}")
    return text[start:end]


_FIGURE = re.compile(r"(?<![\w\-./:#])\d[\d,.]*")


def figures_outside_blocks(text: str) -> list[str]:
    """Numbers in the Results section that no block renders (code spans, link targets and
    marker comments excepted): each is a figure typed by hand."""
    section = _BLOCK.sub("", results_section(text))
    section = re.sub(r"`[^`]*`", "", section)                 # code spans
    section = re.sub(r"\]\([^)]*\)", "]", section)            # link targets
    section = re.sub(r"<!--.*?-->", "", section, flags=re.S)
    out = []
    for line in section.splitlines():
        found = _FIGURE.findall(line.removeprefix(SECTION_START))
        if found:
            out.append(f"{', '.join(found)} in: {line.strip()}")
    return out


def check(readme: Path = README, results: Path = RESULTS) -> list[str]:
    """Every difference between the README's results and what the results files render; [] if none."""
    text = readme.read_text(encoding="utf-8")
    present = blocks_in(text)
    problems = [f"block {name!r}: markers {BEGIN.format(name=name)} ... {END.format(name=name)} missing from the README"
                for name in BLOCKS if name not in present]
    problems += [f"block {name!r} in the README is not one this script renders" for name in present if name not in BLOCKS]
    section = results_section(text)
    problems += [f"block {name!r} is outside the Results section" for name in present
                 if name in BLOCKS and BEGIN.format(name=name) not in section]
    for name, want in render_all(results).items():
        have = present.get(name)
        if have is not None and have != want:
            diff = difflib.unified_diff(have.splitlines(), want.splitlines(), "README.md", "rendered", lineterm="", n=0)
            problems.append(f"block {name!r} differs from its results:\n" + "\n".join(diff))
    problems += [f"figure outside a generated block: {x}" for x in figures_outside_blocks(text)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the README's result blocks")
    action.add_argument("--check", action="store_true", help="exit 1 if the README differs from the results")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS, help="results directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.readme, args.results)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"README results: {'up to date' if not problems else f'{len(problems)} difference(s)'}")
        return 1 if problems else 0
    rendered = render_all(args.results)
    if args.write:
        text = args.readme.read_text(encoding="utf-8")
        missing = [name for name in BLOCKS if name not in blocks_in(text)]
        if missing:
            print(f"README lacks the markers of: {', '.join(missing)}; add "
                  f"{BEGIN.format(name='NAME')} / {END.format(name='NAME')} pairs first", file=sys.stderr)
            return 1
        new = apply(text, rendered)
        if new != text:
            tmp = args.readme.with_name(f".{args.readme.name}.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(args.readme)
        print(f"{args.readme}: {'updated' if new != text else 'already up to date'}")
        outside = figures_outside_blocks(new)
        for x in outside:
            print(f"figure outside a generated block: {x}", file=sys.stderr)
        return 1 if outside else 0
    for name, body in rendered.items():
        print(f"{BEGIN.format(name=name)}\n{body}\n{END.format(name=name)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
