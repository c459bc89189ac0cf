# Makes one golden case (a reference training run made with Hugging Face transformers + PEFT) in the
# format of tests/fixtures/golden: base/, adapter_init/, adapter_final/, data.json, trace.json, ref_logits.
"""Generate a golden case with the real transformers + PEFT + torch (float32, CPU, deterministic).

Usage (run with the project's venv, .venv/bin/python):

  make_case.py OUT_DIR [options]          one case from explicit options (defaults: llama_a with
                                          4/4 heads; --kv-heads 2 gives its GQA)
  make_case.py OUT_DIR --random SEED      a random valid configuration drawn from SEED; options
                                          given explicitly still override what was drawn
  make_case.py OUT_DIR --random SEED --print-config   print the drawn configuration only
  make_case.py OUT_DIR ... --check-stable  also make it as float rounding alone could have (other
                                          attention kernel, one ulp on one initial weight) and
                                          exit 3 if the two differ beyond the golden tolerances

Examples:

  .venv/bin/python scripts/golden/make_case.py /tmp/c1 --family llama --kv-heads 2 --steps 60
  .venv/bin/python scripts/golden/make_case.py /tmp/c2 --family gpt2 --method lora --use-rslora
  .venv/bin/python scripts/golden/make_case.py /tmp/c3 --family bert --grad-accum 2 --tfinal 0
  .venv/bin/python scripts/golden/make_case.py /tmp/c4 --random 7 && build/peft replay /tmp/c4

The training loop is the one written in data.json's "loop": micro-batches taken in order, cycling
over the batches; each micro-batch loss (AdaLoRA: including the orthogonal penalty) divided by
grad_accum and back-propagated; then optimizer.step(), update_and_allocate(step) (AdaLoRA),
zero_grad(). The case's options are also stored in trace.json under reference.generator, so a case
can be made again from them.
"""

import argparse
import json
import os
import random
import shutil
import sys
import warnings

LOOP = (
    "for step in 0..steps-1: for k in 0..grad_accum-1: batch = batches[micro % len(batches)] "
    "(labels[micro % len] for classification); micro += 1; loss = model(batch).loss / grad_accum, "
    "where model(batch).loss includes orth_reg_weight * orthogonal regularisation for AdaLoRA; "
    "loss.backward(); after the micro-batches: optimizer.step(); update_and_allocate(step) (AdaLoRA only); "
    "optimizer.zero_grad(). trace[step].loss = sum of the scaled micro-batch losses"
)

# The adaptable linear layers of each family, by the names PEFT's target_modules match.
FAMILY_LINEARS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
}

# Every option of a case and its default (None: derived from the others).
DEFAULTS = {
    "family": "llama",
    "method": "adalora",
    "targets": None,  # comma-separated names; default: all linear layers of the family
    "target_regex": None,  # a regular expression instead (PEFT: re.fullmatch on the module path)
    "init_r": 8,
    "target_r": 2,
    "tinit": 10,
    "tfinal": 20,
    "delta_t": 5,
    "beta1": 0.85,
    "beta2": 0.85,
    "orth_reg_weight": 0.5,
    "lora_r": 4,
    "lora_alpha": 16,
    "use_rslora": False,
    "grad_accum": 1,
    "steps": 60,
    "lr": 5e-3,
    "weight_decay": 0.01,
    "seed": 0,
    "layers": 2,
    "hidden": 64,
    "heads": 4,
    "kv_heads": None,  # llama only; default: heads (MHA)
    "head_dim": None,  # llama only; default: hidden / heads
    "intermediate": None,  # default: 2 * hidden (llama, bert), 4 * hidden (gpt2)
    "tie_word_embeddings": None,  # llama: default false; gpt2 is always tied; bert: n/a
    "rms_norm_eps": 1e-6,  # llama only
    "num_labels": 2,  # bert only
    "vocab": 256,
    "seq_len": 32,
    "batch": 8,
    "num_batches": 6,
    "attn_implementation": "eager",  # or "sdpa": the same maths summed in another order
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="the case directory to write (replaced if it exists)")
    p.add_argument("--random", type=int, metavar="SEED", help="draw a random valid configuration from SEED")
    p.add_argument("--print-config", action="store_true", help="print the configuration as JSON and stop")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible sums)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--check-stable", action="store_true",
                   help="make the case again as float rounding alone could have made it and compare the two "
                        "with the golden tolerances; exit 3 when the reference does not agree with itself")
    p.add_argument("--family", choices=sorted(FAMILY_LINEARS))
    p.add_argument("--method", choices=["adalora", "lora"])
    p.add_argument("--targets", help="comma-separated target module names, e.g. q_proj,v_proj")
    p.add_argument("--target-regex", help="target_modules as one regular expression instead")
    for name in ["init_r", "target_r", "tinit", "tfinal", "grad_accum", "steps", "seed", "layers", "hidden",
                 "heads", "kv_heads", "head_dim", "intermediate", "num_labels", "vocab", "seq_len", "batch",
                 "num_batches", "lora_r"]:
        p.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    p.add_argument("--delta-t", "--deltaT", type=int, dest="delta_t")
    for name in ["beta1", "beta2", "orth_reg_weight", "lora_alpha", "lr", "weight_decay", "rms_norm_eps"]:
        p.add_argument("--" + name.replace("_", "-"), type=float, dest=name)
    p.add_argument("--attn-implementation", choices=["eager", "sdpa"], dest="attn_implementation",
                   help="transformers attention kernel (default eager); sdpa sums in another order, which shows "
                        "how far float rounding alone moves a run")
    p.add_argument("--use-rslora", action="store_const", const=True, dest="use_rslora")
    p.add_argument("--tie-word-embeddings", action="store_const", const=True, dest="tie_word_embeddings")
    p.add_argument("--untie-word-embeddings", action="store_const", const=False, dest="tie_word_embeddings")
    return p.parse_args(argv)


def draw_random(seed, family=None, method=None):
    """A random valid configuration: tiny models and runs of up to a few hundred steps. A family or
    method given is used instead of drawing one, and the rest is drawn for it."""
    r = random.Random(seed)
    c = {"seed": seed}
    family = c["family"] = family or r.choice(["llama", "gpt2", "bert"])
    c["method"] = method or ("adalora" if r.random() < 0.7 else "lora")
    linears = FAMILY_LINEARS[family]
    names = sorted(r.sample(linears, r.randint(1, len(linears))))
    c["layers"] = r.randint(1, 3)
    if r.random() < 0.15:  # a regex on the module path: some layers only, some names
        layers = sorted(r.sample(range(c["layers"]), r.randint(1, c["layers"])))
        c["target_regex"] = r".*\.(%s)\..*\.(%s)" % ("|".join(map(str, layers)), "|".join(names))
    else:
        c["targets"] = ",".join(names)
    c["heads"] = r.choice([2, 4])
    c["hidden"] = c["heads"] * r.choice([8, 12, 16])
    if family == "llama":
        c["kv_heads"] = r.choice([h for h in (1, 2, 4) if c["heads"] % h == 0])
        if r.random() < 0.2:
            c["head_dim"] = r.choice([8, 16])
        c["tie_word_embeddings"] = r.random() < 0.4
        c["rms_norm_eps"] = r.choice([1e-6, 1e-5])
        c["intermediate"] = c["hidden"] * r.choice([2, 3])
    elif family == "bert":
        c["num_labels"] = r.choice([2, 2, 3])
        c["intermediate"] = c["hidden"] * r.choice([2, 4])
    c["vocab"] = r.choice([64, 128, 256])
    c["seq_len"] = r.choice([8, 12, 16, 24, 32])
    c["batch"] = r.randint(2, 8)
    c["num_batches"] = r.randint(2, 6)
    c["grad_accum"] = r.choice([1, 1, 2, 3])
    c["lr"] = r.choice([1e-3, 3e-3, 5e-3, 1e-2])
    c["weight_decay"] = r.choice([0.0, 0.01, 0.1])
    c["lora_alpha"] = r.choice([4, 8, 16, 32])
    c["steps"] = r.choice([r.randint(12, 80), r.randint(12, 80), r.randint(80, 300)])
    steps = c["steps"]
    if c["method"] == "adalora":
        smallest = c["hidden"]  # no rank above the smaller dimension of a target (k_proj, v_proj under GQA)
        if family == "llama":
            smallest = min(smallest, c["kv_heads"] * c.get("head_dim", c["hidden"] // c["heads"]))
        c["init_r"] = r.randint(2, min(12, smallest))
        c["target_r"] = r.randint(1, c["init_r"] - 1)
        c["tinit"] = r.randint(0, steps // 3)
        c["tfinal"] = r.choice([0, r.randint(1, steps // 3), r.randint(1, steps // 3)])
        c["delta_t"] = r.choice([1, r.randint(1, 10)])
        c["beta1"] = r.choice([0.85, round(r.uniform(0.5, 0.95), 3)])
        c["beta2"] = r.choice([0.85, round(r.uniform(0.5, 0.95), 3)])
        c["orth_reg_weight"] = r.choice([0.0, 0.1, 0.5, 1.0])
    else:
        c["lora_r"] = r.randint(1, 8)
        c["use_rslora"] = r.random() < 0.4
    return c


def resolve(args):
    """Merge defaults, the random draw and explicit options; derive the rest; validate."""
    c = dict(DEFAULTS)
    if args.random is not None:
        c.update(draw_random(args.random, args.family, args.method))
    for k in DEFAULTS:
        v = getattr(args, k, None)
        if v is not None:
            c[k] = v
    if args.targets is not None:  # explicit names win over a drawn regex
        c["target_regex"] = None
    fam = c["family"]
    if c["targets"] is None and c["target_regex"] is None:
        c["targets"] = ",".join(FAMILY_LINEARS[fam])
    if c["target_regex"] is not None:
        c["targets"] = None
    if c["intermediate"] is None:
        c["intermediate"] = (4 if fam == "gpt2" else 2) * c["hidden"]
    if fam == "llama":
        c["kv_heads"] = c["kv_heads"] or c["heads"]
        c["head_dim"] = c["head_dim"] or c["hidden"] // c["heads"]
        c["tie_word_embeddings"] = bool(c["tie_word_embeddings"])
    else:
        c["kv_heads"] = c["head_dim"] = c["rms_norm_eps"] = None
        c["tie_word_embeddings"] = True if fam == "gpt2" else None
    if fam != "bert":
        c["num_labels"] = None
    if c["method"] == "lora":
        for k in ["init_r", "target_r", "tinit", "tfinal", "delta_t", "beta1", "beta2", "orth_reg_weight"]:
            c[k] = None
    else:
        c["lora_r"] = None
        c["use_rslora"] = None
    errors = []
    if fam != "llama" and c["hidden"] % c["heads"]:
        errors.append(f"hidden ({c['hidden']}) must be a multiple of heads ({c['heads']})")
    if fam == "llama" and c["heads"] % c["kv_heads"]:
        errors.append(f"kv_heads ({c['kv_heads']}) must divide heads ({c['heads']})")
    if c["seq_len"] > 128:
        errors.append("seq_len must be <= 128 (max_position_embeddings)")
    if c["steps"] <= 0 or c["grad_accum"] <= 0 or c["batch"] <= 0 or c["num_batches"] <= 0:
        errors.append("steps, grad_accum, batch and num_batches must be > 0")
    if c["method"] == "adalora":
        if not 0 < c["target_r"] < c["init_r"]:
            errors.append(f"need 0 < target_r ({c['target_r']}) < init_r ({c['init_r']})")
        if c["tinit"] < 0 or c["tfinal"] < 0 or c["tinit"] >= c["steps"] - c["tfinal"]:
            errors.append(f"need 0 <= tinit, 0 <= tfinal, tinit + tfinal < steps "
                          f"(tinit {c['tinit']}, tfinal {c['tfinal']}, steps {c['steps']})")
        if c["delta_t"] <= 0:
            errors.append("deltaT must be > 0")
        if not (0 < c["beta1"] < 1 and 0 < c["beta2"] < 1):
            errors.append("beta1 and beta2 must be in (0, 1)")
        if c["orth_reg_weight"] < 0:
            errors.append("orth_reg_weight must be >= 0")
    elif c["lora_r"] <= 0:
        errors.append("lora_r must be > 0")
    if errors:
        raise SystemExit("make_case.py: invalid configuration:\n  - " + "\n  - ".join(errors))
    if isinstance(c["lora_alpha"], float) and c["lora_alpha"].is_integer():
        c["lora_alpha"] = int(c["lora_alpha"])
    return c


def make_tokens(c, rng):
    """Token batches with structure a tiny model can learn: a sparse random Markov chain for the
    causal LMs; for classification, class-specific marker tokens mixed into random text."""
    import numpy as np

    V, B, T, n = c["vocab"], c["batch"], c["seq_len"], c["num_batches"]
    batches, labels = [], None
    if c["family"] == "bert":
        k = c["num_labels"]
        markers = rng.permutation(np.arange(1, V))[: k * 4].reshape(k, 4)
        labels = []
        for _ in range(n):
            y = rng.integers(0, k, size=B)
            rows = rng.integers(1, V, size=(B, T))
            for i in range(B):
                where = rng.random(T) < 0.3
                rows[i, where] = rng.choice(markers[y[i]], size=int(where.sum()))
            batches.append(rows.tolist())
            labels.append(y.tolist())
        return batches, labels
    succ = [rng.choice(V, size=int(rng.integers(1, 4)), replace=False) for _ in range(V)]
    for _ in range(n):
        rows = []
        for _ in range(B):
            t = int(rng.integers(0, V))
            row = [t]
            for _ in range(T - 1):
                t = int(rng.choice(succ[t])) if rng.random() < 0.85 else int(rng.integers(0, V))
                row.append(t)
            rows.append(row)
        batches.append(rows)
    return batches, labels


def build_base(c):
    import transformers as tf

    fam = c["family"]
    if fam == "llama":
        cfg = tf.LlamaConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["intermediate"],
                             num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                             num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"], max_position_embeddings=128,
                             rms_norm_eps=c["rms_norm_eps"], tie_word_embeddings=c["tie_word_embeddings"], bos_token_id=1,
                             eos_token_id=2, attention_dropout=0.0)
        return tf.LlamaForCausalLM(cfg)
    if fam == "gpt2":
        cfg = tf.GPT2Config(vocab_size=c["vocab"], n_embd=c["hidden"], n_layer=c["layers"], n_head=c["heads"],
                            n_inner=None if c["intermediate"] == 4 * c["hidden"] else c["intermediate"],
                            n_positions=128, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
        return tf.GPT2LMHeadModel(cfg)
    cfg = tf.BertConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                        num_attention_heads=c["heads"], intermediate_size=c["intermediate"],
                        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        num_labels=c["num_labels"])
    return tf.BertForSequenceClassification(cfg)


def load_base(c, path):
    import torch
    import transformers as tf

    cls = {"llama": tf.LlamaForCausalLM, "gpt2": tf.GPT2LMHeadModel, "bert": tf.BertForSequenceClassification}
    model = cls[c["family"]].from_pretrained(path, dtype=torch.float32, attn_implementation=c["attn_implementation"])
    model.name_or_path = ""  # as for a model made from its config: adapter configs name no base model
    return model


def peft_config(c):
    import peft

    task = "SEQ_CLS" if c["family"] == "bert" else "CAUSAL_LM"
    targets = c["target_regex"] if c["target_regex"] is not None else c["targets"].split(",")
    common = dict(task_type=task, target_modules=targets, lora_alpha=c["lora_alpha"], lora_dropout=0.0,
                  fan_in_fan_out=c["family"] == "gpt2")
    if c["method"] == "lora":
        return peft.LoraConfig(r=c["lora_r"], use_rslora=c["use_rslora"], **common)
    return peft.AdaLoraConfig(init_r=c["init_r"], target_r=c["target_r"], tinit=c["tinit"], tfinal=c["tfinal"],
                              deltaT=c["delta_t"], beta1=c["beta1"], beta2=c["beta2"],
                              orth_reg_weight=c["orth_reg_weight"], total_step=c["steps"], **common)


def save_adapter(model, path):
    """model.save_pretrained as PEFT does it, without the model card it adds next to the adapter."""
    model.save_pretrained(path)
    card = os.path.join(path, "README.md")
    if os.path.exists(card):
        os.remove(card)


class Margins(list):
    """One entry per AdaLoRA mask: the k-th smallest triplet score (the threshold: it and all below
    are pruned) and the (k+1)-th (the smallest kept), with their relative gap. A gap of a few float
    roundings means the mask is a tie that another summation order may break the other way."""

    step = None


def watch_thresholds(model):
    import torch

    allocator = model.base_model.rankallocator
    real_mask, real_kthvalue = allocator.mask_to_budget, torch.kthvalue
    margins = Margins()

    def mask_to_budget(m, budget):
        def kthvalue(scores, k, *a, **kw):
            s = torch.sort(scores.detach().double()).values
            pruned, kept = s[k - 1].item(), s[k].item() if k < len(s) else float("inf")
            margins.append({"step": margins.step, "k": int(k), "threshold": pruned, "smallest_kept": kept,
                            "rel_gap": (kept - pruned) / max(abs(kept), 1e-30)})
            return real_kthvalue(scores, k, *a, **kw)

        torch.kthvalue = kthvalue
        try:
            return real_mask(m, budget)
        finally:
            torch.kthvalue = real_kthvalue

    allocator.mask_to_budget = mask_to_budget
    return margins


def jsonable(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):  # enums (task_type, peft_type)
        return v.value
    return v


def make_case(c, out_dir, threads=1, log=print, perturb=False):
    """Writes the case for configuration c (as resolve() returns it) into out_dir. perturb: after
    adapter_init is saved, move its first lora_A element by one float32 ulp (see check_stable)."""
    import numpy as np
    import peft
    import safetensors.torch
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*(invalid shape|did not match any targeted module|deprecated).*")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    base_dir = os.path.join(out_dir, "base")

    torch.manual_seed(c["seed"])
    build_base(c).save_pretrained(base_dir)
    batches, labels = make_tokens(c, np.random.default_rng(c["seed"]))

    torch.manual_seed(c["seed"] + 1)
    model = peft.get_peft_model(load_base(c, base_dir), peft_config(c))
    save_adapter(model, os.path.join(out_dir, "adapter_init"))
    if perturb:
        with torch.no_grad():
            a = next(p for n, p in model.named_parameters() if "lora_A" in n).view(-1)
            a[0] = torch.nextafter(a[0], torch.tensor(1.0))
    ada = c["method"] == "adalora"
    lora_cfg = model.peft_config["default"]

    adalora_layers = {}
    if ada:
        from peft.tuners.adalora import AdaLoraLayer

        adalora_layers = {n: m for n, m in model.named_modules() if isinstance(m, AdaLoraLayer)}
    modules = sorted(adalora_layers) if ada else None
    margins = watch_thresholds(model) if ada else []

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=c["weight_decay"])
    x = [torch.tensor(b, dtype=torch.long) for b in batches]
    y = [torch.tensor(l, dtype=torch.long) for l in labels] if labels is not None else None
    model.train()
    trace = []
    micro = 0
    for step in range(c["steps"]):
        total = 0.0
        for _ in range(c["grad_accum"]):
            ids = x[micro % len(x)]
            out = model(input_ids=ids, labels=y[micro % len(y)] if y is not None else ids)
            micro += 1
            loss = out.loss / c["grad_accum"]
            loss.backward()
            total += loss.item()
        opt.step()
        row = {"step": step, "loss": total}
        if ada:
            margins.step = step
            model.base_model.update_and_allocate(step)
            ranks = [int((adalora_layers[n].lora_E["default"] != 0).sum().item()) for n in modules]
            row["ranks"] = ranks
            row["budget"] = sum(ranks)
        opt.zero_grad()
        trace.append(row)

    save_adapter(model, os.path.join(out_dir, "adapter_final"))  # AdaLoRA: slices by rank_pattern
    if ada:
        config = {
            "target_modules": jsonable(lora_cfg.target_modules),
            "lora_alpha": lora_cfg.lora_alpha,
            "rank_pattern": lora_cfg.rank_pattern,
            "target_r": lora_cfg.target_r,
            "init_r": lora_cfg.init_r,
            "tinit": lora_cfg.tinit,
            "tfinal": lora_cfg.tfinal,
            "deltaT": lora_cfg.deltaT,
            "beta1": lora_cfg.beta1,
            "beta2": lora_cfg.beta2,
            "orth_reg_weight": lora_cfg.orth_reg_weight,
            "total_step": lora_cfg.total_step,
        }
    else:
        config = jsonable(lora_cfg.to_dict())
        config["inference_mode"] = False
    generator = {"script": "scripts/golden/make_case.py", "options": c}
    if margins:
        generator["tightest_mask"] = min(margins, key=lambda m: m["rel_gap"])
    reference = {"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                 "device": "cpu", "dtype": "float32", "generator": generator}
    with open(os.path.join(out_dir, "trace.json"), "w") as f:
        json.dump({"modules": modules, "config": config, "trace": trace, "reference": reference}, f)
    data = {"batches": batches, "labels": labels,
            "optimizer": {"name": "AdamW", "lr": c["lr"], "weight_decay": c["weight_decay"],
                          "betas": [0.9, 0.999], "eps": 1e-08},
            "loop": LOOP, "grad_accum": c["grad_accum"], "steps": c["steps"]}
    with open(os.path.join(out_dir, "data.json"), "w") as f:
        json.dump(data, f)

    # Logits for batches[0] in eval mode: the base alone, and base + adapter_final as PEFT loads it.
    with torch.no_grad():
        base = load_base(c, base_dir).eval()
        ref = {"base": base(input_ids=x[0]).logits.float().contiguous()}
        final = peft.PeftModel.from_pretrained(load_base(c, base_dir), os.path.join(out_dir, "adapter_final")).eval()
        ref["final"] = final(input_ids=x[0]).logits.float().contiguous()
        # The saved adapter must be the trained one: always for LoRA; for AdaLoRA when the run ended
        # with the mask frozen (tfinal > 0), since only then are the pruned E entries zero at the end.
        if not ada or c["tfinal"] > 0:
            trained = model.eval()(input_ids=x[0]).logits.float()
            gap = (trained - ref["final"]).abs().max().item()
            if gap > 1e-5:
                raise RuntimeError(f"adapter_final as PEFT loads it differs from the trained model (max {gap:g})")
    safetensors.torch.save_file(ref, os.path.join(out_dir, "ref_logits.safetensors"))
    if log:
        last = trace[-1]
        log(f"make_case.py: {out_dir}: {c['family']} {c['method']} {c['steps']} steps, loss "
            f"{trace[0]['loss']:.4f} -> {last['loss']:.4f}" + (f", budget {last['budget']}" if ada else ""))
    return {"modules": modules, "config": config, "trace": trace, "margins": list(margins)}


# The tolerances of the golden cases (tests/fixtures/golden/README.md, "What matching means").
LOSS_REL, ADAPTER_REL, LOGITS_ABS = 1e-4, 1e-3, 1e-4


def compare_cases(dir_a, dir_b):
    """The golden comparison between two cases of the same configuration: the worst loss deviation,
    budget mismatches, whether the final rank_pattern is equal, the worst adapter tensor, the
    logits; with "ok" true when all are within the golden tolerances."""
    import safetensors.torch
    import torch

    ta, tb = (json.load(open(os.path.join(d, "trace.json"))) for d in (dir_a, dir_b))
    rels = [abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-12) for a, b in zip(ta["trace"], tb["trace"])]
    over = [i for i, r in enumerate(rels) if r > LOSS_REL]
    budgets = sum(a.get("budget") != b.get("budget") for a, b in zip(ta["trace"], tb["trace"]))
    pattern_equal = ta["config"].get("rank_pattern") == tb["config"].get("rank_pattern")
    aa, ab = (safetensors.torch.load_file(os.path.join(d, "adapter_final", "adapter_model.safetensors"))
              for d in (dir_a, dir_b))
    worst, worst_key = 0.0, None
    for k, t in aa.items():
        if k not in ab or ab[k].shape != t.shape:
            worst, worst_key = float("inf"), k
            break
        if t.numel():
            n = t.double().norm().item()
            r = (t.double() - ab[k].double()).norm().item() / (n if n else 1.0)
            if r > worst:
                worst, worst_key = r, k
    la, lb = (safetensors.torch.load_file(os.path.join(d, "ref_logits.safetensors")) for d in (dir_a, dir_b))
    logits = max((la[k].double() - lb[k].double()).abs().max().item() if la[k].shape == lb[k].shape
                 else float("inf") for k in la)
    ok = max(rels) <= LOSS_REL and budgets == 0 and pattern_equal and worst <= ADAPTER_REL and logits <= LOGITS_ABS
    return {"loss_max_rel": max(rels), "first_loss_step_over": over[0] if over else None,
            "budget_mismatches": budgets, "rank_pattern_equal": pattern_equal, "adapter_max_rel": worst,
            "adapter_worst_tensor": worst_key, "logits_max_abs": logits, "ok": ok}


def check_stable(c, out_dir, threads=1):
    """Makes the case a second time as float rounding alone could have made it (the other attention
    kernel of transformers: the same maths summed in another order; and one ulp on one initial
    adapter weight) and compares the two. A configuration whose reference does not agree with
    itself within the golden tolerances amplifies rounding (typically Adam on near-zero gradients
    over a long run): no other implementation can be expected to match it, so it is not a usable
    golden case."""
    other = dict(c, attn_implementation="sdpa" if c["attn_implementation"] == "eager" else "eager")
    twin = out_dir.rstrip("/") + ".twin"
    try:
        make_case(other, twin, threads=threads, log=None, perturb=True)
        return compare_cases(out_dir, twin)
    finally:
        shutil.rmtree(twin, ignore_errors=True)


def main(argv):
    args = parse_args(argv)
    c = resolve(args)
    if args.print_config:
        print(json.dumps(c, indent=2))
        return 0
    make_case(c, args.out_dir, threads=args.threads, log=None if args.quiet else print)
    if args.check_stable:
        s = check_stable(c, args.out_dir, threads=args.threads)
        print(f"make_case.py: {args.out_dir}: {'stable' if s['ok'] else 'NOT STABLE'} when only float rounding "
              f"changes: {json.dumps(s)}")
        if not s["ok"]:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
