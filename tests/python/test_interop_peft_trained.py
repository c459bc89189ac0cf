# Adapters trained a few steps by PEFT itself and saved with save_pretrained (AdaLoRA with its final
# mask, LoRA with rank/alpha patterns, rsLoRA, GPT-2, a BERT classifier) give PEFT's logits in peft.cpp.
import pytest
import torch

from interop_util import (
    base_dir,
    check_close,
    check_effect,
    classification_records,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    eval_jsonl,
    load_causal_lm,
    load_classifier,
    logits_of,
    read_config,
    scratch,
    write_jsonl,
    zero_rank_modules,
)

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS = 12


def adalora_config(**kw):
    import peft

    # The whole schedule in 12 steps: masks every 2 steps after step 2, the final mask at step 8.
    return peft.AdaLoraConfig(init_r=4, target_r=1, tinit=2, tfinal=4, deltaT=2, total_step=STEPS, lora_alpha=8, **kw)


def peft_train(model, config, batches, lr):
    """PEFT's own loop: loss (with AdaLoRA's orthogonal penalty), AdamW step, update_and_allocate."""
    import peft

    torch.manual_seed(0)
    pm = peft.get_peft_model(model, config)
    pm.train()
    optimizer = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr)
    for step in range(STEPS):
        inputs, labels = batches[step % len(batches)]
        pm(input_ids=inputs, labels=labels).loss.backward()
        optimizer.step()
        if isinstance(config, peft.AdaLoraConfig):
            pm.base_model.update_and_allocate(step)
        optimizer.zero_grad()
    return pm.eval()


def lm_batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, 256, (8, 20), generator=g) for _ in range(3)]
    return [(x, x) for x in ids]


def cls_batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, 256, (8, 16), generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(3)]


@pytest.fixture(scope="module")
def work():
    d = scratch("peft_trained")
    cls = classification_records()
    return {"dir": d, "lm": eval_jsonl(d),
            "cls": write_jsonl(d / "eval-cls.jsonl", sorted(cls[:6], key=lambda r: len(r["text"])))}


def compare(work, name, model_dir, pm, task, base_logits_of):
    """Saves `pm` with save_pretrained, loads it in peft.cpp (`peft eval --adapter`) and compares
    peft.cpp's logits with those of `pm` on the same tokens."""
    adapter = work["dir"] / name
    pm.save_pretrained(str(adapter))
    batch = cpp_logits(model_dir, work[task], work["dir"] / f"{name}.safetensors", adapter=adapter)
    mask = batch["attention_mask"] if task == "lm" else None
    theirs = logits_of(pm, batch)
    check_effect(name, theirs, base_logits_of(batch), mask)
    check_close(f"{name}: PEFT-trained adapter, peft.cpp vs PEFT", batch["logits"], theirs, mask)
    return adapter


def test_peft_adalora_loads_in_peft_cpp(work):
    model_dir = base_dir("tiny")
    pm = peft_train(load_causal_lm(model_dir), adalora_config(target_modules=LLAMA_LINEAR), lm_batches(), lr=0.05)
    adapter = compare(work, "PEFT AdaLoRA llama", model_dir, pm, "lm", lambda b: logits_of(load_causal_lm(model_dir), b))
    config = read_config(adapter)
    assert config["peft_type"] == "ADALORA"
    assert zero_rank_modules(config), f"PEFT's final mask pruned no module to rank 0: {config['rank_pattern']}"


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_peft_lora_loads_in_peft_cpp(work, rslora):
    import peft

    model_dir = base_dir("tiny")
    # Per-module ranks and alphas, looked up by PEFT's pattern rules on both sides.
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_LINEAR, use_rslora=rslora,
                             rank_pattern={"v_proj": 2, r"layers\.1\.mlp\.up_proj": 6}, alpha_pattern={"down_proj": 16})
    pm = peft_train(load_causal_lm(model_dir), config, lm_batches(1), lr=0.02)
    name = "PEFT rsLoRA llama" if rslora else "PEFT LoRA llama"
    compare(work, name, model_dir, pm, "lm", lambda b: logits_of(load_causal_lm(model_dir), b))


def test_peft_gpt2_adalora_loads_in_peft_cpp(work):
    model_dir = base_dir("gpt2_a")
    config = adalora_config(target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    pm = peft_train(load_causal_lm(model_dir), config, lm_batches(2), lr=0.05)
    compare(work, "PEFT AdaLoRA gpt2 (Conv1D)", model_dir, pm, "lm", lambda b: logits_of(load_causal_lm(model_dir), b))


@pytest.mark.parametrize("method", ["adalora", "lora"])
def test_peft_bert_classifier_loads_in_peft_cpp(work, method):
    import peft

    model_dir = base_dir("bert_a")
    kw = {"task_type": "SEQ_CLS", "target_modules": ["query", "key", "value", "dense"], "modules_to_save": ["classifier"]}
    config = adalora_config(**kw) if method == "adalora" else peft.LoraConfig(r=4, lora_alpha=8, **kw)
    pm = peft_train(load_classifier(model_dir), config, cls_batches(), lr=0.05 if method == "adalora" else 0.02)
    compare(work, f"PEFT {'AdaLoRA' if method == 'adalora' else 'LoRA'} bert classifier", model_dir, pm, "cls",
            lambda b: logits_of(load_classifier(model_dir), b))
