// Tests of the GGUF reader on files built byte by byte here: every metadata type reads back, and each
// kind of bad file (truncated, lying counts, bad alignment or offsets, unknown types) is refused naming what.
#include "peft/formats/gguf.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using peft::GgmlType;
using peft::GgufFile;
using peft::GgufType;

namespace {

// The bytes of a GGUF file, appended field by field in the file's little-endian layout.
struct Bytes {
  std::string b;
  Bytes& u8(uint8_t v) { b.push_back(static_cast<char>(v)); return *this; }
  Bytes& u16(uint16_t v) { for (int i = 0; i < 2; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); return *this; }
  Bytes& u32(uint32_t v) { for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); return *this; }
  Bytes& u64(uint64_t v) { for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); return *this; }
  Bytes& f32(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u32(u); }
  Bytes& f64(double f) { uint64_t u; std::memcpy(&u, &f, 8); return u64(u); }
  Bytes& str(const std::string& s) { u64(s.size()); b += s; return *this; }
  Bytes& raw(const std::string& s) { b += s; return *this; }

  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    return *this;
  }
  // A key and its value type (the value follows).
  Bytes& key(const std::string& k, GgufType t) { return str(k).u32(static_cast<uint32_t>(t)); }
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) u64(n);
    return u32(static_cast<uint32_t>(type)).u64(offset);
  }
  Bytes& pad(size_t alignment) { b.append((alignment - b.size() % alignment) % alignment, '\0'); return *this; }
};

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "peft_gguf_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) {
    std::string p = dir_ + "/" + name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << bytes;
    return p;
  }
  // The message of the error opening `bytes` as a GGUF file gives; checks it names the file.
  std::string open_error(const std::string& bytes, const std::string& name = "bad.gguf") {
    const std::string p = write(name, bytes);
    try {
      GgufFile f(p);
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(has(msg, "gguf: " + p + ": ")) << msg;
      return msg;
    }
    ADD_FAILURE() << "a bad file opened without an error: " << name;
    return "";
  }

  std::string dir_;
};

// A well-formed file: metadata of every type, an F32 tensor [3 x 2] and a Q8_0 tensor of one block,
// the data section aligned to 32, no padding after the last tensor (so every shorter file is bad).
std::string good_file() {
  Bytes f;
  f.header(2, 16);
  f.key("general.architecture", GgufType::STRING).str("llama");
  f.key("u8", GgufType::UINT8).u8(200);
  f.key("i8", GgufType::INT8).u8(0x80);  // -128
  f.key("u16", GgufType::UINT16).u16(65535);
  f.key("i16", GgufType::INT16).u16(0x8000);  // -32768
  f.key("u32", GgufType::UINT32).u32(4000000000u);
  f.key("i32", GgufType::INT32).u32(0xffffffffu);  // -1
  f.key("f32", GgufType::FLOAT32).f32(0.1f);
  f.key("bool", GgufType::BOOL).u8(1);
  f.key("u64", GgufType::UINT64).u64(18446744073709551615ull);
  f.key("i64", GgufType::INT64).u64(0x8000000000000000ull);  // INT64_MIN
  f.key("f64", GgufType::FLOAT64).f64(-2.5e300);
  f.key("strings", GgufType::ARRAY).u32(static_cast<uint32_t>(GgufType::STRING)).u64(3).str("a").str("").str("c\nd");
  f.key("ints", GgufType::ARRAY).u32(static_cast<uint32_t>(GgufType::INT32)).u64(3).u32(1).u32(0xfffffffeu).u32(7);
  f.key("empty", GgufType::ARRAY).u32(static_cast<uint32_t>(GgufType::FLOAT32)).u64(0);
  f.key("general.alignment", GgufType::UINT32).u32(32);
  f.tensor("w", {2, 3}, GgmlType::F32, 0);       // 24 bytes at 0
  f.tensor("q", {32}, GgmlType::Q8_0, 32);       // 34 bytes at 32
  f.pad(32);
  for (int i = 0; i < 6; ++i) f.f32(static_cast<float>(i) - 2.5f);
  f.pad(32);
  f.u16(0x3800);  // d = 0.5 in float16
  for (int i = 0; i < 32; ++i) f.u8(static_cast<uint8_t>(static_cast<int8_t>(i - 16)));
  return f.b;
}

TEST_F(GgufTest, GoodFileReadsEveryMetadataTypeAndTensor) {
  GgufFile f(write("good.gguf", good_file()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  ASSERT_EQ(f.keys().size(), 16u);
  EXPECT_EQ(f.keys().front(), "general.architecture");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("u8"), 200u);
  EXPECT_EQ(f.get_int("i8"), -128);
  EXPECT_EQ(f.get_uint("u16"), 65535u);
  EXPECT_EQ(f.get_int("i16"), -32768);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.get_int("i32"), -1);
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(f.get_bool("bool"), true);
  EXPECT_EQ(f.get_uint("u64"), 18446744073709551615ull);
  EXPECT_EQ(f.get_int("i64"), INT64_MIN);
  EXPECT_EQ(f.get_float("f64"), -2.5e300);
  EXPECT_EQ(f.get_float("u8"), 200.0);  // an integer reads as a number
  EXPECT_EQ(f.get_string_array("strings"), (std::vector<std::string>{"a", "", "c\nd"}));
  EXPECT_EQ(f.get_int_array("ints"), (std::vector<int64_t>{1, -2, 7}));
  EXPECT_EQ(f.get_float_array("ints"), (std::vector<double>{1, -2, 7}));
  EXPECT_TRUE(f.get_float_array("empty").empty());
  EXPECT_EQ(f.value("strings").type_text(), "ARRAY of STRING");
  EXPECT_EQ(f.value("f64").type, GgufType::FLOAT64);
  EXPECT_FALSE(f.find_string("no.such.key").has_value());
  EXPECT_EQ(f.find_uint("u32").value(), 4000000000u);

  ASSERT_EQ(f.tensors().size(), 2u);
  const auto& w = f.tensor("w");
  EXPECT_EQ(w.ne, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(w.torch_shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_STREQ(w.type_name(), "F32");
  EXPECT_EQ(w.nbytes, 24u);
  EXPECT_EQ(f.dequantize("w"), (std::vector<float>{-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f}));
  const auto& q = f.tensor("q");
  EXPECT_EQ(q.nbytes, 34u);
  EXPECT_EQ(q.offset, 32u);
  std::vector<float> expect;
  for (int i = 0; i < 32; ++i) expect.push_back(static_cast<float>(i - 16) * 0.5f);  // q * d, exact
  EXPECT_EQ(f.dequantize("q"), expect);
}

TEST_F(GgufTest, Version2ReadsLikeVersion3) {
  std::string bytes = good_file();
  bytes[4] = 2;
  GgufFile f(write("v2.gguf", bytes));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.dequantize("q").size(), 32u);
}

TEST_F(GgufTest, EveryTruncationIsAnErrorNamingTheFile) {
  const std::string bytes = good_file();
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::string msg = open_error(bytes.substr(0, n), "cut.gguf");
    EXPECT_FALSE(msg.empty()) << "truncated to " << n << " bytes";
  }
  // Where the cut falls says which field is missing.
  EXPECT_TRUE(has(open_error(bytes.substr(0, 10)), "shorter than the 24-byte GGUF header"));
  const size_t in_infos = bytes.find("q", bytes.find("general.alignment") + 20);  // inside tensor info 'q'
  EXPECT_TRUE(has(open_error(bytes.substr(0, in_infos + 6)), "tensor 'q'")) << open_error(bytes.substr(0, in_infos + 6));
  const std::string msg = open_error(bytes.substr(0, bytes.size() - 1));
  EXPECT_TRUE(has(msg, "tensor 'q'") && has(msg, "run past the end of the data section")) << msg;
}

TEST_F(GgufTest, HeaderFaultsAreNamed) {
  EXPECT_TRUE(has(open_error(Bytes().raw("GGML").u32(3).u64(0).u64(0).b), "not a GGUF file: it starts with 'GGML'"));
  EXPECT_TRUE(has(open_error(Bytes().header(0, 0, 1).b), "GGUF version 1 is not supported"));
  EXPECT_TRUE(has(open_error(Bytes().header(0, 0, 4).b), "unknown GGUF version 4"));
  // A big-endian file stores version 3 as 00 00 00 03.
  const std::string big = Bytes().raw("GGUF").u32(0x03000000u).u64(0).u64(0).b;
  EXPECT_TRUE(has(open_error(big), "big-endian GGUF file (version 3")) << open_error(big);
  // An empty file with no tensors and no metadata is valid.
  GgufFile f(write("empty.gguf", Bytes().header(0, 0).b));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.keys().empty());
}

TEST_F(GgufTest, LyingCountsAndLengthsAreRefusedBeforeAllocating) {
  std::string msg = open_error(Bytes().header(0, 1ull << 60).b);
  EXPECT_TRUE(has(msg, "1152921504606846976 metadata key/values")) << msg;
  msg = open_error(Bytes().header(1ull << 62, 0).b);
  EXPECT_TRUE(has(msg, "4611686018427387904 tensors")) << msg;
  msg = open_error(Bytes().header(0, 1).u64(1ull << 40).raw("general.name").b);
  EXPECT_TRUE(has(msg, "metadata key #0") && has(msg, "length 1099511627776")) << msg;
  msg = open_error(Bytes().header(0, 1).key("general.name", GgufType::STRING).u64(~0ull).raw("abc").b);
  EXPECT_TRUE(has(msg, "metadata key 'general.name'") && has(msg, "18446744073709551615")) << msg;
  msg = open_error(Bytes().header(0, 1).key("tokenizer.ggml.tokens", GgufType::ARRAY)
                       .u32(static_cast<uint32_t>(GgufType::STRING)).u64(1ull << 61).str("a").b);
  EXPECT_TRUE(has(msg, "metadata key 'tokenizer.ggml.tokens': array of 2305843009213693952 STRING elements")) << msg;
  // A string inside an array whose length runs past the end.
  msg = open_error(Bytes().header(0, 1).key("tokenizer.ggml.tokens", GgufType::ARRAY)
                       .u32(static_cast<uint32_t>(GgufType::STRING)).u64(2).str("a").u64(100).raw("bc").b);
  EXPECT_TRUE(has(msg, "metadata key 'tokenizer.ggml.tokens': STRING array element 1")) << msg;
}

TEST_F(GgufTest, MetadataFaultsNameTheKey) {
  std::string msg = open_error(Bytes().header(0, 1).key("odd", static_cast<GgufType>(13)).u32(0).b);
  EXPECT_TRUE(has(msg, "metadata key 'odd': unknown value type 13")) << msg;
  msg = open_error(Bytes().header(0, 1).key("nested", GgufType::ARRAY).u32(static_cast<uint32_t>(GgufType::ARRAY))
                       .u64(1).u32(0).u64(0).b);
  EXPECT_TRUE(has(msg, "metadata key 'nested': arrays of arrays are not supported")) << msg;
  msg = open_error(Bytes().header(0, 2).key("k", GgufType::UINT8).u8(1).key("k", GgufType::UINT8).u8(2).b);
  EXPECT_TRUE(has(msg, "metadata key 'k' appears twice")) << msg;
  msg = open_error(Bytes().header(0, 1).str("").u32(0).u8(0).raw(std::string(8, '\0')).b);
  EXPECT_TRUE(has(msg, "metadata key #0") && has(msg, "is empty")) << msg;
}

TEST_F(GgufTest, BadAlignmentIsRefused) {
  std::string msg = open_error(Bytes().header(0, 1).key("general.alignment", GgufType::UINT32).u32(48).b);
  EXPECT_TRUE(has(msg, "'general.alignment' is 48, not a power of 2")) << msg;
  msg = open_error(Bytes().header(0, 1).key("general.alignment", GgufType::UINT32).u32(0).b);
  EXPECT_TRUE(has(msg, "'general.alignment' is 0, not a power of 2")) << msg;
  msg = open_error(Bytes().header(0, 1).key("general.alignment", GgufType::UINT64).u64(32).b);
  EXPECT_TRUE(has(msg, "'general.alignment' must be UINT32, but is UINT64")) << msg;
  // An offset that is not a multiple of the alignment.
  Bytes f;
  f.header(1, 1).key("general.alignment", GgufType::UINT32).u32(64).tensor("t", {4}, GgmlType::F32, 32).pad(64);
  f.raw(std::string(64, '\0'));
  msg = open_error(f.b);
  EXPECT_TRUE(has(msg, "tensor 't': data offset 32 is not a multiple of the alignment 64")) << msg;
  // With alignment 16 the same file is good, and its data section starts at a multiple of 16.
  Bytes g;
  g.header(1, 1).key("general.alignment", GgufType::UINT32).u32(16).tensor("t", {4}, GgmlType::F32, 32).pad(16);
  const size_t start = g.b.size();
  g.raw(std::string(48, '\0'));
  GgufFile ok(write("align16.gguf", g.b));
  EXPECT_EQ(ok.alignment(), 16u);
  EXPECT_EQ(ok.data_offset(), start);
}

TEST_F(GgufTest, TensorInfoFaultsNameTheTensor) {
  auto one = [](const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data) {
    Bytes f;
    f.header(1, 0).str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) f.u64(n);
    f.u32(type).u64(offset).pad(32).raw(std::string(data, '\0'));
    return f.b;
  };
  std::string msg = open_error(one("blk.0.attn_q.weight", {4}, 99, 0, 16));
  EXPECT_TRUE(has(msg, "tensor 'blk.0.attn_q.weight' has unknown ggml type 99")) << msg;
  msg = open_error(one("retired", {32}, 4, 0, 32));  // Q4_2, retired from ggml
  EXPECT_TRUE(has(msg, "tensor 'retired' has unknown ggml type 4")) << msg;
  msg = open_error(one("w", {4}, 0, 32, 16));
  EXPECT_TRUE(has(msg, "tensor 'w': its 16 bytes of F32 [4] at data offset 32 run past the end")) << msg;
  msg = open_error(one("w", {4}, 0, ~0ull - 31, 16));
  EXPECT_TRUE(has(msg, "tensor 'w'") && has(msg, "run past the end")) << msg;
  msg = open_error(one("w", {1, 1, 1, 1, 1}, 0, 0, 4));
  EXPECT_TRUE(has(msg, "tensor 'w': 5 dimensions, more than ggml's 4")) << msg;
  msg = open_error(one("w", {100}, static_cast<uint32_t>(GgmlType::Q4_K), 0, 144));
  EXPECT_TRUE(has(msg, "tensor 'w': type Q4_K stores blocks of 256 elements") && has(msg, "hold 100")) << msg;
  msg = open_error(one("w", {1ull << 32, 1ull << 32}, 0, 0, 0));
  EXPECT_TRUE(has(msg, "tensor 'w': dims [4294967296, 4294967296] hold more than 2^63 elements")) << msg;
  msg = open_error(one("w", {1ull << 62}, 0, 0, 0));
  EXPECT_TRUE(has(msg, "tensor 'w': F32 dims [4611686018427387904] need more than 2^64 bytes")) << msg;
  msg = open_error(Bytes().header(1, 0).str("").u32(1).u64(1).u32(0).u64(0).b);
  EXPECT_TRUE(has(msg, "tensor info #0") && has(msg, "empty name")) << msg;

  Bytes dup;
  dup.header(2, 0).tensor("same", {4}, GgmlType::F32, 0).tensor("same", {4}, GgmlType::F32, 32).pad(32);
  dup.raw(std::string(64, '\0'));
  msg = open_error(dup.b);
  EXPECT_TRUE(has(msg, "tensor 'same' appears twice")) << msg;

  Bytes overlap;
  overlap.header(2, 0).tensor("a", {16}, GgmlType::F32, 0).tensor("b", {4}, GgmlType::F32, 32).pad(32);
  overlap.raw(std::string(64, '\0'));
  msg = open_error(overlap.b);
  EXPECT_TRUE(has(msg, "tensor 'b': data [32, 48) overlaps that of tensor 'a' [0, 64)")) << msg;

  // Zero-element tensors and a scalar (no dims) are valid.
  GgufFile f(write("small.gguf", one("s", {}, 0, 0, 4)));
  EXPECT_EQ(f.tensor("s").numel, 1u);
  EXPECT_TRUE(f.tensor("s").torch_shape().empty());
  GgufFile z(write("zero.gguf", one("z", {0, 3}, static_cast<uint32_t>(GgmlType::Q6_K), 0, 0)));
  EXPECT_EQ(z.tensor("z").nbytes, 0u);
  EXPECT_TRUE(z.dequantize("z").empty());
}

TEST_F(GgufTest, AccessErrorsNameTheKeyAndTheTypes) {
  const std::string p = write("good.gguf", good_file());
  GgufFile f(p);
  auto error_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  std::string msg = error_of([&] { f.get_uint("general.architecture"); });
  EXPECT_EQ(msg, "gguf: " + p + ": metadata key 'general.architecture' is STRING, but an integer is expected");
  msg = error_of([&] { f.get_string("u32"); });
  EXPECT_EQ(msg, "gguf: " + p + ": metadata key 'u32' is UINT32, but a STRING is expected");
  msg = error_of([&] { f.find_string("u32"); });  // present with another type: an error, not nullopt
  EXPECT_TRUE(has(msg, "metadata key 'u32' is UINT32")) << msg;
  msg = error_of([&] { f.get_string_array("ints"); });
  EXPECT_TRUE(has(msg, "metadata key 'ints' is ARRAY of INT32, but an ARRAY of STRING is expected")) << msg;
  msg = error_of([&] { f.get_bool("u8"); });
  EXPECT_TRUE(has(msg, "metadata key 'u8' is UINT8, but a BOOL is expected")) << msg;
  msg = error_of([&] { f.get_uint("i32"); });
  EXPECT_TRUE(has(msg, "metadata key 'i32' is -1, but a non-negative integer is expected")) << msg;
  msg = error_of([&] { f.get_int("u64"); });
  EXPECT_TRUE(has(msg, "metadata key 'u64' is 18446744073709551615, beyond the range of int64")) << msg;
  msg = error_of([&] { f.get_float("strings"); });
  EXPECT_TRUE(has(msg, "metadata key 'strings' is ARRAY of STRING, but a number is expected")) << msg;
  msg = error_of([&] { f.get_string("general.architectur"); });
  EXPECT_TRUE(has(msg, "gguf: " + p + ": metadata key 'general.architectur' is missing") &&
              has(msg, "similar: 'general.architecture'")) << msg;
  msg = error_of([&] { f.tensor("ww"); });
  EXPECT_TRUE(has(msg, "gguf: " + p + ": tensor 'ww': no such tensor") && has(msg, "similar: 'w'")) << msg;
}

TEST_F(GgufTest, UnsupportedTypesAreRefusedByName) {
  Bytes f;
  f.header(1, 0).tensor("blk.0.ffn_down.weight", {256}, GgmlType::IQ2_XXS, 0).pad(32).raw(std::string(66, '\0'));
  const std::string p = write("iq.gguf", f.b);
  GgufFile g(p);  // the infos read: the type is known
  EXPECT_STREQ(g.tensor("blk.0.ffn_down.weight").type_name(), "IQ2_XXS");
  try {
    g.dequantize("blk.0.ffn_down.weight");
    FAIL() << "IQ2_XXS dequantized";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "gguf: " + p + ": tensor 'blk.0.ffn_down.weight' has type IQ2_XXS, which "
              "peft.cpp cannot read yet; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, "
              "Q5_K, Q6_K");
  }
}

TEST(GgmlDequantize, HalfFloatsConvertExactly) {
  // float16 bit patterns with their values: zero, signed zero, the smallest subnormal, the largest
  // subnormal, one, the largest finite, infinity.
  const std::vector<std::pair<uint16_t, float>> cases = {
      {0x0000, 0.0f}, {0x8000, -0.0f}, {0x0001, std::ldexp(1.0f, -24)}, {0x03ff, 1023 * std::ldexp(1.0f, -24)},
      {0x3c00, 1.0f}, {0xc000, -2.0f}, {0x7bff, 65504.0f}, {0xfc00, -INFINITY}};
  for (auto [bits, value] : cases) {
    const uint8_t b[2] = {static_cast<uint8_t>(bits), static_cast<uint8_t>(bits >> 8)};
    float out = 1;
    peft::ggml_dequantize(GgmlType::F16, b, 1, &out);
    EXPECT_EQ(out, value) << std::hex << bits;
    EXPECT_EQ(std::signbit(out), std::signbit(value)) << std::hex << bits;
  }
  const uint8_t nan[2] = {0x01, 0x7e};
  float out = 0;
  peft::ggml_dequantize(GgmlType::F16, nan, 1, &out);
  EXPECT_TRUE(std::isnan(out));
  EXPECT_THROW(peft::ggml_dequantize(GgmlType::Q4_0, nan, 16, &out), std::invalid_argument);
}

}  // namespace
