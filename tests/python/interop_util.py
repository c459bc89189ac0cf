# Shared helpers of the interoperability tests: run the `peft` program, load models and adapters with
# transformers and PEFT, compare peft.cpp's logits with theirs, and report every deviation measured.
import atexit
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CLI = os.environ.get("PEFT_CLI", "")
SOURCE = Path(os.environ.get("PEFT_SOURCE_DIR", Path(__file__).resolve().parents[2]))
DATA = Path(os.environ.get("PEFT_TEST_DATA", SOURCE / "tests" / "fixtures"))
TMP = Path(os.environ.get("PEFT_TEST_TMP", "/tmp/peft-python-tests"))

# Logits of peft.cpp and of transformers + PEFT, float32 on the CPU, may differ by no more than this.
LOGITS_TOL = 1e-5
# An adapter must move the logits by at least this much, or a comparison would not show that it is applied.
MIN_EFFECT = 1e-3

torch.set_num_threads(int(os.environ.get("PEFT_NUM_THREADS", "1")))

_deviations = []  # (what, max abs diff), in the order measured


def require_cli():
    if not CLI or not Path(CLI).is_file():
        pytest.fail(f"PEFT_CLI={CLI!r} is not the built `peft` program (set PEFT_CLI)")


def run_cli(*args, timeout=300):
    """Runs `peft ARGS...`; fails the test with its output unless it exits 0. Returns stdout."""
    require_cli()
    cmd = [CLI, *[str(a) for a in args]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r.stdout


def scratch(*parts):
    """A fresh, empty directory under PEFT_TEST_TMP."""
    d = TMP.joinpath(*parts)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def write_jsonl(path, records):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return Path(path)


def text_records(n=None):
    """The {"text": ...} records of tests/fixtures/tiny/train.jsonl."""
    lines = (DATA / "tiny" / "train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return records[:n] if n else records


def eval_jsonl(directory, n=6):
    """A JSONL of `n` texts of different lengths, so that the evaluated batch is padded."""
    records = text_records()
    picked = sorted(records[:n], key=lambda r: len(r["text"]))
    assert len({len(r["text"]) for r in picked}) > 1
    return write_jsonl(Path(directory) / "eval.jsonl", picked)


def classification_records():
    """{"text", "label"} records: label 1 when the text speaks of a budget."""
    return [{"text": r["text"], "label": int("budget" in r["text"])} for r in text_records()]


def base_dir(name):
    """A model directory: "tiny" is tests/fixtures/tiny; a golden case's name gives a copy of its base
    (config, weights) with tiny's byte-level tokenizer.json (every base has 256 token ids)."""
    if name == "tiny":
        return DATA / "tiny"
    src = DATA / "golden" / name / "base"
    dst = TMP / "bases" / f"{name}-{os.getpid()}"  # one copy per process: test files run in parallel
    if not (dst / "tokenizer.json").exists():
        dst.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, dst, True)
        for f in src.iterdir():
            shutil.copy(f, dst / f.name)
        shutil.copy(DATA / "tiny" / "tokenizer.json", dst / "tokenizer.json")
    return dst


# peft train flags shared by the tests. AdaLoRA: warm-up to step 2, masks every 2 steps, the final
# mask at step 9 (total_step 12 - tfinal 4 < 9), down to an average rank of 1 of 4: some modules keep none.
ADALORA = ["--init_r", 4, "--target_r", 1, "--tinit", 2, "--tfinal", 4, "--deltaT", 2,
           "--max-steps", 12, "--batch-size", 8, "--lr", 0.05, "--seed", 0]
LORA = ["--method", "lora", "--r", 4, "--lora_alpha", 8, "--max-steps", 6, "--batch-size", 8, "--lr", 0.02, "--seed", 0]


def train(model, data, out, *flags):
    """`peft train` on `data` into `out` (replacing what an earlier test run left); returns the adapter directory."""
    run_cli("train", "--model", model, "--data", data, "--output-dir", out, "--overwrite-output-dir", "--quiet",
            "--report=false", *flags)
    return Path(out) / "adapter"


def read_config(adapter_dir):
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())


def cpp_logits(model, data, dump, adapter=None, batch_size=6):
    """peft.cpp's first evaluation batch of `data` (`peft eval --dump-logits`): input_ids,
    attention_mask, labels and logits."""
    args = ["eval", "--model", model, "--data", data, "--batch-size", batch_size, "--dump-logits", dump]
    if adapter is not None:
        args += ["--adapter", adapter]
    run_cli(*args)
    return load_file(str(dump))


def load_causal_lm(model_dir):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def load_classifier(model_dir):
    import transformers

    return transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def load_peft(base_model, adapter_dir):
    import peft

    return peft.PeftModel.from_pretrained(base_model, str(adapter_dir)).eval()


def adapted_modules(peft_model):
    """Paths (relative to the transformers model) of the modules PEFT put an adapter on."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    prefix = "base_model.model."
    return {n[len(prefix):] for n, m in peft_model.named_modules() if isinstance(m, BaseTunerLayer)}


def file_modules(adapter_dir):
    """Paths of the modules an adapter_model.safetensors holds weights for."""
    names = set()
    for key in load_file(str(Path(adapter_dir) / "adapter_model.safetensors")):
        for part in (".lora_A", ".lora_E", ".lora_B"):
            if part in key:
                names.add(key[len("base_model.model."):key.index(part)])
    return names


def logits_of(model, batch):
    """The logits `model` gives for a dumped batch's input_ids and attention_mask."""
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits.float()


def max_abs_diff(a, b, mask=None):
    """Max |a - b| over every position (classification logits) or over the token positions of a
    right-padded causal-LM batch (mask: batch x length)."""
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    d = (a.float() - b.float()).abs()
    if mask is not None and d.dim() == 3:
        d = d[mask.bool()]
    return d.max().item()


def check_close(what, ours, theirs, mask=None, tol=LOGITS_TOL):
    """Records the deviation of `ours` from `theirs` under `what` and asserts it is within `tol`."""
    assert torch.isfinite(ours).all() and torch.isfinite(theirs).all(), f"{what}: non-finite logits"
    d = max_abs_diff(ours, theirs, mask)
    _deviations.append((what, d))
    assert d <= tol, f"{what}: max abs diff {d:.3g} > {tol:g}"
    return d


def check_effect(what, adapted, base, mask=None):
    """Asserts that an adapter moves the logits enough for a comparison to mean something."""
    d = max_abs_diff(adapted, base, mask)
    assert d >= MIN_EFFECT, f"{what}: the adapter moves the logits by only {d:.3g}; the comparison would prove nothing"
    return d


def zero_rank_modules(config):
    """Modules whose rank_pattern keeps no triplet."""
    return sorted(k for k, v in (config.get("rank_pattern") or {}).items() if isinstance(v, list) and not any(v))


@pytest.fixture(scope="module", autouse=True)
def deviation_report(request):
    """At the end of a test module, prints every deviation it measured (also without -s)."""
    start = len(_deviations)
    yield
    lines = [f"  {d:.3e}  {what}" for what, d in _deviations[start:]]
    if not lines:
        return
    text = f"\n{request.module.__name__}: max abs deviation from transformers/PEFT (tolerance {LOGITS_TOL:g})\n" + "\n".join(lines)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(text)
    else:
        print(text)
    TMP.mkdir(parents=True, exist_ok=True)
    with open(TMP / "interop-deviations.txt", "a") as f:
        f.write(text + "\n")
