# Golden cases made at test time by scripts/golden/make_case.py (real transformers + PEFT, seeded
# random configurations) and replayed with `peft replay`, which must match within the golden tolerances.
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

SOURCE = os.environ["PEFT_SOURCE_DIR"]
CLI = os.environ["PEFT_CLI"]
TMP = os.path.join(os.environ["PEFT_TEST_TMP"], "golden_random")
COMMITTED = os.path.join(os.environ["PEFT_TEST_DATA"], "golden")
sys.path.insert(0, os.path.join(SOURCE, "scripts", "golden"))

import make_case  # noqa: E402

# The tolerances of the golden cases (shared/golden/README.md); never widened here.
LOSS_REL, ADAPTER_REL, LOGITS_ABS = 1e-4, 1e-3, 1e-4

# Fixed seeds, so that every machine makes the same cases; options after a seed override what it
# draws. Together they cover every family and both methods, GQA and a tied lm_head, a regex
# target, modules_to_save, runs of a few hundred steps, gradient accumulation, runs that end with
# the mask frozen (tfinal > 0) and without (tfinal 0, the last mask some steps before the end).
CASES = {
    "llama_gqa_adalora_accum_tfinal0": ["--random", "31", "--delta-t", "7"],
    "bert_adalora_long": ["--random", "37"],
    "gpt2_adalora_regex_accum": ["--random", "36"],
    "bert_3labels_adalora_accum": ["--random", "33", "--tinit", "0"],
    "llama_lora_long_accum": ["--random", "55"],
    "gpt2_lora": ["--random", "50"],
    "llama_tied_lora_rslora": ["--random", "104", "--family", "llama", "--method", "lora", "--use-rslora",
                               "--tie-word-embeddings"],
}
NEVER_CALLED = "update_and_allocate() was never called"


def configuration(name):
    return make_case.resolve(make_case.parse_args([os.path.join(TMP, name)] + CASES[name]))


def replay(case_dir):
    env = dict(os.environ, PEFT_NUM_THREADS=os.environ.get("PEFT_NUM_THREADS", "1"))
    p = subprocess.run([CLI, "replay", case_dir], capture_output=True, text=True, env=env, timeout=600)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    summary = json.loads(lines[-1])["summary"] if lines and '"summary"' in lines[-1] else None
    return p.returncode, summary, p


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in h.items()}


def make(name):
    out = os.path.join(TMP, name)
    make_case.make_case(configuration(name), out, log=None)
    return out


def check_replay(case_dir, c):
    rc, s, p = replay(case_dir)
    figures = {k: s.get(k) for k in ("loss_max_rel_err", "budget_mismatches", "rank_pattern_mismatches",
                                     "adapter_max_rel_err", "adapter_worst_tensor", "logits_max_abs_err")} if s else {}
    print(f"{os.path.basename(case_dir)}: {c['family']} {c['method']} steps {c['steps']} grad_accum "
          f"{c['grad_accum']}: rc {rc} {json.dumps(figures)}")
    detail = f"replay of {case_dir} ({json.dumps(c)}):\n{p.stderr[-3000:]}\n{p.stdout[-3000:]}"
    if rc != 0 and s is not None:
        # Tell float drift from a defect: does the reference agree with itself when only float
        # rounding changes (make_case.check_stable)? If not, the seed makes an unusable case.
        st = make_case.check_stable(c, case_dir)
        detail += (f"\nreference made again with other rounding: {json.dumps(st)}\n" +
                   ("the reference agrees with itself: a deviation of peft.cpp" if st["ok"] else
                    "the reference does not agree with itself: float drift, this seed is not a usable case"))
    assert s is not None, detail
    assert rc == 0, detail
    assert NEVER_CALLED not in p.stderr, detail  # replay calls it after every optimizer step
    # The summary must say what exit code 0 claims, with every comparison made.
    assert s["ok"] is True and s["steps"] == c["steps"], detail
    assert s["loss_max_rel_err"] <= LOSS_REL, detail
    assert s["budget_mismatches"] == 0 and s["rank_pattern_mismatches"] == 0, detail
    assert isinstance(s["adapter_max_rel_err"], float) and s["adapter_max_rel_err"] <= ADAPTER_REL, detail
    assert s["logits_max_abs_err"] <= LOGITS_ABS, detail
    assert s["logits_compared"] == "final(trained), final(adapter_final loaded), base", detail


def test_cases_cover_families_methods_long_runs_and_accumulation():
    cs = [configuration(n) for n in CASES]
    assert {c["family"] for c in cs} == {"llama", "gpt2", "bert"}
    assert {c["method"] for c in cs} == {"adalora", "lora"}
    assert {c["family"] for c in cs if c["method"] == "adalora"} == {"llama", "gpt2", "bert"}
    assert max(c["steps"] for c in cs) >= 200
    assert max(c["grad_accum"] for c in cs) > 1
    assert any(c["family"] == "llama" and c["kv_heads"] < c["heads"] for c in cs)
    assert any(c["family"] == "llama" and c["tie_word_embeddings"] for c in cs)
    assert any(c["target_regex"] for c in cs) and any(c["use_rslora"] for c in cs)
    ada = [c for c in cs if c["method"] == "adalora"]
    assert any(c["tfinal"] > 0 for c in ada)
    # A run that ends in the budgeting phase some steps after its last mask: the pruned E entries
    # have moved off zero again, and the saved adapter_final drops them.
    assert any(c["tfinal"] == 0 and (c["steps"] - 1) % c["delta_t"] != 0 for c in ada)
    # A first optimizer step of more loss computations than tinit + deltaT (the warning's limit).
    assert any(c["grad_accum"] > c["tinit"] + c["delta_t"] for c in ada)


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_case_replays_within_tolerance(name):
    c = configuration(name)
    check_replay(make(name), c)


def test_generator_writes_the_committed_format_and_replay_catches_a_deviation():
    """A case configured like the committed llama_a has its files, keys, dtypes and shapes; and
    replay, which accepts it, rejects it once one recorded loss is moved by 1e-3."""
    name = "like_llama_a"
    c = make_case.resolve(make_case.parse_args([os.path.join(TMP, name), "--family", "llama", "--kv-heads", "2"]))
    out = os.path.join(TMP, name)
    make_case.make_case(c, out, log=None)
    ref = os.path.join(COMMITTED, "llama_a")

    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

    assert files(out) == files(ref)
    for f in ["data.json", "trace.json"]:
        a, b = (json.load(open(os.path.join(d, f))) for d in (ref, out))
        assert list(a) == list(b), f
    a, b = (json.load(open(os.path.join(d, "trace.json"))) for d in (ref, out))
    assert list(a["config"]) == list(b["config"]) and a["modules"] == b["modules"]
    assert [list(r) for r in a["trace"]] == [list(r) for r in b["trace"]]
    assert [r["budget"] for r in a["trace"]] == [r["budget"] for r in b["trace"]]  # the schedule
    a, b = (json.load(open(os.path.join(d, "data.json"))) for d in (ref, out))
    assert {k: v for k, v in a.items() if k != "batches"} == {k: v for k, v in b.items() if k != "batches"}
    for d in ["adapter_init", "adapter_final"]:
        a, b = (json.load(open(os.path.join(x, d, "adapter_config.json"))) for x in (ref, out))
        assert set(a) == set(b), d
    for f in ["base/model.safetensors", "adapter_init/adapter_model.safetensors", "ref_logits.safetensors"]:
        assert safetensors_header(os.path.join(ref, f)) == safetensors_header(os.path.join(out, f)), f
    a, b = (safetensors_header(os.path.join(d, "adapter_final/adapter_model.safetensors")) for d in (ref, out))
    assert set(a) == set(b) and {v[0] for v in b.values()} == {"F32"}
    pattern = json.load(open(os.path.join(out, "trace.json")))["config"]["rank_pattern"]
    for module, keep in pattern.items():  # adapter_final is sliced to the final rank_pattern
        key = "base_model.model." + module
        assert b[key][1] == (sum(keep), 1) and b[key[: -len("lora_E")] + "lora_A"][1][0] == sum(keep)
    check_replay(out, c)

    moved = out + ".moved"
    shutil.rmtree(moved, ignore_errors=True)
    shutil.copytree(out, moved)
    t = json.load(open(os.path.join(moved, "trace.json")))
    t["trace"][37]["loss"] *= 1.001
    json.dump(t, open(os.path.join(moved, "trace.json"), "w"))
    rc, s, p = replay(moved)
    assert rc == 1 and s is not None and s["first_loss_divergence_step"] == 37, p.stdout[-2000:] + p.stderr
