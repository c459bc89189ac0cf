# Sequence-classifier adapters trained by `peft train` with modules_to_save (BERT, RoBERTa; AdaLoRA and
# LoRA) load in PEFT and give peft.cpp's logits within 1e-5.
import pytest
import torch

from interop_util import (
    ADALORA,
    CLI,
    LORA,
    adapted_modules,
    base_dir,
    check_close,
    check_effect,
    classification_records,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    file_modules,
    load_classifier,
    load_peft,
    logits_of,
    read_config,
    scratch,
    train,
    write_jsonl,
    zero_rank_modules,
)



@pytest.fixture(scope="module")
def work():
    d = scratch("classifier")
    records = classification_records()
    assert {r["label"] for r in records} == {0, 1}
    # The first 6 texts, shortest first, some of each label: a padded evaluation batch.
    evaluated = sorted(records[:6], key=lambda r: len(r["text"]))
    assert {r["label"] for r in evaluated} == {0, 1}
    return {"dir": d, "train": write_jsonl(d / "train.jsonl", records), "eval": write_jsonl(d / "eval.jsonl", evaluated)}


def roberta_dir(work):
    """A small RobertaForSequenceClassification with random weights, written at test time
    (positions count from padding_idx + 1; the classifier is dense + out_proj)."""
    import transformers

    d = work["dir"] / "roberta"
    if not (d / "config.json").exists():
        torch.manual_seed(0)
        config = transformers.RobertaConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, max_position_embeddings=130, pad_token_id=1,
                                            bos_token_id=0, eos_token_id=2, type_vocab_size=1, num_labels=2,
                                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = transformers.RobertaForSequenceClassification(config)
        model.save_pretrained(str(d))
        (d / "tokenizer.json").write_bytes((base_dir("tiny") / "tokenizer.json").read_bytes())
    return d


def compare(work, name, model_dir, adapter, expect_zero_rank):
    ours = cpp_logits(model_dir, work["eval"], work["dir"] / f"{name}.safetensors", adapter=adapter)
    ours_base = cpp_logits(model_dir, work["eval"], work["dir"] / f"{name}-base.safetensors")
    assert not ours["attention_mask"].bool().all(), "the evaluated batch should be padded"
    assert ours["logits"].shape == (6, 2)

    base = load_classifier(model_dir)
    theirs_base = logits_of(base, ours)
    check_close(f"{name}: base model, peft.cpp vs transformers", ours_base["logits"], theirs_base)

    config = read_config(adapter)
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["classifier"]
    if expect_zero_rank:
        assert zero_rank_modules(config), f"no module pruned to rank 0 in rank_pattern: {config['rank_pattern']}"
    model = load_peft(base, adapter)
    assert adapted_modules(model) == file_modules(adapter), "PEFT adapted other modules than the adapter file holds"
    theirs = logits_of(model, ours)
    check_effect(name, theirs, theirs_base)
    # The loss peft.cpp evaluates on that batch is PEFT's too (classification: cross-entropy over examples).
    loss = torch.nn.functional.cross_entropy(theirs, ours["labels"]).item()
    ours_loss = torch.nn.functional.cross_entropy(ours["logits"], ours["labels"]).item()
    assert abs(loss - ours_loss) <= 1e-5
    return check_close(f"{name}: peft train adapter, peft.cpp vs PEFT", ours["logits"], theirs)


@pytest.mark.parametrize("method", ["adalora", "lora"])
def test_bert_classifier_loads_in_peft(work, method):
    model_dir = base_dir("bert_a")
    flags = (ADALORA if method == "adalora" else LORA) + ["--target_modules", "query,key,value,dense",
                                                          "--modules_to_save", "classifier"]
    adapter = train(model_dir, work["train"], work["dir"] / f"bert-{method}", *flags)
    compare(work, f"{'AdaLoRA' if method == 'adalora' else 'LoRA'} bert classifier", model_dir, adapter,
            expect_zero_rank=method == "adalora")


@pytest.mark.parametrize("method", ["adalora", "lora"])
def test_roberta_classifier_loads_in_peft(work, method):
    model_dir = roberta_dir(work)
    flags = (ADALORA if method == "adalora" else LORA) + ["--target_modules", "query,key,value,dense",
                                                          "--modules_to_save", "classifier"]
    adapter = train(model_dir, work["train"], work["dir"] / f"roberta-{method}", *flags)
    compare(work, f"{'AdaLoRA' if method == 'adalora' else 'LoRA'} roberta classifier", model_dir, adapter,
            expect_zero_rank=method == "adalora")


def test_classifier_from_a_base_model_checkpoint(work):
    """A BertModel checkpoint (no "bert." prefix, no classifier: how sentence-transformers ship BERTs) with a
    config naming BertForSequenceClassification, as transformers reads it: the encoder under its prefix, a
    fresh classifier that training fills (modules_to_save). PEFT on transformers' reading of the same
    directory gives peft.cpp's logits."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    src = base_dir("bert_a")
    d = work["dir"] / "bert-base-checkpoint"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")}, str(d / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config.update(num_labels=2, id2label={"0": "other", "1": "budget"}, label2id={"other": 0, "budget": 1})
    (d / "config.json").write_text(json.dumps(config))
    shutil.copy(src / "tokenizer.json", d / "tokenizer.json")

    import subprocess

    r = subprocess.run([CLI, "eval", "--model", str(d), "--data", str(work["eval"])], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "newly initialised" in r.stderr and "classifier.weight" in r.stderr, r.stderr
    adapter = train(d, work["train"], work["dir"] / "bert-from-base", *LORA, "--target_modules", "query,value",
                    "--modules_to_save", "classifier")
    ours = cpp_logits(d, work["eval"], work["dir"] / "bert-from-base.safetensors", adapter=adapter)
    theirs = logits_of(load_peft(load_classifier(d), adapter), ours)
    check_close("bert classifier from a BertModel checkpoint: peft.cpp vs PEFT", ours["logits"], theirs)
