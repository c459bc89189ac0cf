# GGUF files written by the gguf package (llama.cpp's own Python library): `peft convert` must give
# the same float32 bits as gguf.quants.dequantize for every block type, and the metadata its GGUFReader reads.
#
# Bit-exact, not within a tolerance: a dequantized value is d * scale * q (- min), with d a float16
# (11 significant bits) and scale, q small integers (at most 8 + 6 bits), so every intermediate product
# is exact in float32 and only the last operation rounds. Any correct implementation, gguf-py's numpy
# code included, gives the same bits; a difference of one ulp is a wrong formula, not rounding noise.
import json
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from safetensors.numpy import load_file

from interop_util import CLI, require_cli, run_cli, scratch

RNG_SEED = 20260

# Types gguf-py can quantize, and those it can only dequantize (their blocks are made here from random
# bytes with finite float16 scales). Both lists together are the types peft.cpp reads.
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
BLOCKS_ONLY = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte ranges of the float16 scales inside one block (the layouts of ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def convert(path, out_dir, *extra):
    """Runs `peft convert PATH --tensors ... --header ...`; returns (tensors by name, header JSON)."""
    tensors, header = out_dir / "tensors.safetensors", out_dir / "header.json"
    run_cli("convert", path, "--tensors", tensors, "--header", header, *extra)
    return load_file(str(tensors)), json.loads(header.read_text())


def convert_error(path, out_dir):
    """The stderr of a `peft convert` that must fail."""
    require_cli()
    r = subprocess.run([CLI, "convert", str(path), "--tensors", str(out_dir / "t.safetensors")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stderr


def finite_halves(rng, n):
    """n random finite float16 bit patterns (zero, subnormals, up to 65504, both signs) as uint16."""
    return (rng.integers(0, 0x7C00, n, dtype=np.uint16) | (rng.integers(0, 2, n, dtype=np.uint16) << 15)).astype(np.uint16)


def random_blocks(rng, qtype, n_blocks):
    """n_blocks valid blocks of a block type: random bytes, float16 fields set to finite values."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        blocks[:, at:at + 2] = finite_halves(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return blocks


def same_bits(ours, theirs):
    assert ours.dtype == np.float32 and theirs.dtype == np.float32
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = ours.view(np.uint32) != theirs.view(np.uint32)
    if diff.any():
        i = np.flatnonzero(diff.ravel())[0]
        pytest.fail(f"{diff.sum()} of {diff.size} values differ; first at flat index {i}: "
                    f"ours {ours.ravel()[i]!r}, gguf {theirs.ravel()[i]!r}")


def test_every_readable_type_is_bit_exact_with_gguf_py():
    rng = np.random.default_rng(RNG_SEED)
    d = scratch("gguf", "types")
    w = gguf.GGUFWriter(str(d / "types.gguf"), "llama")
    expected = {}  # name -> (stored array, type, PyTorch shape)

    for qtype in QUANTIZABLE:
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        cols = 4 * max(block, 32)
        for shape in [(cols,), (3, cols), (2, 3, cols), (2, 1, 2, cols)]:
            data = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 300.0])).astype(np.float32)
            if qtype in (T.F32, T.F16, T.BF16):  # special values survive these three types
                flat = data.reshape(-1)
                flat[:6] = [0.0, -0.0, np.inf, -np.inf, 1e-7, -6e-8]
                if qtype == T.F32:
                    flat[6] = np.nan
            stored = gguf.quants.quantize(data, qtype)
            name = f"{qtype.name}.quantized.{len(shape)}d"
            w.add_tensor(name, stored, raw_dtype=qtype if stored.dtype == np.uint8 else None)
            expected[name] = (stored, qtype, shape)

    for qtype in list(F16_FIELDS):
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        rows, per_row = 8, 8 if block == 256 else 32
        stored = random_blocks(rng, qtype, rows * per_row).reshape(rows, -1)
        name = f"{qtype.name}.random_blocks"
        w.add_tensor(name, stored, raw_dtype=qtype)
        expected[name] = (stored, qtype, (rows, per_row * block))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours, header = convert(d / "types.gguf", d)
    assert sorted(ours) == sorted(expected)
    for name, (stored, qtype, shape) in expected.items():
        theirs = gguf.quants.dequantize(stored, qtype).astype(np.float32, copy=False)
        assert theirs.shape == shape
        assert ours[name].shape == shape, name  # the PyTorch shape: ggml's dims reversed
        same_bits(ours[name], theirs)
    types = {t["name"]: t["type"] for t in header["tensors"]}
    assert {types[n] for n in expected} == {q.name for q in QUANTIZABLE + BLOCKS_ONLY}


def test_every_ggml_type_opens_and_unreadable_ones_are_refused_by_name():
    """A tensor of each type of gguf-py's table: our tensor infos (type name, dims, bytes, offsets)
    equal GGUFReader's; the first type peft.cpp does not dequantize is refused naming tensor and type."""
    rng = np.random.default_rng(RNG_SEED + 1)
    d = scratch("gguf", "all_types")
    path = d / "all.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    names = ["first"]
    w.add_tensor("first", np.arange(3, dtype=np.float32))
    for qtype, (block, type_size) in gguf.GGML_QUANT_SIZES.items():
        names.append(f"blk.{qtype.value}.{qtype.name}")
        w.add_tensor(names[-1], rng.integers(0, 256, (2, 3 * type_size), dtype=np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    header_path = d / "header.json"
    run_cli("convert", path, "--header", header_path)
    header = json.loads(header_path.read_text())
    theirs = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    assert [t["name"] for t in header["tensors"]] == names
    for t in header["tensors"]:
        r = theirs[t["name"]]
        assert t["type"] == r.tensor_type.name, t
        assert t["ne"] == [int(n) for n in r.shape], t
        assert t["shape"] == t["ne"][::-1], t
        assert t["nbytes"] == r.n_bytes, t
        assert header["data_offset"] + t["offset"] == r.data_offset, t

    readable = {q.name for q in QUANTIZABLE + BLOCKS_ONLY}
    first_unreadable = next(q for q in gguf.GGML_QUANT_SIZES if q.name not in readable)
    err = convert_error(path, d)
    assert f"gguf: {path}: tensor 'blk.{first_unreadable.value}.{first_unreadable.name}' has type " \
           f"{first_unreadable.name}, which peft.cpp cannot read yet; supported: F32, F16, BF16" in err, err


def test_metadata_of_every_type_reads_back():
    d = scratch("gguf", "metadata")
    path = d / "meta.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    written = {
        "t.uint8": (V.UINT8, 255), "t.int8": (V.INT8, -128), "t.uint16": (V.UINT16, 65535),
        "t.int16": (V.INT16, -32768), "t.uint32": (V.UINT32, 4294967295), "t.int32": (V.INT32, -2147483648),
        "t.float32": (V.FLOAT32, 0.1), "t.bool": (V.BOOL, True), "t.false": (V.BOOL, False),
        "t.string": (V.STRING, "Grüße, 世界\n\t\"quoted\""), "t.empty_string": (V.STRING, ""),
        "t.uint64": (V.UINT64, 18446744073709551615), "t.int64": (V.INT64, -9223372036854775808),
        "t.float64": (V.FLOAT64, -1.2345678901234567e-300),
    }
    for key, (vtype, value) in written.items():
        w.add_key_value(key, value, vtype)
    arrays = {
        "a.strings": (V.STRING, ["<s>", "</s>", "▁the", "", "Ġ\u00e9"]),
        "a.uint8": (V.UINT8, [0, 1, 255]), "a.int8": (V.INT8, [-128, 0, 127]),
        "a.uint16": (V.UINT16, [0, 65535]), "a.int16": (V.INT16, [-32768, 32767]),
        "a.uint32": (V.UINT32, [0, 4294967295]), "a.int32": (V.INT32, [-1, 2, -3]),
        "a.uint64": (V.UINT64, [18446744073709551615]), "a.int64": (V.INT64, [-9223372036854775808, 5]),
        "a.float32": (V.FLOAT32, [0.5, -1e-30, 3.4e38]), "a.float64": (V.FLOAT64, [1e-300, -2.5]),
        "a.bool": (V.BOOL, [True, False, True]),
    }
    for key, (sub, value) in arrays.items():
        w.add_key_value(key, value, V.ARRAY, sub_type=sub)
    w.add_tensor("x", np.ones((2, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours, header = convert(path, d)
    assert header["version"] == 3 and header["alignment"] == 64 and header["data_offset"] % 64 == 0
    meta = header["metadata"]
    reader = gguf.GGUFReader(str(path))
    # Every key GGUFReader sees (less its own GGUF.version and counts), in order, with its type and value.
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(meta) == list(fields)
    assert len(fields) == 2 + len(written) + len(arrays)
    for key, field in fields.items():
        main = V(field.types[0])
        assert meta[key]["type"] == main.name, key
        theirs = field.contents()
        if main == V.ARRAY:
            assert meta[key]["elem_type"] == V(field.types[-1]).name, key
        if isinstance(theirs, float) or (isinstance(theirs, list) and theirs and isinstance(theirs[0], float)):
            assert np.array_equal(np.asarray(meta[key]["value"], dtype=np.float64), np.asarray(theirs, dtype=np.float64)), key
        else:
            assert meta[key]["value"] == theirs, key
    # And the values as written (float32 values as their float32 roundings).
    for key, (vtype, value) in written.items():
        want = float(np.float32(value)) if vtype == V.FLOAT32 else value
        assert meta[key] == {"type": vtype.name, "value": want}, key
    for key, (sub, value) in arrays.items():
        want = [float(np.float32(v)) for v in value] if sub == V.FLOAT32 else value
        assert meta[key] == {"type": "ARRAY", "elem_type": sub.name, "value": want}, key
    assert meta["general.architecture"] == {"type": "STRING", "value": "llama"}
    assert meta["general.alignment"] == {"type": "UINT32", "value": 64}
    assert np.array_equal(ours["x"], np.ones((2, 64), dtype=np.float32))


def test_version_2_reads_and_big_endian_is_refused():
    d = scratch("gguf", "versions")
    data = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    q = gguf.quants.quantize(data, T.Q8_0)

    little = d / "little.gguf"
    w = gguf.GGUFWriter(str(little), "llama")
    w.add_tensor("w", q, raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    v2 = d / "v2.gguf"
    raw = bytearray(little.read_bytes())
    assert raw[4:8] == (3).to_bytes(4, "little")
    raw[4:8] = (2).to_bytes(4, "little")  # version 2 has version 3's little-endian layout
    v2.write_bytes(bytes(raw))
    ours, header = convert(v2, d)
    assert header["version"] == 2
    same_bits(ours["w"], gguf.quants.dequantize(q, T.Q8_0))

    big = d / "big.gguf"
    w = gguf.GGUFWriter(str(big), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("w", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    err = convert_error(big, d)
    assert f"gguf: {big}: a big-endian GGUF file (version 3" in err and "little-endian" in err, err


def test_convert_needs_an_output():
    require_cli()
    r = subprocess.run([CLI, "convert", "x.gguf"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "nothing to write" in r.stderr, r.stderr
