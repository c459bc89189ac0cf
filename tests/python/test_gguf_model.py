# A real llama.cpp model file (SmolLM2-135M-Instruct, Q4_1) read by peft.cpp, checked against
# transformers' own GGUF loader: weights, logits, token ids, chat template, and a greedy answer.
#
# `peft convert FILE.gguf DIR` must give the tensors transformers' loader gives (bit for bit: both
# dequantize exactly and undo the same row permutation), `--model FILE.gguf` the same logits, and the
# tokenizer the same ids. transformers builds SmolLM2's GGUF tokenizer with GPT-2's split alone, while
# llama.cpp (tokenizer.ggml.pre = "smollm") and SmolLM2's own tokenizer.json split every digit apart
# first; peft.cpp follows the model's own rule. So ids are compared with transformers' tokenizer on
# texts without digits, and on every text with transformers' tokenizer given SmolLM2's pre-tokenizer.
import json
import subprocess

import pytest
import torch

from interop_util import (
    CLI,
    SOURCE,
    DATA,
    check_close,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    logits_of,
    require_cli,
    run_cli,
    scratch,
    write_jsonl,
)

GGUF = SOURCE / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Logits of two float32 implementations of a 30-layer model (different matmul blocking) stay within this.
GGUF_LOGITS_TOL = 1e-4
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, 3 astronauts flew 384400 km to the Moon.",
]


@pytest.fixture(scope="module")
def gguf_file():
    if not GGUF.is_file():
        pytest.fail(f"{GGUF} is missing: scripts/fetch-models.sh fetches it (make test runs it)")
    return GGUF


@pytest.fixture(scope="module")
def reference(gguf_file):
    """transformers' model from the GGUF file itself, float32."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference_tokenizer(gguf_file):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)


@pytest.fixture(scope="module")
def converted(gguf_file):
    """`peft convert FILE.gguf DIR`."""
    out = scratch("gguf-model") / "smollm2"
    run_cli("convert", gguf_file, out, timeout=600)
    return out


def test_converted_directory_holds_the_gguf_loaders_weights(converted, reference):
    from safetensors.torch import load_file

    ours = load_file(str(converted / "model.safetensors"))
    theirs = {k: v for k, v in reference.state_dict().items()}
    if "lm_head.weight" not in ours:  # tied: transformers lists the embedding twice
        assert json.loads((converted / "config.json").read_text())["tie_word_embeddings"] is True
        theirs.pop("lm_head.weight", None)
    assert sorted(ours) == sorted(theirs)
    for name, t in theirs.items():
        assert ours[name].shape == t.shape, name
        assert torch.equal(ours[name], t.float()), f"{name}: max abs diff {(ours[name] - t).abs().max().item():.3g}"


def test_converted_directory_loads_in_transformers(converted, reference, reference_tokenizer):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32).eval()
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([reference_tokenizer(prompt)["input_ids"]])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        check_close(f"convert: transformers on DIR vs on the GGUF, prompt {i}", logits_of(model, batch),
                    logits_of(reference, batch), tol=GGUF_LOGITS_TOL)


def test_peft_logits_from_the_gguf_file(gguf_file, reference):
    work = scratch("gguf-logits")
    data = write_jsonl(work / "eval.jsonl", [{"text": p} for p in PROMPTS])
    dump = cpp_logits(gguf_file, data, work / "logits.safetensors", batch_size=len(PROMPTS))
    mask = dump["attention_mask"]
    check_close("peft eval --model FILE.gguf vs transformers' GGUF loader", dump["logits"],
                logits_of(reference, dump), mask=mask, tol=GGUF_LOGITS_TOL)


def corpus():
    """The tokenizer corpus (prose, code, numbers, scripts, emoji) and texts with SmolLM2's special tokens."""
    cases = json.loads((DATA / "tokenizers" / "llama3.encodings.json").read_text())["cases"]
    texts = [c["text"] for c in cases]
    texts += [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
        "<|endoftext|>start<file_sep>main.py<filename>x<|im_end|>",
        "a<|im_start|>b <|im_end|> c<repo_name> <gh_stars>10",
    ]
    return texts


def peft_tokenize(tokenizer, texts):
    require_cli()
    r = subprocess.run([CLI, "tokenize", str(tokenizer)], input="".join(json.dumps(t) + "\n" for t in texts),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def smollm_rule(reference_tokenizer):
    """transformers' GGUF tokenizer with the pre-tokenizer of SmolLM2's tokenizer.json and llama.cpp's "smollm"."""
    from tokenizers import Tokenizer, pre_tokenizers

    t = Tokenizer.from_str(reference_tokenizer.backend_tokenizer.to_str())
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return t


def test_token_ids_equal_the_reference(gguf_file, converted, reference_tokenizer):
    texts = corpus()
    ours = peft_tokenize(gguf_file, texts)
    assert peft_tokenize(converted / "tokenizer.json", texts) == ours
    plain = [reference_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rule = smollm_rule(reference_tokenizer)
    with_digits = [rule.encode(t, add_special_tokens=False).ids for t in texts]
    no_digit = [i for i, t in enumerate(texts) if not any(c.isdigit() for c in t)]
    assert len(no_digit) > 200
    for i in no_digit:
        assert ours[i] == plain[i], f"text {i} {texts[i]!r}: {ours[i]} vs transformers {plain[i]}"
    for i, t in enumerate(texts):
        assert ours[i] == with_digits[i], f"text {i} {t!r}: {ours[i]} vs the smollm rule {with_digits[i]}"
    specials = [i for i, t in enumerate(texts) if "<|im_start|>" in t]
    assert all(1 in ours[i] for i in specials)  # <|im_start|> stays one token


def test_converted_tokenizer_loads_in_transformers(converted):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(converted))
    texts = corpus()
    ours = peft_tokenize(converted / "tokenizer.json", texts)
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in texts] == ours
    config = json.loads((converted / "tokenizer_config.json").read_text())
    import gguf

    template = gguf.GGUFReader(str(GGUF)).fields["tokenizer.chat_template"].contents()
    assert config["chat_template"] == template
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")


def test_greedy_answer_equals_transformers(gguf_file, reference, reference_tokenizer):
    question = "What is the capital of France?"
    out = run_cli("generate", "--model", gguf_file, "--chat", "--prompt", question, "--temperature", 0,
                  "--max-new-tokens", 12, timeout=600)
    ids = reference_tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = reference.generate(**ids, max_new_tokens=12, do_sample=False)
    theirs = reference_tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in theirs
    assert out.strip() == theirs.strip(), f"peft generate: {out!r}\ntransformers: {theirs!r}"


def test_chat_prompt_equals_the_template(gguf_file, reference_tokenizer):
    """SmolLM2's template is ChatML with a default system turn: peft.cpp renders what transformers renders."""
    conversations = [
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}],
    ]
    work = scratch("gguf-chat")
    data = write_jsonl(work / "chat.jsonl", [{"messages": c} for c in conversations])
    dump = cpp_logits(gguf_file, data, work / "logits.safetensors", batch_size=len(conversations))
    for i, c in enumerate(conversations):
        ours = dump["input_ids"][i][dump["attention_mask"][i].bool()].tolist()
        theirs = reference_tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]
        assert ours == list(theirs), f"conversation {i}: {ours} vs transformers {list(theirs)}"
