# A SentencePiece vocabulary in a llama.cpp GGUF file (tokenizer.ggml.model = "llama", as Llama 2,
# Mistral 7B v0.1 and TinyLlama have) read by peft.cpp, checked against three independent tokenizers.
#
# A tiny SentencePiece BPE model (byte fallback, digits split, whitespace kept as Llama 2's) is trained
# here on the demo's fortunes, put in a tiny Llama directory with two added tokens (<sep> plain,
# <|user|> special) and converted by llama.cpp's own convert_hf_to_gguf.py, so the GGUF file is what
# llama.cpp writes. On a corpus of ~300 texts (prose, code, runs of spaces, leading spaces, newlines,
# digits, CJK, emoji and other characters outside the vocabulary, special tokens), `peft tokenize
# --model FILE.gguf` must give:
#   - llama.cpp's ids (llama-cpp-python, vocab_only, special tokens parsed) on every text;
#   - sentencepiece's ids on every text without special tokens (sentencepiece does not parse them);
#   - transformers' (LlamaTokenizer on tokenizer.model, and its GGUF loader) ids wherever transformers
#     prefixes the space as SentencePiece does. It does not always: its Metaspace pre-tokenizer adds no
#     U+2581 to a text that already starts with a space or a U+2581 (" hi" is "▁hi", where SentencePiece and llama.cpp
#     give "▁▁hi"), and the GGUF loader (prepend_scheme "first") none after an added token ("<s>hi" is
#     <s> "hi", llama.cpp <s> "▁hi"). On every text, transformers' own tokenizers with that one rule
#     replaced by Llama 2's normalizer (Prepend U+2581, then spaces to U+2581) give peft.cpp's ids.
# `peft convert` writes a tokenizer.json that transformers loads with the same ids; decoding gives the
# text back, as sentencepiece and transformers decode.
import io
import json
import re
import shutil
import subprocess

import pytest
import torch

from interop_util import CLI, DATA, SOURCE, require_cli, run_cli, scratch
from test_gguf_lora import LLAMA_CPP, convert_to_gguf, gguf_fields, need_llama_cpp

ADDED = {"<sep>": False, "<|user|>": True}  # added to the vocabulary: plain (USER_DEFINED), special (CONTROL)
SPECIALS = ["<unk>", "<s>", "</s>", *ADDED]
VOCAB = 1000
SPLIT = re.compile("(" + "|".join(re.escape(s) for s in sorted(SPECIALS, key=len, reverse=True)) + ")")
TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}</s>{% endfor %}"


def corpus():
    """The tokenizer corpus (220 fortunes, 40 edge cases), SentencePiece corner cases, and special tokens."""
    texts = [c["text"] for c in json.loads((DATA / "tokenizers" / "llama2.encodings.json").read_text())["cases"]]
    texts += [
        "", " ", "  ", "\n", " \n ", "hi", " hi", "  hi", "hi ", "hi  ", "a  b   c    d", "\n\nHello\n", "\tx\t",
        "1234567890", "3.14159 and 2,718", "x1y22z333", "don't won't it's", "Ünïcödé façade", "Ǆ ǅ ǆ", "ẞß", "ﬁ ﬂ",
        "東京タワー", "😀😃 🇫🇷 👨‍👩‍👧", "ք ղ ձ", "\u2581literal\u2581bar", "a\u200bb", "non\u00a0breaking", "\x00\x01\x7f",
        "~~~~^^^^````", "<<<>>>", "<s", "s>", "</", "<0x41>", "[PAD1000]",
    ]
    texts += [
        "<s>hello", "<s> hello", "hello</s>", "hello </s>", "</s>", "<s>", "<unk>", "a<unk>b", "a <unk> b",
        "x<sep>y", "x <sep> y", "<sep>", " <sep>", "<sep> ", "<|user|>Hi</s>", "<|user|> Hi </s>",
        "<s><s></s>", "<|user|>\n<sep>\n</s>", "<|user|>Name three colours.</s><|user|>Red, green, blue.</s>",
    ]
    return texts


def has_special(text):
    return any(s in text for s in SPECIALS)


def segments(text):
    """text cut at its added tokens: the added tokens and the pieces between them."""
    return [p for p in SPLIT.split(text) if p]


def starts_a_segment_with_space(text):
    """A piece between added tokens starts with a space (or a U+2581, which Metaspace takes for one): where
    transformers' Metaspace prefixes none."""
    return any(p.startswith((" ", "\u2581")) for p in segments(text) if p not in SPECIALS)


def after_added_token(text):
    """Text follows an added token: where transformers' GGUF loader (prepend_scheme "first") prefixes no space."""
    s = segments(text)
    return any(a in SPECIALS and b not in SPECIALS for a, b in zip(s, s[1:]))


@pytest.fixture(scope="module")
def work():
    need_llama_cpp()
    return scratch("gguf-spm")


def train_sentencepiece(work):
    """A SentencePiece BPE model trained on the fortunes, with Llama 2's settings (byte fallback, digits
    split, whitespace kept as it is, identity normalization); deterministic (one thread, no sampling)."""
    import sentencepiece as spm

    records = (SOURCE / "data" / "demo" / "pretrain.jsonl").read_text().splitlines()[:3000]
    lines = [line for r in records for line in json.loads(r)["text"].split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=VOCAB, byte_fallback=True,
        split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=0.999, num_threads=1, shuffle_input_sentence=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    path = work / "sp.model"
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="module")
def spm_model(work):
    """(HF directory with tokenizer.model, the GGUF file llama.cpp's converter writes from it)"""
    import transformers

    sp_path = train_sentencepiece(work)
    import sentencepiece as spm

    n = spm.SentencePieceProcessor(model_file=str(sp_path)).vocab_size()
    assert n == VOCAB
    d = work / "tiny-llama"
    d.mkdir()
    shutil.copy(sp_path, d / "tokenizer.model")
    added = {str(n + i): {"content": t, "special": s, "normalized": False, "lstrip": False, "rstrip": False,
                          "single_word": False} for i, (t, s) in enumerate(ADDED.items())}
    # Llama 2's tokenizer_config.json, with the added tokens and a chat template.
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "added_tokens_decoder": added, "chat_template": TEMPLATE}, indent=1))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=n + len(ADDED), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(str(d))
    gguf = convert_to_gguf(d, work / "tiny-llama-f32.gguf", "default")
    fields, _, _ = gguf_fields(gguf)
    assert fields["tokenizer.ggml.model"] == "llama"
    types = fields["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and types[n:] == [4, 3], types[:3] + types[n:]  # <unk> <s> </s> ... <sep> <|user|>
    assert types.count(6) == 256  # <0x00>..<0xFF>
    return d, gguf


def peft_tokenize(tokenizer, texts, *flags):
    require_cli()
    r = subprocess.run([CLI, "tokenize", str(tokenizer), *flags], input="".join(json.dumps(t) + "\n" for t in texts),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def ours(spm_model):
    texts = corpus()
    ids = peft_tokenize(spm_model[1], texts)
    assert len(ids) == len(texts)
    return texts, ids


def llama_cpp_ids(gguf, texts, add_bos):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    out = [llm.tokenize(t.encode("utf-8"), add_bos=add_bos, special=True) for t in texts]
    llm.close()
    return out


def legacy_prefix(tokenizer):
    """transformers' tokenizer with Llama 2's prefix rule: Prepend U+2581 and spaces to U+2581 as a normalizer
    (every piece between added tokens), instead of the Metaspace pre-tokenizer."""
    from tokenizers import Tokenizer, normalizers

    t = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.pre_tokenizer = None
    return t


def compare(what, texts, ours, theirs, where):
    """ids equal on every text i with where(i); returns how many were compared."""
    checked = [i for i in range(len(texts)) if where(i)]
    for i in checked:
        assert ours[i] == theirs[i], f"{what}: text {i} {texts[i]!r}: peft.cpp {ours[i]} vs {theirs[i]}"
    print(f"{what}: ids equal on {len(checked)} of {len(texts)} texts")
    return len(checked)


def test_ids_equal_llama_cpp(spm_model, ours):
    texts, ids = ours
    assert compare("llama.cpp", texts, ids, llama_cpp_ids(spm_model[1], texts, False), lambda i: True) > 290
    assert sum(has_special(t) for t in texts) > 15
    # With the post-processor: BOS, as llama.cpp adds it (tokenizer.ggml.add_bos_token).
    with_bos = peft_tokenize(spm_model[1], texts, "--special")
    compare("llama.cpp, add_bos", texts, with_bos, llama_cpp_ids(spm_model[1], texts, True), lambda i: True)
    assert all(b == [1] + i for b, i in zip(with_bos, ids))


def test_ids_equal_sentencepiece(spm_model, ours):
    import sentencepiece as spm

    texts, ids = ours
    sp = spm.SentencePieceProcessor(model_file=str(spm_model[0] / "tokenizer.model"))
    theirs = [sp.encode(t) for t in texts]
    n = compare("sentencepiece", texts, ids, theirs, lambda i: not has_special(texts[i]))
    assert n > 270
    fallback = [i for i, t in enumerate(texts) if not has_special(t) and any(sp.is_byte(x) for x in theirs[i])]
    spaces = [i for i, t in enumerate(texts) if t.startswith(" ") or "  " in t]
    print(f"  of which {len(fallback)} with <0xNN> byte tokens, {len(spaces)} with leading or repeated spaces")
    assert len(fallback) > 20 and len(spaces) > 20


@pytest.mark.parametrize("source", ["tokenizer.model", "gguf"])
def test_ids_equal_transformers(spm_model, ours, source):
    import transformers

    texts, ids = ours
    d, gguf = spm_model
    if source == "gguf":
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Metaspace prepend_scheme "first": also no space after an added token.
        differs = lambda t: starts_a_segment_with_space(t) or after_added_token(t)  # noqa: E731
    else:
        tok = transformers.AutoTokenizer.from_pretrained(str(d))
        assert type(tok).__name__ == "LlamaTokenizer"
        differs = starts_a_segment_with_space
    theirs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = compare(f"transformers ({source})", texts, ids, theirs, lambda i: not differs(texts[i]))
    assert n > 250
    # Where the rule applies, it is the only difference.
    rule = legacy_prefix(tok)
    compare(f"transformers ({source}) with Llama 2's prefix normalizer", texts, ids,
            [rule.encode(t, add_special_tokens=False).ids for t in texts], lambda i: True)
    differing = [i for i in range(len(texts)) if ids[i] != theirs[i]]
    assert differing and all(differs(texts[i]) for i in differing)
    print(f"  transformers ({source}) differs on {len(differing)} texts, e.g. {texts[differing[0]]!r}: "
          f"peft.cpp/llama.cpp {ids[differing[0]]}, transformers {theirs[differing[0]]}")


def test_merges_equal_transformers_gguf_loader(spm_model, work):
    """The merges recovered from the scores are transformers' (the same pairs in the same order)."""
    import transformers

    gguf = spm_model[1]
    out = work / "converted"
    run_cli("convert", gguf, out)
    ours = json.loads((out / "tokenizer.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    theirs = json.loads(tok.backend_tokenizer.to_str())
    pairs = [m.split(" ") if isinstance(m, str) else m for m in theirs["model"]["merges"]]
    assert ours["model"]["merges"] == pairs
    assert len(pairs) > VOCAB / 2
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]


def test_converted_tokenizer_loads_in_transformers(spm_model, ours, work):
    import transformers

    texts, ids = ours
    out = work / "converted-dir"
    run_cli("convert", spm_model[1], out)
    assert peft_tokenize(out / "tokenizer.json", texts) == ids
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    compare("transformers on `peft convert`'s directory", texts, ids,
            [tok(t, add_special_tokens=False)["input_ids"] for t in texts], lambda i: True)
    assert [tok(t)["input_ids"] for t in texts] == peft_tokenize(spm_model[1], texts, "--special")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert config["add_bos_token"] is True and config["add_eos_token"] is False


def test_decode(spm_model, ours, work):
    """Decoding gives the text back (up to U+2581 typed in the text, which SentencePiece reads as a space), as
    sentencepiece and transformers decode; special tokens kept or skipped as transformers does."""
    import sentencepiece as spm
    import transformers

    texts, ids = ours
    out = work / "decode-dir"
    run_cli("convert", spm_model[1], out)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=str(spm_model[0] / "tokenizer.model"))
    plain = [i for i, t in enumerate(texts) if not has_special(t)]

    def decode(flags, chosen):
        r = subprocess.run([CLI, "tokenize", str(spm_model[1]), "--decode", *flags],
                           input="".join(json.dumps(ids[i]) + "\n" for i in chosen), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    back = decode([], plain)
    for i, text in zip(plain, back):
        assert text == texts[i].replace("\u2581", " "), f"text {i}: {texts[i]!r} decoded as {text!r}"
        assert text == sp.decode(ids[i]), f"text {i}: sentencepiece decodes {sp.decode(ids[i])!r}"
    print(f"decode: {len(plain)} texts back as they were, as sentencepiece decodes them")
    every = list(range(len(texts)))
    for flags, skip in (([], False), (["--skip-special"], True)):
        for i, text in zip(every, decode(flags, every)):
            assert text == tok.decode(ids[i], skip_special_tokens=skip), f"text {i} {texts[i]!r} (skip {skip})"
    print(f"decode: {len(every)} texts as transformers decodes them, special tokens kept and skipped")


def test_errors_name_the_file_and_the_key(spm_model, work):
    """A SentencePiece vocabulary without its scores is refused, naming the file and the key."""
    import gguf as gguf_py

    fields, _, _ = gguf_fields(spm_model[1])
    path = work / "no-scores.gguf"
    w = gguf_py.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(fields["tokenizer.ggml.tokens"])
    w.add_token_types(fields["tokenizer.ggml.token_type"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    require_cli()
    r = subprocess.run([CLI, "tokenize", str(path)], input='"hi"\n', capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert str(path) in r.stderr and "tokenizer.ggml.scores" in r.stderr, r.stderr
