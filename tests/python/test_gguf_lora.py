# `peft export --gguf` adapters loaded by llama.cpp itself (llama-cpp-python, built by
# scripts/fetch-llama-cpp.sh) give the logits PEFT gives with the same adapter on the same base.
#
# The bases are tiny random Llama (grouped-query attention: q and k rows are permuted differently) and
# Qwen2 models with real tokenizers (SmolLM2's, Qwen's), converted to F32 GGUF by llama.cpp's own
# convert_hf_to_gguf.py; the adapters are AdaLoRA trained by `peft train` (with rank-0 modules), and
# LoRA built by PEFT with rsLoRA, rank_pattern and alpha_pattern, and plain. On those F32 bases
# llama.cpp must match PEFT within float tolerance, and plain LoRA files must equal, bit for bit, what
# llama.cpp's convert_lora_to_gguf.py writes. SmolLM2-135M in F32 is checked the same way (against PEFT
# in float64: 30 float32 layers round by 1e-4). On the real SmolLM2-135M-Instruct Q4_1 file the deviation
# is measured and reported: llama.cpp rounds activations to 8 bits in its quantized matmuls, so there
# the adapter must only bring llama.cpp near PEFT's adapted logits.
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from interop_util import (
    ADALORA,
    LOGITS_TOL,
    SOURCE,
    _deviations,
    check_close,
    check_effect,
    cpp_logits,
    deviation_report,  # noqa: F401 (module fixture: prints the deviations)
    load_peft,
    max_abs_diff,
    read_config,
    run_cli,
    scratch,
    text_records,
    train,
    write_jsonl,
    zero_rank_modules,
)

LLAMA_CPP = SOURCE / ".cache" / "llama-cpp"
SMOLLM2 = SOURCE / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = "The budget of every module shrinks as AdaLoRA learns which singular values matter, 1 2 3."
GGML_TYPE_F32 = 0


def need_llama_cpp():
    if not (LLAMA_CPP / "python" / "llama_cpp").is_dir() or not (LLAMA_CPP / "convert" / "convert_hf_to_gguf.py").is_file():
        pytest.fail(f"llama.cpp is not built in {LLAMA_CPP}: scripts/fetch-llama-cpp.sh builds it "
                    "(the Makefile's test-data target, which make test runs, calls it)")
    for p in (LLAMA_CPP / "python", LLAMA_CPP / "deps"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def need_smollm2():
    if not SMOLLM2.is_file():
        pytest.fail(f"{SMOLLM2} is missing: scripts/fetch-models.sh fetches it (make test runs it)")


@pytest.fixture(scope="module")
def work():
    need_llama_cpp()
    need_smollm2()
    return scratch("gguf-lora")


@pytest.fixture(scope="module")
def smollm2_tokenizer(work):
    """SmolLM2's tokenizer from its GGUF file, with its own pre-tokenizer (digits split one by one, then
    GPT-2's byte-level split): the tokenizer llama.cpp's converter recognises as "smollm"."""
    import transformers
    from tokenizers import pre_tokenizers

    tok = transformers.AutoTokenizer.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    out = work / "tokenizer"
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def qwen_tokenizer():
    """Qwen's tokenizer (Qwen3's tokenizer.json: Qwen2's vocabulary and split), which transformers loads as
    Qwen2Tokenizer for every qwen2 model whatever tokenizer.json says, and llama.cpp recognises as "qwen2"."""
    d = SOURCE / ".cache" / "tokenizers" / "qwen3"
    if not (d / "tokenizer.json").is_file():
        pytest.fail(f"{d} is missing: scripts/fetch-test-data.sh fetches it (make test runs it)")
    return d


def convert_to_gguf(model_dir, out, pre):
    """llama.cpp's convert_hf_to_gguf.py, F32, with llama.cpp's own gguf-py."""
    env = dict(os.environ, PYTHONPATH=str(LLAMA_CPP / "deps"))
    r = subprocess.run([sys.executable, str(LLAMA_CPP / "convert" / "convert_hf_to_gguf.py"), str(model_dir),
                        "--outtype", "f32", "--outfile", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"convert_hf_to_gguf.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    fields, _, _ = gguf_fields(out)
    assert fields["tokenizer.ggml.pre"] == pre, f"the converter did not recognise the {pre} pre-tokenizer"
    return out


def make_base(work, tokenizer_dir, family):
    """A tiny random model of `family` with a real tokenizer, saved for transformers and converted to GGUF."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))

    torch.manual_seed({"llama": 1, "qwen2": 2}[family])
    shape = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2)
    if family == "llama":
        config = transformers.LlamaConfig(head_dim=16, **shape)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**shape)
        model = transformers.Qwen2ForCausalLM(config)
    # Larger weights than the default 0.02 initialisation, so that every layer shapes the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
            elif "bias" in name:
                p.normal_(0.0, 0.2)
    out = work / f"{family}-base"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    gguf = convert_to_gguf(out, work / f"{family}-base-f32.gguf", {"llama": "smollm", "qwen2": "qwen2"}[family])
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert 15 < len(ids) < 64
    return out, gguf, ids


@pytest.fixture(scope="module")
def llama(work, smollm2_tokenizer):
    """(HF directory, F32 GGUF, token ids of TEXT)"""
    return make_base(work, smollm2_tokenizer, "llama")


@pytest.fixture(scope="module")
def qwen2(work, qwen_tokenizer):
    return make_base(work, qwen_tokenizer, "qwen2")


def llama_cpp_logits(model_gguf, ids, lora=None):
    """llama.cpp's logits at every position of `ids` (one sequence; F32 KV cache, no flash attention)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_gguf), lora_path=str(lora) if lora else None, logits_all=True, n_ctx=128,
                n_batch=128, n_threads=1, n_threads_batch=1, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                flash_attn=False, verbose=False)
    llm.eval(ids)
    out = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
    llm.close()
    return out


def peft_logits(model_dir, ids, adapter=None, dtype=torch.float32):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    if adapter is not None:
        model = load_peft(model, adapter)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].to(dtype)


def peft_lora(base_dir, out, seed, **config):
    """A LoRA adapter made by PEFT with random A and B (init_lora_weights=False), saved in PEFT's format."""
    import peft
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    lora = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **config))
    lora.save_pretrained(str(out))
    return out


def export(adapter, out, *flags):
    return run_cli("export", "--gguf", adapter, "--output", out, *flags)


def gguf_fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    types = {k: f.types[0] for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, types, tensors


def check_llama_cpp(what, base_dir, base_gguf, ids, adapter, exported):
    """llama.cpp with the exported file == PEFT with the adapter, and the adapter matters."""
    theirs = peft_logits(base_dir, ids, adapter)
    check_effect(what, theirs, peft_logits(base_dir, ids))
    return check_close(f"{what}: llama.cpp (F32 base + exported GGUF) vs PEFT", llama_cpp_logits(base_gguf, ids, exported), theirs)


def test_llama_cpp_base_equals_transformers(llama, qwen2):
    """The premise: without an adapter, llama.cpp on the converted F32 file gives transformers' logits."""
    for name, (base_dir, base_gguf, ids) in {"llama": llama, "qwen2": qwen2}.items():
        check_close(f"{name} base: llama.cpp vs transformers", llama_cpp_logits(base_gguf, ids), peft_logits(base_dir, ids))


def test_peft_reads_llama_cpps_files_as_the_original_models(work, llama, qwen2):
    """`peft convert` and `--model FILE.gguf` on the files llama.cpp's own converter wrote: the original
    model's weights bit for bit (q/k rows back in Hugging Face's order) and its logits."""
    import shutil

    for name, (base_dir, base_gguf, _) in {"llama": llama, "qwen2": qwen2}.items():
        out = work / f"{name}-from-gguf"
        if out.exists():
            shutil.rmtree(out)
        run_cli("convert", base_gguf, out)
        ours, theirs = load_file(str(out / "model.safetensors")), load_file(str(base_dir / "model.safetensors"))
        assert sorted(ours) == sorted(theirs), f"{name}: {sorted(set(ours) ^ set(theirs))}"
        for key, t in theirs.items():
            assert torch.equal(ours[key], t), f"{name}: {key} differs from the original"
        data = write_jsonl(work / f"{name}-text.jsonl", [{"text": TEXT}])
        dump = cpp_logits(base_gguf, data, work / f"{name}-logits.safetensors", batch_size=1)
        ids = dump["input_ids"][0].tolist()
        check_close(f"{name}: peft eval --model (llama.cpp's F32 GGUF) vs transformers on the original", dump["logits"][0],
                    peft_logits(base_dir, ids))


def test_adalora_with_pruned_modules(work, llama):
    base_dir, base_gguf, ids = llama
    data = write_jsonl(work / "train.jsonl", text_records())
    adapter = train(base_dir, data, work / "adalora", *ADALORA, "--target_modules", "all-linear")
    config = read_config(adapter)
    assert zero_rank_modules(config), "the run should prune some modules to rank 0"
    out = work / "adalora.gguf"
    printed = export(adapter, out, "--model", base_gguf)
    assert "pruned" in printed and "llama-cli -m" in printed, printed
    fields, types, tensors = gguf_fields(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert types["adapter.lora.alpha"].name == "FLOAT32"
    pruned = {k[: -len(".lora_E")] for k in zero_rank_modules(config)}
    assert len(tensors) == 2 * (14 - len(pruned)), sorted(tensors)
    check_llama_cpp("AdaLoRA (kept ranks, rank-0 modules left out)", base_dir, base_gguf, ids, adapter, out)


def test_lora_rslora_with_rank_and_alpha_patterns(work, llama):
    base_dir, base_gguf, ids = llama
    adapter = peft_lora(base_dir, work / "rslora", 3, r=4, lora_alpha=6, use_rslora=True,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        rank_pattern={"q_proj": 2, "model.layers.1.mlp.down_proj": 6},
                        alpha_pattern={"k_proj": 3, "up_proj": 12})
    out = work / "rslora.gguf"
    printed = export(adapter, out)  # the base from base_model_name_or_path
    assert "in lora_b" in printed, printed
    check_llama_cpp("LoRA, rsLoRA + rank_pattern + alpha_pattern", base_dir, base_gguf, ids, adapter, out)

    # --dtype f16: the F32 file's factors (checked above through llama.cpp) rounded once to F16.
    out16 = work / "rslora-f16.gguf"
    export(adapter, out16, "--dtype", "f16")
    _, _, f32 = gguf_fields(out)
    _, _, f16 = gguf_fields(out16)
    assert f16.keys() == f32.keys()
    for name, t in f16.items():
        assert t.tensor_type.name == "F16", name
        assert np.array_equal(np.array(t.data), np.array(f32[name].data).astype(np.float16)), name
    d = max_abs_diff(llama_cpp_logits(base_gguf, ids, out16), peft_logits(base_dir, ids, adapter))
    _deviations.append(("LoRA, rsLoRA + patterns, F16 factors: llama.cpp vs PEFT (reported)", d))


def test_plain_lora_is_written_as_peft_holds_it(work, qwen2, llama):
    """Uniform rank and alpha: adapter.lora.alpha is lora_alpha and the factors are PEFT's arrays (qwen2:
    no rotary permutation; llama: only q and k rows reordered)."""
    for name, (base_dir, base_gguf, ids) in {"qwen2": qwen2, "llama": llama}.items():
        adapter = peft_lora(base_dir, work / f"{name}-lora", 4, r=4, lora_alpha=8, target_modules="all-linear")
        out = work / f"{name}-lora.gguf"
        export(adapter, out, "--model", base_gguf if name == "qwen2" else base_dir)
        fields, _, tensors = gguf_fields(out)
        assert fields["general.architecture"] == name
        assert fields["adapter.lora.alpha"] == 8.0
        peft_tensors = load_file(str(adapter / "adapter_model.safetensors"))
        assert len(tensors) == len(peft_tensors) == 28
        for key, t in peft_tensors.items():
            layer = key.split(".layers.")[1].split(".")[0]
            proj = key.split(".")[-3]
            kind = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}[proj]
            part = "lora_a" if ".lora_A." in key else "lora_b"
            g = tensors[f"blk.{layer}.{kind}.weight.{part}"]
            assert list(g.shape) == list(t.shape[::-1]), key  # ggml's ne: the PyTorch shape reversed
            data = torch.from_numpy(np.array(g.data)).reshape(t.shape)
            if name == "llama" and part == "lora_b" and kind in ("attn_q", "attn_k"):
                assert not torch.equal(data, t), f"{key}: the rotary row order must change"
                assert torch.equal(data.sort(dim=0).values, t.sort(dim=0).values), f"{key}: rows must be a permutation"
            else:
                assert torch.equal(data, t), key
        check_llama_cpp(f"{name} LoRA", base_dir, base_gguf, ids, adapter, out)
        # llama.cpp's own converter of plain PEFT LoRA adapters writes the same tensors, bit for bit.
        ref = work / f"{name}-lora-by-llama-cpp.gguf"
        env = dict(os.environ, PYTHONPATH=str(LLAMA_CPP / "deps"))
        r = subprocess.run([sys.executable, str(LLAMA_CPP / "convert" / "convert_lora_to_gguf.py"), "--base", str(base_dir),
                            "--outtype", "f32", "--outfile", str(ref), str(adapter)], capture_output=True, text=True,
                           env=env, timeout=600)
        assert r.returncode == 0, f"convert_lora_to_gguf.py failed:\n{r.stderr[-3000:]}"
        ref_fields, _, ref_tensors = gguf_fields(ref)
        assert ref_fields["adapter.lora.alpha"] == fields["adapter.lora.alpha"]
        assert ref_tensors.keys() == tensors.keys()
        for t, ref_t in zip(tensors.values(), (ref_tensors[k] for k in tensors)):
            assert list(t.shape) == list(ref_t.shape) and np.array_equal(np.array(t.data), np.array(ref_t.data)), t.name


def test_rotary_row_order_is_what_llama_cpp_needs(work, llama):
    """The same file with lora_b of q and k back in Hugging Face's row order gives other logits in
    llama.cpp: the comparisons above would catch a missing or wrong permutation."""
    import gguf

    base_dir, base_gguf, ids = llama
    adapter = peft_lora(base_dir, work / "llama-lora-rows", 4, r=4, lora_alpha=8, target_modules="all-linear")
    exported = work / "llama-lora-rows.gguf"
    export(adapter, exported, "--model", base_gguf)
    peft_tensors = load_file(str(adapter / "adapter_model.safetensors"))
    _, _, tensors = gguf_fields(exported)
    w = gguf.GGUFWriter(str(work / "unpermuted.gguf"), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    for name, t in tensors.items():
        data = np.array(t.data).reshape(tuple(int(n) for n in t.shape[::-1]))
        layer, kind = name.split(".")[1], name.split(".")[2]
        if name.endswith("lora_b") and kind in ("attn_q", "attn_k"):
            proj = {"attn_q": "q_proj", "attn_k": "k_proj"}[kind]
            data = peft_tensors[f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_B.weight"].numpy()
        w.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    theirs = peft_logits(base_dir, ids, adapter)
    wrong = max_abs_diff(llama_cpp_logits(base_gguf, ids, work / "unpermuted.gguf"), theirs)
    _deviations.append(("llama LoRA, q/k lora_b left in Hugging Face's row order: llama.cpp vs PEFT (must be far)", wrong))
    assert wrong > 100 * LOGITS_TOL, f"Hugging Face's row order gives only {wrong:.3g} of deviation"
    check_close("llama LoRA, the same file as written: llama.cpp vs PEFT", llama_cpp_logits(base_gguf, ids, exported), theirs)


def test_refusals_name_what_llama_cpp_cannot_load(work, llama):
    base_dir, _, _ = llama
    cases = {
        "gpt2_a": "GPT2LMHeadModel",
        "bert_a": "BertForSequenceClassification",
    }
    for case, words in cases.items():
        golden = SOURCE / "tests" / "fixtures" / "golden" / case
        r = subprocess.run([os.environ["PEFT_CLI"], "export", "--gguf", str(golden / "adapter_final"), "--model",
                            str(golden / "base"), "--output", str(work / "x.gguf")], capture_output=True, text=True)
        assert r.returncode != 0 and words in r.stderr + r.stdout, (case, r.stdout, r.stderr)
    lm_head = peft_lora(base_dir, work / "lm-head", 5, r=2, target_modules=["q_proj", "lm_head"])
    r = subprocess.run([os.environ["PEFT_CLI"], "export", "--gguf", str(lm_head), "--output", str(work / "x.gguf")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "lm_head" in r.stderr, r.stderr
    assert not (work / "x.gguf").exists()
    with_head = peft_lora(base_dir, work / "saved-head", 6, r=2, target_modules=["v_proj"], modules_to_save=["lm_head"])
    r = subprocess.run([os.environ["PEFT_CLI"], "export", "--gguf", str(with_head), "--output", str(work / "x.gguf")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "modules_to_save (lm_head)" in r.stderr, r.stderr


def test_smollm2_in_f32(work, smollm2_tokenizer, llama):
    """A real model (SmolLM2-135M: 30 layers, 9 query and 3 key/value heads, tied embeddings): transformers'
    copy of the Q4_1 file saved in float32 and converted to F32 GGUF by llama.cpp, an rsLoRA adapter with
    patterns on it. Over 30 layers float32 rounding alone reaches 1e-4 (PEFT in float32 is that far from
    itself in float64 with this adapter), so llama.cpp is held to PEFT computed in float64."""
    import transformers

    tol = 1e-4  # as test_gguf_model.py: 30 layers of float32 with different matmul blocking
    ids = llama[2]  # SmolLM2's tokenizer
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name,
                                                                dtype=torch.float32)
    config = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_model_name_or_path")}
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    base.load_state_dict(loaded.state_dict())  # transformers saves no model it read from a GGUF file
    base_dir = work / "smollm2-f32"
    base.save_pretrained(str(base_dir))
    del base, loaded
    transformers.AutoTokenizer.from_pretrained(str(smollm2_tokenizer)).save_pretrained(str(base_dir))
    base_gguf = convert_to_gguf(base_dir, work / "smollm2-f32.gguf", "smollm")
    exact = peft_logits(base_dir, ids, dtype=torch.float64)
    check_close("SmolLM2 F32, no adapter: llama.cpp vs transformers in float64", llama_cpp_logits(base_gguf, ids).double(),
                exact, tol=tol)
    adapter = peft_lora(base_dir, work / "smollm2-rslora", 8, r=8, lora_alpha=4, use_rslora=True,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        rank_pattern={"k_proj": 4, "model.layers.3.mlp.up_proj": 16}, alpha_pattern={"q_proj": 8})
    out = work / "smollm2-rslora.gguf"
    export(adapter, out, "--model", base_gguf)
    theirs = peft_logits(base_dir, ids, adapter, dtype=torch.float64)
    check_effect("SmolLM2 F32 rsLoRA", theirs, exact)
    ours = llama_cpp_logits(base_gguf, ids, out)
    check_close("SmolLM2 F32 + rsLoRA with patterns: llama.cpp vs PEFT in float64", ours.double(), theirs, tol=tol)
    peft32 = peft_logits(base_dir, ids, adapter)
    _deviations.append(("SmolLM2 F32 + rsLoRA: PEFT in float32 vs PEFT in float64 (reported)", max_abs_diff(peft32, theirs)))
    _deviations.append(("SmolLM2 F32 + rsLoRA: llama.cpp vs PEFT in float32 (reported)", max_abs_diff(ours, peft32)))
    for f in (base_dir / "model.safetensors", base_gguf):
        f.unlink()


def test_q4_1_base_deviation_is_reported(work, llama):
    """SmolLM2-135M-Instruct Q4_1 as the base: llama.cpp with the exported adapter against PEFT on
    transformers' dequantized copy of the same file. llama.cpp rounds activations to 8 bits in its Q4_1
    matmuls, so the logits differ with or without an adapter; the adapter's effect must still be PEFT's."""
    import peft
    import transformers

    ids = llama[2]  # SmolLM2's tokenizer
    base = transformers.AutoModelForCausalLM.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name,
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(input_ids=torch.tensor([ids])).logits[0].float()
    torch.manual_seed(7)
    model = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():  # a moderate adapter: B scaled down so that the model stays a language model
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.25)
    adapter = work / "smollm2-lora"
    model.save_pretrained(str(adapter))
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor([ids])).logits[0].float()
    out = work / "smollm2-lora.gguf"
    export(adapter, out, "--model", SMOLLM2)
    base_only = llama_cpp_logits(SMOLLM2, ids)
    ours = llama_cpp_logits(SMOLLM2, ids, out)
    mean = lambda a, b: (a - b).abs().mean().item()  # noqa: E731
    effect_ours, effect_theirs = ours - base_only, theirs - plain
    _deviations.append(("Q4_1 SmolLM2: llama.cpp without the adapter vs PEFT with it, mean abs (reported)", mean(base_only, theirs)))
    cosine = torch.nn.functional.cosine_similarity(effect_ours.flatten(), effect_theirs.flatten(), dim=0).item()
    for what, d in [("Q4_1 SmolLM2, no adapter: llama.cpp vs transformers, max abs (reported)", max_abs_diff(base_only, plain)),
                    ("Q4_1 SmolLM2, no adapter: llama.cpp vs transformers, mean abs (reported)", mean(base_only, plain)),
                    ("Q4_1 SmolLM2 + exported GGUF: llama.cpp vs PEFT, max abs (reported)", max_abs_diff(ours, theirs)),
                    ("Q4_1 SmolLM2 + exported GGUF: llama.cpp vs PEFT, mean abs (reported)", mean(ours, theirs)),
                    ("Q4_1 SmolLM2: the adapter's effect in PEFT, mean abs (reported)", effect_theirs.abs().mean().item()),
                    ("Q4_1 SmolLM2: the adapter's effect, llama.cpp vs PEFT, mean abs (reported)", mean(effect_ours, effect_theirs)),
                    ("Q4_1 SmolLM2: 1 - cosine of the two effects (reported)", 1 - cosine)]:
        _deviations.append((what, d))
    assert effect_theirs.abs().mean() > 1.0, "the adapter moves SmolLM2's logits too little for the comparison to mean anything"
    # Not an exact check: the rounding of activations in the quantized matmuls differs with and without
    # the adapter, so llama.cpp's effect carries that noise (about the base's own deviation). The adapter
    # must bring llama.cpp to PEFT's adapted logits: much closer than llama.cpp without it.
    assert mean(ours, theirs) < 0.5 * mean(base_only, theirs), "llama.cpp with the adapter is not near PEFT's adapted logits"
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9
