// Tests of the safetensors reader and writer: bit-exact round trips, sharded checkpoints,
// files written by Python, and a rejection with a precise message for each kind of bad file.
#include "peft/formats/safetensors.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using peft::load_safetensors;
using peft::save_safetensors;
using peft::SafeTensorsFile;

namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "peft_st_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // A file made of an explicit header length, header text and data bytes.
  std::string write_raw(const std::string& name, uint64_t n, const std::string& header, const std::string& data = "") {
    std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << data;
    return p;
  }
  std::string write_header(const std::string& name, const std::string& header, size_t data_bytes) {
    return write_raw(name, header.size(), header, std::string(data_bytes, '\x5a'));
  }

  std::string dir_;
};

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string bytes_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// Same dtype, shape and bytes.
void expect_identical(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  EXPECT_EQ(a.scalar_type(), b.scalar_type()) << what;
  EXPECT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(bytes_of(a) == bytes_of(b)) << what << ": bytes differ";
}

// Runs f, expects a std::runtime_error whose message holds every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no std::runtime_error thrown (expected one mentioning '" << parts.front() << "')";
}

// Random bits of the given dtype (bool gets 0/1 only: other bytes are not valid bools).
at::Tensor random_bits(at::ScalarType t, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  if (t == at::kBool) return at::randint(0, 2, shape, at::kByte).to(at::kBool);
  size_t width = c10::elementSize(t);
  at::Tensor bytes = at::randint(0, 256, {n * static_cast<int64_t>(width)}, at::kByte);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(t));
  std::memcpy(out.data_ptr(), bytes.data_ptr(), bytes.numel());
  return out;
}

const std::vector<std::pair<at::ScalarType, std::string>> kAllDtypes = {
    {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kDouble, "F64"}, {at::kLong, "I64"},
    {at::kInt, "I32"},   {at::kShort, "I16"}, {at::kChar, "I8"},       {at::kByte, "U8"},     {at::kBool, "BOOL"},
};

std::string golden_dir() { return std::string(PEFT_TEST_DATA) + "/golden"; }

}  // namespace

TEST(SafetensorsDtype, NamesMapBothWays) {
  for (const auto& [type, name] : kAllDtypes) {
    EXPECT_EQ(peft::dtype_from_safetensors(name), type) << name;
    EXPECT_EQ(peft::dtype_to_safetensors(type), name) << name;
  }
  expect_error([] { peft::dtype_from_safetensors("F8_E4M3"); }, {"unknown dtype", "F8_E4M3"});
  expect_error([] { peft::dtype_to_safetensors(at::kComplexFloat); }, {"ComplexFloat"});
}

TEST_F(SafetensorsTest, EveryDtypeRoundTripsBitExact) {
  std::map<std::string, at::Tensor> in;
  for (const auto& [type, name] : kAllDtypes) {
    in["t." + name] = random_bits(type, {3, 5});
    in["scalar." + name] = random_bits(type, {});
  }
  // Non-contiguous input is written in logical order.
  in["transposed"] = random_bits(at::kFloat, {4, 6}).t();
  std::string p = path("all.safetensors");
  save_safetensors(p, in);

  auto out = load_safetensors(p);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out.count(name)) << name;
    expect_identical(out[name], t, name);
    EXPECT_TRUE(out[name].is_contiguous()) << name;
    EXPECT_EQ(out[name].device().type(), at::kCPU) << name;
  }
  SafeTensorsFile f(p);
  EXPECT_EQ(f.info("t.BF16").dtype, "BF16");
  EXPECT_EQ(f.info("transposed").shape, (std::vector<int64_t>{6, 4}));
  EXPECT_TRUE(f.info("scalar.I64").shape.empty());
}

TEST_F(SafetensorsTest, WriterFollowsReferenceLayout) {
  // Larger dtypes first, then names in order; each tensor aligned; header padded with spaces to 8 bytes.
  std::map<std::string, at::Tensor> in = {
      {"a", at::ones({3}, at::kBool)},   {"b", at::ones({3}, at::kFloat)}, {"c", at::ones({1}, at::kDouble)},
      {"d", at::ones({3}, at::kBFloat16)}, {"e", at::ones({2}, at::kFloat)},
  };
  std::string p = path("layout.safetensors");
  save_safetensors(p, in, {{"format", "pt"}});
  std::string bytes = read_bytes(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  std::string header = bytes.substr(8, n);
  std::string expected =
            "{\"__metadata__\":{\"format\":\"pt\"},"
            "\"c\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]},"
            "\"e\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]},"
            "\"d\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[28,34]},"
            "\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[34,37]}}";
  expected.append((8 - expected.size() % 8) % 8, ' ');
  EXPECT_EQ(header, expected);
  EXPECT_EQ(bytes.size(), 8 + n + 37);
  SafeTensorsFile f(p);
  EXPECT_EQ(f.keys(), (std::vector<std::string>{"c", "b", "e", "d", "a"}));

  // No metadata and no tensors: "{}" padded, as the reference library writes it.
  std::string empty = path("empty.safetensors");
  save_safetensors(empty, {}, {});
  EXPECT_EQ(read_bytes(empty), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  EXPECT_TRUE(load_safetensors(empty).empty());
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"quote\"and\\slash", "line\nbreak\ttab"}, {"unicode", "h\xC3\xA9llo \xE2\x9C\x93"}, {"", ""}};
  std::string p = path("meta.safetensors");
  save_safetensors(p, {{"x", at::arange(4, at::kFloat)}}, meta);
  SafeTensorsFile f(p);
  EXPECT_EQ(f.metadata(), meta);
  expect_identical(f.tensor("x"), at::arange(4, at::kFloat), "x");

  // Default metadata is {"format": "pt"}.
  save_safetensors(p, {{"x", at::arange(4, at::kFloat)}});
  EXPECT_EQ(SafeTensorsFile(p).metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST_F(SafetensorsTest, ZeroSizedTensors) {
  std::map<std::string, at::Tensor> in = {
      {"empty", at::empty({0}, at::kFloat)},
      {"empty3d", at::empty({3, 0, 2}, at::kHalf)},
      {"full", at::arange(6, at::kLong).reshape({2, 3})},
  };
  std::string p = path("zero.safetensors");
  save_safetensors(p, in);
  SafeTensorsFile f(p);
  EXPECT_EQ(f.info("empty").begin, f.info("empty").end);
  EXPECT_EQ(f.info("empty3d").begin, f.info("empty3d").end);
  auto out = load_safetensors(p);
  for (const auto& [name, t] : in) expect_identical(out.at(name), t, name);

  // Hand-written: zero-sized tensors sharing an offset, inside and at the end of the data.
  std::string q = write_header("zero2.safetensors",
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"z1\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
                               "\"z2\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[8,8]},"
                               "\"z3\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                               8);
  auto out2 = load_safetensors(q);
  EXPECT_EQ(out2.at("z1").sizes(), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(out2.at("z3").numel(), 0);
}

TEST_F(SafetensorsTest, ReadsPaddedHeaderAndReportsKeysByOffset) {
  std::string p = write_header("padded.safetensors",
                               "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
                               "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}        ",
                               4);
  SafeTensorsFile f(p);
  EXPECT_EQ(f.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.contains("a"));
  EXPECT_FALSE(f.contains("c"));
  EXPECT_EQ(f.tensor("b")[1].item<uint8_t>(), 0x5a);
}

TEST_F(SafetensorsTest, TensorOutlivesFile) {
  std::string p = path("x.safetensors");
  save_safetensors(p, {{"x", at::arange(10, at::kInt)}});
  at::Tensor t;
  {
    SafeTensorsFile f(p);
    t = f.tensor("x");
  }
  fs::remove(p);
  expect_identical(t, at::arange(10, at::kInt), "x");
}

TEST_F(SafetensorsTest, UnknownTensorNameSuggestsSimilar) {
  std::string p = path("names.safetensors");
  save_safetensors(p, {{"model.layers.0.self_attn.q_proj.weight", at::zeros({1})},
                       {"model.layers.0.self_attn.k_proj.weight", at::zeros({1})},
                       {"lm_head.weight", at::zeros({1})}});
  SafeTensorsFile f(p);
  expect_error([&] { f.tensor("model.layers.0.self_attn.v_proj.weight"); },
               {p, "model.layers.0.self_attn.v_proj.weight", "no such tensor", "model.layers.0.self_attn.q_proj.weight"});
  expect_error([&] { f.info("nope"); }, {p, "'nope'", "no such tensor"});
}

TEST_F(SafetensorsTest, ShardedCheckpointByIndexAndDirectory) {
  std::string d = path("sharded");
  fs::create_directory(d);
  at::Tensor a = random_bits(at::kBFloat16, {4, 4}), b = random_bits(at::kFloat, {3}),
             c = random_bits(at::kLong, {2, 2});
  save_safetensors(d + "/model-00001-of-00002.safetensors", {{"a", a}, {"b", b}});
  save_safetensors(d + "/model-00002-of-00002.safetensors", {{"c", c}});
  nlohmann::json index = {{"metadata", {{"total_size", 60}}},
                          {"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00001-of-00002.safetensors"},
                            {"c", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(d + "/model.safetensors.index.json") << index.dump(2);

  for (const std::string& p : {d + "/model.safetensors.index.json", d}) {
    auto out = load_safetensors(p);
    ASSERT_EQ(out.size(), 3u) << p;
    expect_identical(out.at("a"), a, "a");
    expect_identical(out.at("b"), b, "b");
    expect_identical(out.at("c"), c, "c");
  }

  // A directory with a single file prefers it over the index.
  save_safetensors(d + "/model.safetensors", {{"only", at::ones({1})}});
  EXPECT_EQ(load_safetensors(d).count("only"), 1u);
  fs::remove(d + "/model.safetensors");

  // A shard that is missing.
  fs::remove(d + "/model-00002-of-00002.safetensors");
  expect_error([&] { load_safetensors(d); },
               {d + "/model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"});

  // A tensor mapped to a shard that does not hold it.
  index["weight_map"]["c"] = "model-00001-of-00002.safetensors";
  index["weight_map"]["ghost"] = "model-00001-of-00002.safetensors";
  std::ofstream(d + "/model.safetensors.index.json") << index.dump();
  expect_error([&] { load_safetensors(d); }, {"model.safetensors.index.json", "'c'", "does not hold"});

  // A malformed index.
  std::ofstream(d + "/model.safetensors.index.json") << "{\"weight_map\": [";
  expect_error([&] { load_safetensors(d); }, {"model.safetensors.index.json", "malformed index JSON"});
  std::ofstream(d + "/model.safetensors.index.json") << "{\"weight\": {}}";
  expect_error([&] { load_safetensors(d); }, {"model.safetensors.index.json", "weight_map"});

  // A directory with neither.
  std::string e = path("emptydir");
  fs::create_directory(e);
  expect_error([&] { load_safetensors(e); }, {"no model.safetensors or model.safetensors.index.json in " + e});
  expect_error([&] { load_safetensors(path("absent.safetensors")); }, {path("absent.safetensors"), "cannot open"});
}

TEST_F(SafetensorsTest, LoadsFilesWrittenByPython) {
  std::string p = golden_dir() + "/llama_a/base/model.safetensors";
  SafeTensorsFile f(p);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(f.keys().size(), 21u);
  at::Tensor emb = f.tensor("model.embed_tokens.weight");
  EXPECT_EQ(emb.scalar_type(), at::kFloat);
  EXPECT_EQ(emb.sizes(), (std::vector<int64_t>{256, 64}));
  const uint32_t expected[3] = {0xbcaf0838u, 0xbcc4a930u, 0x3b604950u};  // read from the file by hand
  EXPECT_EQ(std::memcmp(emb.data_ptr(), expected, sizeof expected), 0);

  // Save -> load gives identical bytes for every tensor.
  auto all = load_safetensors(p);
  std::string q = path("resaved.safetensors");
  save_safetensors(q, all, f.metadata());
  auto again = load_safetensors(q);
  ASSERT_EQ(again.size(), all.size());
  for (const auto& [name, t] : all) expect_identical(again.at(name), t, name);
}

TEST_F(SafetensorsTest, WriterReproducesPythonFilesByteForByte) {
  // Every safetensors file of the golden cases, read and written back, is the same file.
  int checked = 0;
  for (const auto& e : fs::recursive_directory_iterator(golden_dir())) {
    if (e.path().extension() != ".safetensors") continue;
    SafeTensorsFile f(e.path().string());
    std::map<std::string, at::Tensor> tensors;
    for (const auto& k : f.keys()) tensors[k] = f.tensor(k);
    std::string q = path("copy.safetensors");
    save_safetensors(q, tensors, f.metadata());
    EXPECT_TRUE(read_bytes(q) == read_bytes(e.path().string())) << e.path() << " differs when written back";
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

// ---- bad inputs: each is rejected with the file path, the tensor name and the fault ----

TEST_F(SafetensorsTest, RejectsTruncatedFiles) {
  std::string p = write_raw("short.safetensors", 0, "");
  fs::resize_file(p, 5);
  expect_error([&] { SafeTensorsFile f(p); }, {p, "truncated", "5 bytes"});
  std::string e = path("zero.safetensors");
  std::ofstream(e).close();
  expect_error([&] { SafeTensorsFile f(e); }, {e, "truncated"});

  // A good file cut in the middle of its data.
  std::string g = path("cut.safetensors");
  save_safetensors(g, {{"a", at::ones({16})}, {"b", at::ones({16})}});
  fs::resize_file(g, fs::file_size(g) - 10);
  expect_error([&] { SafeTensorsFile f(g); }, {g, "tensor 'b'", "beyond the data section"});
  expect_error([&] { load_safetensors(g); }, {g, "tensor 'b'"});
}

TEST_F(SafetensorsTest, RejectsHeaderLengthBeyondFile) {
  std::string h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  std::string p = write_raw("long.safetensors", h.size() + 100, h, "x");
  expect_error([&] { SafeTensorsFile f(p); }, {p, "header length", "beyond the file size"});
  for (uint64_t n : {~uint64_t(0), ~uint64_t(0) - 7, uint64_t(1) << 63}) {
    std::string q = write_raw("huge.safetensors", n, h, "x");
    expect_error([&] { SafeTensorsFile f(q); }, {q, "header length " + std::to_string(n)});
  }
}

TEST_F(SafetensorsTest, RejectsMalformedJson) {
  std::string p = write_header("bad.safetensors", "{\"a\":{\"dtype\":\"U8\",", 0);
  expect_error([&] { SafeTensorsFile f(p); }, {p, "malformed header JSON", "parse error"});
  std::string q = write_header("array.safetensors", "[1,2]", 0);
  expect_error([&] { SafeTensorsFile f(q); }, {q, "not a JSON object"});
  std::string r = write_raw("nul.safetensors", 8, std::string("{}\0\0\0\0\0\0", 8));
  expect_error([&] { SafeTensorsFile f(r); }, {r, "malformed header JSON", "NUL byte"});
  std::string m = write_header("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0);
  expect_error([&] { SafeTensorsFile f(m); }, {m, "__metadata__", "format", "not a string"});
  std::string m2 = write_header("meta2.safetensors", "{\"__metadata__\":[]}", 0);
  expect_error([&] { SafeTensorsFile f(m2); }, {m2, "__metadata__ is not an object"});
}

TEST_F(SafetensorsTest, RejectsBadEntries) {
  struct Case {
    std::string entry, fault;
  };
  const std::vector<Case> cases = {
      {"[1,2]", "not an object"},
      {"{\"shape\":[1],\"data_offsets\":[0,4]}", "lacks \"dtype\""},
      {"{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", "lacks \"shape\""},
      {"{\"dtype\":\"F32\",\"shape\":[1]}", "lacks \"data_offsets\""},
      {"{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}", "\"dtype\" is not a string"},
      {"{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}", "unknown dtype 'Q4'"},
      {"{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}", "\"shape\" is not an array"},
      {"{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", "not a non-negative integer: -1"},
      {"{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}", "not a non-negative integer: 1.5"},
      {"{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", "not a non-negative integer"},
      {"{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}", "not a non-negative integer"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}", "not a pair"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}", "not a pair"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}", "not a pair"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":1}}", "not a pair"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}", "begin after end"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}", "beyond the data section"},
      {"{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,18446744073709551615]}",
       "beyond the data section"},
      {"{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}", "hold 4 bytes but F32 shape [2] needs 8"},
      {"{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}", "needs 8"},
      {"{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}", "overflows"},
      {"{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}", "overflows"},
      {"{\"dtype\":\"U8\",\"shape\":[9223372036854775807,2,0],\"data_offsets\":[0,0]}", "overflows"},
      {"{\"dtype\":\"U8\",\"shape\":[0,9223372036854775807,2],\"data_offsets\":[0,0]}", "overflows"},
  };
  int i = 0;
  for (const auto& c : cases) {
    std::string p = write_header("e" + std::to_string(i++) + ".safetensors", "{\"w.bad\":" + c.entry + "}", 8);
    expect_error([&] { SafeTensorsFile f(p); }, {p, "tensor 'w.bad'", c.fault});
  }
}

TEST_F(SafetensorsTest, RejectsOverlappingOffsets) {
  std::string p = write_header("overlap.safetensors",
                               "{\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"second\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                               12);
  expect_error([&] { SafeTensorsFile f(p); }, {p, "tensor 'second'", "overlap", "'first'"});
  // Hidden behind a zero-sized tensor between them.
  std::string q = write_header("overlap2.safetensors",
                               "{\"big\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]},"
                               "\"hole\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]},"
                               "\"small\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[5,7]}}",
                               10);
  expect_error([&] { SafeTensorsFile f(q); }, {q, "tensor 'small'", "overlap", "'big'"});
  // The same range twice.
  std::string r = write_header("overlap3.safetensors",
                               "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                               "\"y\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                               4);
  expect_error([&] { SafeTensorsFile f(r); }, {r, "overlap"});
}

// ---- failed saves leave what was there ----

TEST_F(SafetensorsTest, FailedSaveKeepsExistingFile) {
  std::string p = path("keep.safetensors");
  save_safetensors(p, {{"orig", at::arange(8, at::kFloat)}});
  const std::string before = read_bytes(p);
  auto leftovers = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) ++n;
    return n;
  };

  // Rejected before anything is written: an undefined tensor, a dtype safetensors lacks.
  expect_error([&] { save_safetensors(p, {{"a", at::ones({2})}, {"undef", at::Tensor()}}); }, {p, "undef", "undefined"});
  expect_error([&] { save_safetensors(p, {{"c", at::ones({2}, at::kComplexFloat)}}); }, {p, "'c'", "ComplexFloat"});
  expect_error([&] { save_safetensors(p, {{"__metadata__", at::ones({2})}}); }, {p, "reserved"});
  EXPECT_EQ(read_bytes(p), before);
  EXPECT_EQ(leftovers(), 0);

  // A write that fails midway (the file size limit stops it after 4 KiB of a 4 MiB tensor).
  {
    struct rlimit old;
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 4096;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    try {
      save_safetensors(p, {{"big", at::zeros({1 << 20})}});
      ADD_FAILURE() << "save past the file size limit did not throw";
    } catch (const std::runtime_error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find("big"), std::string::npos) << msg;
      EXPECT_NE(msg.find("write"), std::string::npos) << msg;
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);
  }
  EXPECT_EQ(read_bytes(p), before);
  EXPECT_EQ(leftovers(), 0);

  // A directory that does not exist.
  std::string nowhere = path("no/such/dir/x.safetensors");
  expect_error([&] { save_safetensors(nowhere, {{"a", at::ones({1})}}); }, {nowhere, "cannot create"});

  // The target is a directory: the rename fails and the temp file goes.
  std::string d = path("isdir");
  fs::create_directory(d);
  fs::create_directory(d + "/inner");
  expect_error([&] { save_safetensors(d + "/inner", {{"a", at::ones({1})}}); }, {d + "/inner", "rename"});
  EXPECT_TRUE(fs::is_directory(d + "/inner"));
  for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().filename(), "inner");

  // And the original still loads.
  expect_identical(load_safetensors(p).at("orig"), at::arange(8, at::kFloat), "orig");
}

TEST_F(SafetensorsTest, MangledFilesNeverCrash) {
  // Byte flips, digit swaps and cuts of a valid file: each load either succeeds or throws
  // std::runtime_error naming the file; never a crash or an out-of-bounds read.
  std::string good = path("good.safetensors");
  save_safetensors(good, {{"a", random_bits(at::kFloat, {3, 2})},
                          {"b", random_bits(at::kBFloat16, {5})},
                          {"c", at::empty({0, 4}, at::kLong)},
                          {"d", random_bits(at::kBool, {7})}});
  const std::string bytes = read_bytes(good);
  const std::string p = path("mangled.safetensors");
  const char swaps[] = "0123456789[]{},:\"-.eE ";
  std::mt19937 rng(1234);
  int loaded = 0, rejected = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string m = bytes;
    int kind = round % 3;
    if (kind == 0) {
      m[rng() % m.size()] = static_cast<char>(rng() % 256);
    } else if (kind == 1) {
      size_t at = 8 + rng() % (m.size() - 8);
      m[at] = swaps[rng() % (sizeof swaps - 1)];
    } else {
      m.resize(rng() % m.size());
    }
    std::ofstream(p, std::ios::binary | std::ios::trunc) << m;
    try {
      auto t = load_safetensors(p);
      ++loaded;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 500);
  EXPECT_GT(loaded, 0);
}
