# Causal-LM adapters trained by `peft train` (AdaLoRA with each way of naming targets, LoRA, rsLoRA,
# GPT-2's Conv1D) load in PEFT and give peft.cpp's logits within 1e-5.
import pytest
import torch

from interop_util import (
    ADALORA,
    LORA,
    base_dir,
    check_close,
    check_effect,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    eval_jsonl,
    file_modules,
    adapted_modules,
    load_causal_lm,
    load_peft,
    logits_of,
    read_config,
    scratch,
    text_records,
    train,
    write_jsonl,
    zero_rank_modules,
)

LLAMA_REGEX = r"model\.layers\.\d+\.(self_attn\.(q|v)_proj|mlp\.(gate|down)_proj)"

TARGETS = {
    "all-linear": (["--target_modules", "all-linear"], "all-linear"),
    "list": (["--target_modules", "q_proj,k_proj,v_proj,o_proj,down_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]),
    "regex": (["--target_modules_regex", LLAMA_REGEX], LLAMA_REGEX),
}


@pytest.fixture(scope="module")
def work():
    d = scratch("causal_lm")
    return {"dir": d, "train": write_jsonl(d / "train.jsonl", text_records()), "eval": eval_jsonl(d)}


def compare(work, name, model_dir, adapter, expect_zero_rank):
    """peft.cpp's logits with `adapter` against PEFT's (base + adapter), and the base models'."""
    dump = work["dir"] / f"{name}.safetensors"
    ours = cpp_logits(model_dir, work["eval"], dump, adapter=adapter)
    ours_base = cpp_logits(model_dir, work["eval"], work["dir"] / f"{name}-base.safetensors")
    mask = ours["attention_mask"]
    assert not mask.bool().all(), "the evaluated batch should be padded"
    assert torch.equal(ours["input_ids"], ours_base["input_ids"])

    base = load_causal_lm(model_dir)
    theirs_base = logits_of(base, ours)
    check_close(f"{name}: base model, peft.cpp vs transformers", ours_base["logits"], theirs_base, mask)

    config = read_config(adapter)
    if expect_zero_rank:
        assert zero_rank_modules(config), f"no module pruned to rank 0 in rank_pattern: {config['rank_pattern']}"
    model = load_peft(base, adapter)
    assert adapted_modules(model) == file_modules(adapter), "PEFT adapted other modules than the adapter file holds"
    theirs = logits_of(model, ours)
    check_effect(name, theirs, theirs_base, mask)
    return check_close(f"{name}: peft train adapter, peft.cpp vs PEFT", ours["logits"], theirs, mask)


@pytest.mark.parametrize("targets", list(TARGETS))
def test_adalora_targets_load_in_peft(work, targets):
    flags, written = TARGETS[targets]
    model_dir = base_dir("tiny")
    adapter = train(model_dir, work["train"], work["dir"] / f"ada-{targets}", *ADALORA, *flags)
    config = read_config(adapter)
    assert config["peft_type"] == "ADALORA"
    # PEFT expands "all-linear" only as a string; a list ["all-linear"] names a module that does not exist.
    assert config["target_modules"] == written
    assert config["total_step"] == 12 and config["rank_pattern"]
    compare(work, f"AdaLoRA llama target_modules {targets}", model_dir, adapter, expect_zero_rank=True)


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_lora_loads_in_peft(work, rslora):
    model_dir = base_dir("tiny")
    flags = [*LORA, "--target_modules", "q_proj,v_proj,up_proj", *(["--use_rslora"] if rslora else [])]
    adapter = train(model_dir, work["train"], work["dir"] / f"lora-{rslora}", *flags)
    config = read_config(adapter)
    assert config["peft_type"] == "LORA" and config["use_rslora"] is rslora
    compare(work, "rsLoRA llama" if rslora else "LoRA llama", model_dir, adapter, expect_zero_rank=False)


@pytest.mark.parametrize("method", ["adalora", "lora"])
def test_gpt2_conv1d_loads_in_peft(work, method):
    model_dir = base_dir("gpt2_a")
    flags = (ADALORA if method == "adalora" else LORA) + ["--target_modules", "c_attn,c_proj,c_fc"]
    adapter = train(model_dir, work["train"], work["dir"] / f"gpt2-{method}", *flags)
    config = read_config(adapter)
    assert config["fan_in_fan_out"] is True, "GPT-2's Conv1D weights need fan_in_fan_out"
    compare(work, f"{'AdaLoRA' if method == 'adalora' else 'LoRA'} gpt2 (Conv1D)", model_dir, adapter,
            expect_zero_rank=method == "adalora")
