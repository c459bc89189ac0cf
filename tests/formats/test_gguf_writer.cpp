// Tests of the GGUF writer: a small file equals the bytes GGUF's layout prescribes (laid out by hand
// here), every metadata type and F32/F16 tensor reads back through GgufFile, and bad input is refused by name.
#include "peft/formats/gguf_writer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using peft::GgmlType;
using peft::GgufFile;
using peft::GgufType;
using peft::GgufValue;
using peft::GgufWriter;

namespace {

struct Tmp {
  fs::path dir;
  Tmp() {
    std::string tmpl = (fs::temp_directory_path() / "peft-gguf-writer-XXXXXX").string();
    dir = mkdtemp(tmpl.data());
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Little-endian fields, appended one by one.
struct Bytes {
  std::string b;
  Bytes& u32(uint32_t v) { for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>(v >> (8 * i))); return *this; }
  Bytes& u64(uint64_t v) { for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>(v >> (8 * i))); return *this; }
  Bytes& f32(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u32(u); }
  Bytes& str(const std::string& s) { u64(s.size()); b += s; return *this; }
  Bytes& pad(size_t align) { b.resize((b.size() + align - 1) / align * align, '\0'); return *this; }
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(GgufWriter, SmallFileHasTheLayoutOfTheFormat) {
  Tmp tmp;
  GgufWriter w;
  w.set_string("general.type", "adapter");
  w.set_float32("adapter.lora.alpha", 16.0f);
  w.add_tensor("t.lora_a", at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).reshape({2, 3}));
  w.add_tensor("u", at::tensor({0.5f}), GgmlType::F16);
  w.write(tmp.file("a.gguf"));

  Bytes e;
  e.b = "GGUF";
  e.u32(3).u64(2).u64(3);
  e.str("general.alignment").u32(4).u32(32);  // UINT32 32, first
  e.str("general.type").u32(8).str("adapter");
  e.str("adapter.lora.alpha").u32(6).f32(16.0f);
  e.str("t.lora_a").u32(2).u64(3).u64(2).u32(0).u64(0);  // ne = [3, 2]: the shape reversed; F32
  e.str("u").u32(1).u64(1).u32(1).u64(32);               // F16, after 24 bytes padded to 32
  e.pad(32);
  for (float f : {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}) e.f32(f);
  e.pad(32);
  e.b += std::string("\x00\x38", 2);  // 0.5 in IEEE half precision: 0x3800
  e.pad(32);
  EXPECT_EQ(read_bytes(tmp.file("a.gguf")), e.b);
  for (auto& entry : fs::directory_iterator(tmp.dir)) EXPECT_EQ(entry.path().filename(), "a.gguf") << "a temporary file was left";
}

TEST(GgufWriter, EveryValueTypeAndTensorReadsBack) {
  Tmp tmp;
  GgufWriter w;
  w.set_string("s", "h\xc3\xa9llo");
  w.set_uint32("u32", 4000000000u);
  w.set_int32("i32", -7);
  w.set_uint64("u64", 1ull << 40);
  w.set_float32("f32", 0.1f);
  w.set_float64("f64", 0.1);
  w.set_bool("b", true);
  w.set_string_array("sa", {"a", "", "ccc"});
  w.set_int32_array("ia", {1, -2, 3});
  w.set_float32_array("fa", {0.25f, -1.5f});
  GgufValue u8;
  u8.type = GgufType::ARRAY;
  u8.elem_type = GgufType::UINT8;
  u8.uints = {0, 255};
  w.set("u8a", u8);
  GgufValue empty;
  empty.type = GgufType::ARRAY;
  empty.elem_type = GgufType::INT32;
  w.set("empty", empty);
  auto a = at::randn({5, 7});
  auto h = at::randn({3, 2, 4});
  w.add_tensor("a", a);
  w.add_tensor("h", h, GgmlType::F16);
  w.add_tensor("d", at::randn({9}, at::kDouble));
  w.write(tmp.file("all.gguf"));

  GgufFile f(tmp.file("all.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.keys().front(), "general.alignment");
  EXPECT_EQ(f.get_string("s"), "h\xc3\xa9llo");
  EXPECT_EQ(f.value("u32").type, GgufType::UINT32);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.value("i32").type, GgufType::INT32);
  EXPECT_EQ(f.get_int("i32"), -7);
  EXPECT_EQ(f.get_uint("u64"), 1ull << 40);
  EXPECT_EQ(f.value("f32").type, GgufType::FLOAT32);
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(f.value("f64").type, GgufType::FLOAT64);
  EXPECT_EQ(f.get_float("f64"), 0.1);
  EXPECT_TRUE(f.get_bool("b"));
  EXPECT_EQ(f.get_string_array("sa"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_int_array("ia"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_float_array("fa"), (std::vector<double>{0.25, -1.5}));
  EXPECT_EQ(f.value("u8a").type_text(), "ARRAY of UINT8");
  EXPECT_EQ(f.value("u8a").uints, (std::vector<uint64_t>{0, 255}));
  EXPECT_EQ(f.value("empty").size(), 0u);

  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensor("a").ne, (std::vector<uint64_t>{7, 5}));
  EXPECT_EQ(f.tensor("a").ggml_type(), GgmlType::F32);
  EXPECT_EQ(f.tensor("h").ne, (std::vector<uint64_t>{4, 2, 3}));
  EXPECT_EQ(f.tensor("h").ggml_type(), GgmlType::F16);
  EXPECT_EQ(f.tensor("d").ggml_type(), GgmlType::F32);
  for (auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  auto back = [&](const std::string& name, at::IntArrayRef shape) {
    auto v = f.dequantize(name);
    return at::tensor(v).reshape(shape);
  };
  EXPECT_TRUE(at::equal(back("a", {5, 7}), a));
  EXPECT_TRUE(at::equal(back("h", {3, 2, 4}), h.to(at::kHalf).to(at::kFloat)));  // rounded once to half
}

TEST(GgufWriter, AnotherAlignmentAlignsTheData) {
  Tmp tmp;
  GgufWriter w;
  w.set_uint32("general.alignment", 64);
  w.add_tensor("x", at::ones({3}));
  w.add_tensor("y", at::ones({5}));
  w.write(tmp.file("a.gguf"));
  GgufFile f(tmp.file("a.gguf"));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.tensor("y").offset, 64u);
  EXPECT_EQ(f.keys(), (std::vector<std::string>{"general.alignment"}));
}

TEST(GgufWriter, RefusesWhatTheFormatOrLlamaCppCannotHold) {
  GgufWriter w;
  w.set_string("k", "v");
  EXPECT_NE(error_of([&] { w.set_string("k", "w"); }).find("\"k\": set twice"), std::string::npos);
  EXPECT_NE(error_of([&] { w.set_uint32("general.alignment", 48); }).find("power of two"), std::string::npos);
  EXPECT_NE(error_of([&] { w.set_int32("general.alignment", 32); }).find("UINT32"), std::string::npos);
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.elem_type = GgufType::ARRAY;
  EXPECT_NE(error_of([&] { w.set("n", nested); }).find("arrays of arrays"), std::string::npos);
  GgufValue big;
  big.type = big.elem_type = GgufType::UINT8;
  big.uints = {256};
  EXPECT_NE(error_of([&] { w.set("big", big); }).find("does not fit UINT8"), std::string::npos);

  w.add_tensor("t", at::ones({2}));
  EXPECT_NE(error_of([&] { w.add_tensor("t", at::ones({2})); }).find("'t': added twice"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("q", at::ones({32}), GgmlType::Q4_0); }).find("Q4_0 is not written"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("i", at::ones({2}, at::kLong)); }).find("floating-point"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("nan", at::full({2}, NAN)); }).find("'nan': has NaN"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("h", at::full({2}, 1e6), GgmlType::F16); }).find("F16's range"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor(std::string(64, 'x'), at::ones({2})); }).find("63 bytes"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("five", at::ones({1, 1, 1, 1, 1})); }).find("1 to 4"), std::string::npos);
  EXPECT_EQ(w.tensor_count(), 1u);

  Tmp tmp;
  auto missing = tmp.file("no/such/dir/a.gguf");
  EXPECT_NE(error_of([&] { w.write(missing); }).find(missing), std::string::npos);
}
