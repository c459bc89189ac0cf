# `peft export --lora` output loads in PEFT as a LoRA adapter with the AdaLoRA adapter's logits, and
# `peft merge` output loads with transformers alone with the logits of base + adapter in PEFT.
import pytest

from interop_util import (
    ADALORA,
    LORA,
    adapted_modules,
    base_dir,
    check_close,
    check_effect,
    classification_records,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    eval_jsonl,
    file_modules,
    load_causal_lm,
    load_classifier,
    load_peft,
    logits_of,
    read_config,
    run_cli,
    scratch,
    text_records,
    train,
    write_jsonl,
    zero_rank_modules,
)


# name -> (base, task, peft train flags)
CASES = {
    "llama-adalora": ("tiny", "lm", [*ADALORA, "--target_modules", "all-linear"]),
    "llama-lora": ("tiny", "lm", [*LORA, "--target_modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"]),
    "gpt2-adalora": ("gpt2_a", "lm", [*ADALORA, "--target_modules", "c_attn,c_proj,c_fc"]),
    "bert-adalora": ("bert_a", "cls", [*ADALORA, "--target_modules", "query,key,value,dense", "--modules_to_save", "classifier"]),
}


@pytest.fixture(scope="module")
def work():
    d = scratch("export_merge")
    cls = classification_records()
    return {
        "dir": d,
        "lm": (write_jsonl(d / "train-lm.jsonl", text_records()), eval_jsonl(d)),
        "cls": (write_jsonl(d / "train-cls.jsonl", cls),
                write_jsonl(d / "eval-cls.jsonl", sorted(cls[:6], key=lambda r: len(r["text"])))),
    }


def trained(work, name):
    """The base directory, the adapter `peft train` makes for case `name`, the evaluation data and
    a loader of the base model."""
    base, task, flags = CASES[name]
    model_dir = base_dir(base)
    train_data, eval_data = work[task]
    adapter = train(model_dir, train_data, work["dir"] / name, *flags)
    return model_dir, adapter, eval_data, (load_causal_lm if task == "lm" else load_classifier), task


@pytest.mark.parametrize("name", ["llama-adalora", "gpt2-adalora"])
def test_exported_lora_matches_adalora_in_peft(work, name):
    model_dir, adapter, eval_data, load, _ = trained(work, name)
    pruned = zero_rank_modules(read_config(adapter))
    assert pruned, "the AdaLoRA adapter should have modules pruned to rank 0"
    exported = work["dir"] / f"{name}-lora"
    run_cli("export", "--lora", adapter, "--output", exported)
    config = read_config(exported)
    assert config["peft_type"] == "LORA"
    assert config["rank_pattern"] and config["alpha_pattern"]
    assert not {p[: -len(".lora_E")] for p in pruned} & file_modules(exported), "rank-0 modules must be left out"

    batch = cpp_logits(model_dir, eval_data, work["dir"] / f"{name}-export.safetensors", adapter=exported)
    mask = batch["attention_mask"]
    base_logits = logits_of(load(model_dir), batch)
    ada = load_peft(load(model_dir), adapter)
    ada_logits = logits_of(ada, batch)
    check_effect(name, ada_logits, base_logits, mask)
    lora = load_peft(load(model_dir), exported)
    assert type(lora.peft_config["default"]).__name__ == "LoraConfig"
    assert adapted_modules(lora) == file_modules(exported)
    lora_logits = logits_of(lora, batch)
    check_close(f"{name}: exported LoRA in PEFT vs AdaLoRA in PEFT", lora_logits, ada_logits, mask)
    check_close(f"{name}: exported LoRA, peft.cpp vs PEFT", batch["logits"], lora_logits, mask)


@pytest.mark.parametrize("name", list(CASES))
def test_merged_checkpoint_matches_peft(work, name):
    model_dir, adapter, eval_data, load, task = trained(work, name)
    merged = work["dir"] / f"{name}-merged"
    run_cli("merge", "--model", model_dir, "--adapter", adapter, "--output", merged)

    batch = cpp_logits(merged, eval_data, work["dir"] / f"{name}-merged.safetensors")
    mask = batch["attention_mask"] if task == "lm" else None
    base_logits = logits_of(load(model_dir), batch)
    peft_logits = logits_of(load_peft(load(model_dir), adapter), batch)
    check_effect(name, peft_logits, base_logits, mask)
    merged_logits = logits_of(load(merged), batch)  # transformers alone, no PEFT
    check_close(f"{name}: merged checkpoint in transformers vs base + adapter in PEFT", merged_logits, peft_logits, mask)
    check_close(f"{name}: merged checkpoint, peft.cpp vs transformers", batch["logits"], merged_logits, mask)
