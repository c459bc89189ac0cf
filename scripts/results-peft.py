# The runs of docs/results.md made by Hugging Face PEFT itself (transformers + peft in .venv), with
# the same model, data, schedule and hyper-parameters as scripts/results.sh gives peft.cpp.
#
#   .venv/bin/python scripts/results-peft.py --method adalora --init_r 3 --target_r 2 --lora_alpha 6 \
#       --seed 1 --out .cache/results/runs/peft-adalora-3to2-s1.eval.json
#
# Writes {"eval_loss", "eval_accuracy", "eval_examples", "train_seconds", "final_train_loss",
# "rank_pattern_total"} as one JSON line. The order of the batches differs from peft.cpp's (each
# side shuffles with its own generator), so single runs agree in distribution, not number for number.
import argparse
import json
import math
import os
import sys
import time

import torch
from peft import AdaLoraConfig, LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def batches(tok, rows, size, max_length, order):
    for i in range(0, len(order), size):
        chunk = [rows[j] for j in order[i:i + size]]
        enc = tok([r["text"] for r in chunk], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        enc["labels"] = torch.tensor([r["label"] for r in chunk])
        yield enc


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=".cache/results/minilm-cls")
    p.add_argument("--train", default=".cache/results/train.jsonl")
    p.add_argument("--test", default=".cache/results/test.jsonl")
    p.add_argument("--method", choices=["lora", "adalora"], required=True)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--init_r", type=int, default=12)
    p.add_argument("--target_r", type=int, default=8)
    p.add_argument("--lora_alpha", type=float, required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    torch.set_num_threads(int(os.environ.get("PEFT_NUM_THREADS", "2")))
    torch.manual_seed(a.seed)
    train, test = read_jsonl(a.train), read_jsonl(a.test)
    steps = math.ceil(len(train) * a.epochs / a.batch_size)
    tok = AutoTokenizer.from_pretrained(a.model)
    # peft.cpp applies no dropout inside the model while training; neither does this run.
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    targets = ["query", "key", "value", "dense"]
    if a.method == "lora":
        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=a.r, lora_alpha=a.lora_alpha, lora_dropout=0.0,
                         target_modules=targets, modules_to_save=["classifier"])
    else:
        cfg = AdaLoraConfig(task_type=TaskType.SEQ_CLS, init_r=a.init_r, target_r=a.target_r,
                            lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=targets,
                            modules_to_save=["classifier"], tinit=steps // 10, tfinal=steps // 5,
                            deltaT=max(steps // 50, 1), total_step=steps)
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, a.warmup_steps, steps)
    gen = torch.Generator().manual_seed(a.seed)

    step, last = 0, float("nan")
    start = time.time()
    for _ in range(a.epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for batch in batches(tok, train, a.batch_size, a.max_length, order):
            loss = model(**batch).loss  # AdaLoRA's forward adds orth_reg_weight x the orthogonal penalty
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if a.method == "adalora":  # the 0-based optimizer step, after step(), before zero_grad()
                model.base_model.update_and_allocate(step)
            opt.zero_grad(set_to_none=True)
            step += 1
            last = loss.item()
            if step % 25 == 0:
                print(f"peft step {step}/{steps} loss {last:.4f} lr {sched.get_last_lr()[0]:.3g}", file=sys.stderr)
    seconds = time.time() - start

    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for batch in batches(tok, test, 32, a.max_length, list(range(len(test)))):
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            total += len(labels)
    ranks = None
    if a.method == "adalora":
        rp = model.peft_config["default"].rank_pattern or {}
        ranks = sum(sum(1 for v in m if v) for m in rp.values())
    result = {"eval_loss": loss_sum / total, "eval_accuracy": correct / total, "eval_examples": total,
              "train_seconds": round(seconds, 1), "final_train_loss": last, "rank_pattern_total": ranks}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(result) + "\n")
    os.replace(tmp, a.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
