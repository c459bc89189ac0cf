// GGUF reading: the header, metadata and tensor infos checked byte by byte against the file size
// (memory map, no allocation sized by an unchecked count), and ggml's block formats dequantized to float32.
#include "peft/formats/gguf.h"
#include "peft/core/strings.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "peft.cpp's GGUF reader copies float32 data as it is stored: it needs a little-endian host"
#endif

namespace peft {
namespace {

constexpr uint64_t kHeaderSize = 4 + 4 + 8 + 8;  // magic, version, tensor count, key/value count
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// The least bytes one entry can take, so that a count can be checked against the file size before
// anything is allocated for it: a key/value is a key length, one key byte, a value type and a value
// byte; a tensor info a name length, one name byte, the dim count, the type and the offset.
constexpr uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;

const GgmlTypeTraits* const kNoType = nullptr;

// ggml's type table (ggml.c / gguf-py constants.py): name, elements per block, bytes per block.
// The numbers without an entry were retired from ggml.
const GgmlTypeTraits kGgmlTypes[] = {
    {"F32", 1, 4, true},         {"F16", 1, 2, true},         {"Q4_0", 32, 18, true},      {"Q4_1", 32, 20, true},
    {nullptr, 0, 0, false},      {nullptr, 0, 0, false},      {"Q5_0", 32, 22, true},      {"Q5_1", 32, 24, true},
    {"Q8_0", 32, 34, true},      {"Q8_1", 32, 40, false},     {"Q2_K", 256, 84, true},     {"Q3_K", 256, 110, true},
    {"Q4_K", 256, 144, true},    {"Q5_K", 256, 176, true},    {"Q6_K", 256, 210, true},    {"Q8_K", 256, 292, false},
    {"IQ2_XXS", 256, 66, false}, {"IQ2_XS", 256, 74, false},  {"IQ3_XXS", 256, 98, false}, {"IQ1_S", 256, 50, false},
    {"IQ4_NL", 32, 18, false},   {"IQ3_S", 256, 110, false},  {"IQ2_S", 256, 82, false},   {"IQ4_XS", 256, 136, false},
    {"I8", 1, 1, false},         {"I16", 1, 2, false},        {"I32", 1, 4, false},        {"I64", 1, 8, false},
    {"F64", 1, 8, false},        {"IQ1_M", 256, 56, false},   {"BF16", 1, 2, true},        {nullptr, 0, 0, false},
    {nullptr, 0, 0, false},      {nullptr, 0, 0, false},      {"TQ1_0", 256, 54, false},   {"TQ2_0", 256, 66, false},
    {nullptr, 0, 0, false},      {nullptr, 0, 0, false},      {nullptr, 0, 0, false},      {"MXFP4", 32, 17, false},
    {"NVFP4", 64, 36, false},    {"Q1_0", 128, 18, false},
};
constexpr uint32_t kGgmlTypeCount = sizeof(kGgmlTypes) / sizeof(kGgmlTypes[0]);

std::string errno_text() { return std::strerror(errno); }

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

// "; similar: 'a', 'b'" for up to three names close to `name`, or "".
template <class Names>
std::string similar(const std::string& name, const Names& names) {
  std::vector<std::pair<size_t, std::string>> near;
  for (const std::string& n : names) {
    size_t d = edit_distance(name, n);
    if (d <= std::max<size_t>(3, name.size() / 3)) near.emplace_back(d, n);
  }
  std::sort(near.begin(), near.end());
  std::string s;
  for (size_t i = 0; i < near.size() && i < 3; ++i) s += (i ? ", " : "; similar: ") + in_quotes(near[i].second);
  return s;
}

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t le64(const uint8_t* p) { return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32); }

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE half -> single, exact for every value (NaN payloads kept).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));         // inf, NaN
  if (exponent != 0) return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));  // normal
  // Zero or subnormal: mantissa * 2^-24, which is exact in float32.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
  return sign ? -magnitude : magnitude;
}

float f16_at(const uint8_t* p) { return half_to_float(le16(p)); }

[[noreturn]] void fail_file(const std::string& path, const std::string& what) {
  throw std::runtime_error("gguf: " + path + ": " + what);
}

// Reads the header area of the mapped file; every read is checked against the file's end.
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, uint64_t size) : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const { fail_file(path_, what); }

  // `what` names the field for the error ("metadata key 'x': array length").
  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail(what + " at byte " + std::to_string(pos_) + " needs " + std::to_string(n) + " bytes, but the file ends at " +
           std::to_string(size_) + " (truncated?)");
  }
  const uint8_t* take(uint64_t n, const std::string& what) {
    need(n, what);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8(const std::string& what) { return *take(1, what); }
  uint16_t u16(const std::string& what) { return le16(take(2, what)); }
  uint32_t u32(const std::string& what) { return le32(take(4, what)); }
  uint64_t u64(const std::string& what) { return le64(take(8, what)); }
  std::string str(const std::string& what) {
    const uint64_t start = pos_;
    const uint64_t n = u64(what + " length");
    if (n > left())
      fail(what + " at byte " + std::to_string(start) + " has length " + std::to_string(n) + ", beyond the " +
           std::to_string(left()) + " bytes left in the file (truncated, or not a string?)");
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

bool is_unsigned(GgufType t) {
  return t == GgufType::UINT8 || t == GgufType::UINT16 || t == GgufType::UINT32 || t == GgufType::UINT64;
}
bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 || t == GgufType::INT64;
}
bool is_integer(GgufType t) { return is_unsigned(t) || is_signed(t); }
bool is_float(GgufType t) { return t == GgufType::FLOAT32 || t == GgufType::FLOAT64; }

// The least bytes one value of type `t` takes in the file (a string: its length field).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 4 + 8;
  }
  return 1;
}

// Reads one value of scalar type `t` and appends it to the vector of its kind in `v`.
void read_element(Reader& r, GgufType t, GgufValue& v, const std::string& what) {
  switch (t) {
    case GgufType::UINT8: v.uints.push_back(r.u8(what)); break;
    case GgufType::UINT16: v.uints.push_back(r.u16(what)); break;
    case GgufType::UINT32: v.uints.push_back(r.u32(what)); break;
    case GgufType::UINT64: v.uints.push_back(r.u64(what)); break;
    case GgufType::INT8: v.ints.push_back(static_cast<int8_t>(r.u8(what))); break;
    case GgufType::INT16: v.ints.push_back(static_cast<int16_t>(r.u16(what))); break;
    case GgufType::INT32: v.ints.push_back(static_cast<int32_t>(r.u32(what))); break;
    case GgufType::INT64: v.ints.push_back(static_cast<int64_t>(r.u64(what))); break;
    case GgufType::FLOAT32: v.floats.push_back(bits_to_float(r.u32(what))); break;
    case GgufType::FLOAT64: {
      const uint64_t bits = r.u64(what);
      double d;
      std::memcpy(&d, &bits, 8);
      v.floats.push_back(d);
      break;
    }
    case GgufType::BOOL: v.uints.push_back(r.u8(what) != 0); break;  // any non-zero byte is true, as in ggml
    case GgufType::STRING: v.strings.push_back(r.str(what)); break;
    case GgufType::ARRAY: r.fail(what + ": arrays of arrays are not supported");
  }
}

// Room for n elements, at most 65536 ahead: the count was checked against the bytes left, but an
// element takes more memory than file bytes, so the vectors grow only as elements are really read.
void reserve(GgufValue& v, GgufType t, uint64_t n) {
  n = std::min<uint64_t>(n, 65536);
  if (is_unsigned(t) || t == GgufType::BOOL) v.uints.reserve(n);
  else if (is_signed(t)) v.ints.reserve(n);
  else if (is_float(t)) v.floats.reserve(n);
  else if (t == GgufType::STRING) v.strings.reserve(n);
}

GgufValue read_value(Reader& r, const std::string& key) {
  const std::string what = "metadata key " + in_quotes(key);
  const uint64_t type_pos = r.pos();
  const uint32_t type = r.u32(what + ": value type");
  if (!is_known_value_type(type))
    r.fail(what + ": unknown value type " + std::to_string(type) + " at byte " + std::to_string(type_pos) +
           " (GGUF has 0..12)");
  GgufValue v;
  v.type = v.elem_type = static_cast<GgufType>(type);
  if (v.type != GgufType::ARRAY) {
    read_element(r, v.type, v, what + ": " + gguf_type_name(v.type) + " value");
    return v;
  }
  const uint32_t elem = r.u32(what + ": array element type");
  if (!is_known_value_type(elem))
    r.fail(what + ": array of unknown value type " + std::to_string(elem) + " (GGUF has 0..12)");
  v.elem_type = static_cast<GgufType>(elem);
  if (v.elem_type == GgufType::ARRAY) r.fail(what + ": arrays of arrays are not supported");
  const uint64_t n = r.u64(what + ": array length");
  const uint64_t least = min_value_bytes(v.elem_type);
  if (n > r.left() / least)
    r.fail(what + ": array of " + std::to_string(n) + " " + gguf_type_name(v.elem_type) + " elements cannot fit in the " +
           std::to_string(r.left()) + " bytes left in the file (truncated, or a wrong length?)");
  reserve(v, v.elem_type, n);
  const std::string elem_what = what + ": " + gguf_type_name(v.elem_type) + " array element";
  for (uint64_t i = 0; i < n; ++i) read_element(r, v.elem_type, v, elem_what + " " + std::to_string(i));
  return v;
}

std::string dims_text(const std::vector<uint64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// Dequantizers, one block at a time; `b` is the block's bytes, `y` receives its block_size values, in
// ggml's layouts (ggml-common.h). Every intermediate product is exact in float32 (a float16 scale has
// 11 significant bits, the integer factors at most 8 + 6), so only the last operation rounds: each value
// is the exact formula rounded once, the same bits as ggml and gguf-py, fused multiply-add or not.

void block_q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void block_q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void block_q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint32_t qh = le32(b + 2);  // bit j: the fifth bit of element j
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo - 16) * d;
    y[j + 16] = static_cast<float>(hi - 16) * d;
  }
}

void block_q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint32_t qh = le32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + 16] = static_cast<float>(hi) * d + m;
  }
}

void block_q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// K-quants: 256 elements in 16 groups of 16 (Q2_K, Q3_K, Q6_K) or 8 groups of 32 (Q4_K, Q5_K).
// Their 2-bit planes: element e of a half (128 elements) sits in byte e % 32 at bit 2 * (e / 32).

void block_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;  // per group: low nibble scale, high nibble min
  const uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int g = 0; g < 16; ++g) {
    const float dl = d * static_cast<float>(scales[g] & 0x0f);
    const float ml = dmin * static_cast<float>(scales[g] >> 4);
    for (int k = 0; k < 16; ++k) {
      const int e = g * 16 + k, half = e / 128, r = e % 128;
      const int q = (qs[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
      y[e] = dl * static_cast<float>(q) - ml;
    }
  }
}

void block_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;  // bit e / 32 of byte e % 32: set means no -4 offset
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;  // 16 six-bit scales: low nibbles in bytes 0..7, high pairs in 8..11
  const float d = f16_at(b + 108);
  for (int g = 0; g < 16; ++g) {
    const int low = g < 8 ? (sc[g] & 0x0f) : (sc[g - 8] >> 4);
    const int high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
    const float dl = d * static_cast<float>((low | (high << 4)) - 32);
    for (int k = 0; k < 16; ++k) {
      const int e = g * 16 + k, half = e / 128, r = e % 128;
      const int q = (qs[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
      const int offset = (hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4;
      y[e] = dl * static_cast<float>(q - offset);
    }
  }
}

// The 8 six-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes.
void k_scale_min(const uint8_t* s, int j, int& scale, int& min) {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 2) & 0x30);
    min = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

void block_q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;  // group j: nibble j % 2 of bytes 32 * (j / 2) ..
  for (int j = 0; j < 8; ++j) {
    int scale, min;
    k_scale_min(scales, j, scale, min);
    const float d1 = d * static_cast<float>(scale), m1 = dmin * static_cast<float>(min);
    const uint8_t* q = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) y[j * 32 + l] = d1 * static_cast<float>((q[l] >> shift) & 0x0f) - m1;
  }
}

void block_q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;  // bit j of byte l: the fifth bit of element l of group j
  const uint8_t* qs = b + 48;
  for (int j = 0; j < 8; ++j) {
    int scale, min;
    k_scale_min(scales, j, scale, min);
    const float d1 = d * static_cast<float>(scale), m1 = dmin * static_cast<float>(min);
    const uint8_t* q = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
      y[j * 32 + l] = d1 * static_cast<float>(v) - m1;
    }
  }
}

void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;        // low 4 bits: half h, element r: nibble r / 64 of byte 64 h + r % 64
  const uint8_t* qh = b + 128;  // high 2 bits: 2-bit plane r / 32 of byte 32 h + r % 32
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int g = 0; g < 16; ++g) {
    const float dl = d * static_cast<float>(scales[g]);
    for (int k = 0; k < 16; ++k) {
      const int e = g * 16 + k, half = e / 128, r = e % 128;
      const int lo = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int hi = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
      y[e] = dl * static_cast<float>((lo | (hi << 4)) - 32);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return block_q4_0;
    case GgmlType::Q4_1: return block_q4_1;
    case GgmlType::Q5_0: return block_q5_0;
    case GgmlType::Q5_1: return block_q5_1;
    case GgmlType::Q8_0: return block_q8_0;
    case GgmlType::Q2_K: return block_q2_k;
    case GgmlType::Q3_K: return block_q3_k;
    case GgmlType::Q4_K: return block_q4_k;
    case GgmlType::Q5_K: return block_q5_k;
    case GgmlType::Q6_K: return block_q6_k;
    default: return nullptr;
  }
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* const names[] = {"UINT8", "INT8",   "UINT16", "INT16", "UINT32", "INT32",  "FLOAT32",
                                      "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<uint32_t>(t);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown type";
}

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  if (type >= kGgmlTypeCount || !kGgmlTypes[type].name) return kNoType;
  return &kGgmlTypes[type];
}

std::string ggml_dequantizable_types() {
  // In the order a reader looks for them: plain floats, then the legacy and the K block formats.
  static const GgmlType order[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                                   GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K,
                                   GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
  std::string s;
  for (GgmlType t : order) s += (s.empty() ? "" : ", ") + std::string(ggml_type_traits(static_cast<uint32_t>(t))->name);
  return s;
}

size_t GgufValue::size() const { return uints.size() + ints.size() + floats.size() + strings.size(); }

std::string GgufValue::type_text() const {
  if (!is_array()) return gguf_type_name(type);
  return std::string("ARRAY of ") + gguf_type_name(elem_type);
}

const char* GgufTensorInfo::type_name() const {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t ? t->name : "unknown";
}

std::vector<int64_t> GgufTensorInfo::torch_shape() const {
  return std::vector<int64_t>(ne.rbegin(), ne.rend());
}

void ggml_dequantize(GgmlType type, const uint8_t* data, uint64_t numel, float* out) {
  const GgmlTypeTraits* traits = ggml_type_traits(static_cast<uint32_t>(type));
  if (!traits || !traits->can_dequantize)
    throw std::invalid_argument(std::string("cannot dequantize ggml type ") +
                                (traits ? traits->name : std::to_string(static_cast<uint32_t>(type))) +
                                "; supported: " + ggml_dequantizable_types());
  if (numel % traits->block_size != 0)
    throw std::invalid_argument(std::to_string(numel) + " elements are not whole " + traits->name + " blocks of " +
                                std::to_string(traits->block_size));
  switch (type) {
    case GgmlType::F32:
      if (numel) std::memcpy(out, data, numel * 4);
      return;
    case GgmlType::F16:
      for (uint64_t i = 0; i < numel; ++i) out[i] = f16_at(data + 2 * i);
      return;
    case GgmlType::BF16:
      for (uint64_t i = 0; i < numel; ++i) out[i] = bits_to_float(static_cast<uint32_t>(le16(data + 2 * i)) << 16);
      return;
    default: break;
  }
  const BlockFn fn = block_fn(type);
  const uint64_t blocks = numel / traits->block_size;
  for (uint64_t i = 0; i < blocks; ++i) fn(data + i * traits->type_size, out + i * traits->block_size);
}

GgufFile::GgufFile(const std::string& path) : path_(path) {
  auto fail = [this](const std::string& what) { fail_file(path_, what); };

  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("cannot open: " + errno_text());
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) fail("cannot stat: " + errno_text());
    if (!S_ISREG(st.st_mode)) fail("not a regular file");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < kHeaderSize)
      fail("file truncated or not GGUF: " + std::to_string(size_) + " bytes, shorter than the " +
           std::to_string(kHeaderSize) + "-byte GGUF header");
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) fail("cannot memory-map: " + errno_text());
    map_ = static_cast<const uint8_t*>(m);

    Reader r(path_, map_, size_);
    const uint8_t* magic = r.take(4, "magic");
    if (std::memcmp(magic, "GGUF", 4) != 0) {
      std::string shown;
      for (int i = 0; i < 4; ++i) shown += (magic[i] >= 0x20 && magic[i] < 0x7f) ? static_cast<char>(magic[i]) : '?';
      fail("not a GGUF file: it starts with '" + shown + "', not 'GGUF'");
    }
    version_ = r.u32("version");
    const uint32_t swapped = __builtin_bswap32(version_);
    if (version_ != 0 && (version_ & 0xffffu) == 0)
      fail("a big-endian GGUF file (version " + std::to_string(swapped) +
           " stored byte-swapped); peft.cpp reads little-endian GGUF files only");
    if (version_ == 1)
      fail("GGUF version 1 is not supported (peft.cpp reads versions 2 and 3; convert the model "
           "again with a current llama.cpp)");
    if (version_ != 2 && version_ != 3)
      fail("unknown GGUF version " + std::to_string(version_) + " (peft.cpp reads versions 2 and 3)");

    const uint64_t n_tensors = r.u64("tensor count");
    const uint64_t n_kv = r.u64("metadata key/value count");
    if (n_kv > r.left() / kMinKeyValueBytes)
      fail("the header says " + std::to_string(n_kv) + " metadata key/values, but the " + std::to_string(r.left()) +
           " bytes after it hold at most " + std::to_string(r.left() / kMinKeyValueBytes) +
           " (truncated, or a wrong count?)");
    if (n_tensors > r.left() / kMinTensorInfoBytes)
      fail("the header says " + std::to_string(n_tensors) + " tensors, but the " + std::to_string(r.left()) +
           " bytes after it hold at most " + std::to_string(r.left() / kMinTensorInfoBytes) +
           " tensor infos (truncated, or a wrong count?)");

    for (uint64_t i = 0; i < n_kv; ++i) {
      const uint64_t at = r.pos();
      std::string key = r.str("metadata key #" + std::to_string(i));
      if (key.empty()) fail("metadata key #" + std::to_string(i) + " at byte " + std::to_string(at) + " is empty");
      if (metadata_.count(key)) fail("metadata key " + in_quotes(key) + " appears twice (again at byte " + std::to_string(at) + ")");
      GgufValue v = read_value(r, key);
      metadata_.emplace(key, std::move(v));
      keys_.push_back(std::move(key));
    }

    auto al = metadata_.find("general.alignment");
    if (al != metadata_.end()) {
      if (al->second.type != GgufType::UINT32)
        fail("metadata key 'general.alignment' must be UINT32, but is " + al->second.type_text());
      alignment_ = al->second.uints[0];
      if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
        fail("metadata key 'general.alignment' is " + std::to_string(alignment_) + ", not a power of 2");
    } else {
      alignment_ = kDefaultAlignment;
    }

    for (uint64_t i = 0; i < n_tensors; ++i) {
      const uint64_t at = r.pos();
      GgufTensorInfo t;
      t.name = r.str("tensor info #" + std::to_string(i) + ": name");
      if (t.name.empty()) fail("tensor info #" + std::to_string(i) + " at byte " + std::to_string(at) + " has an empty name");
      const std::string what = "tensor " + in_quotes(t.name);
      if (tensor_index_.count(t.name)) fail(what + " appears twice (again as tensor info #" + std::to_string(i) + ")");
      const uint32_t n_dims = r.u32(what + ": dimension count");
      if (n_dims > kMaxDims)
        fail(what + ": " + std::to_string(n_dims) + " dimensions, more than ggml's " + std::to_string(kMaxDims));
      t.numel = 1;
      bool too_many = false;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t n = r.u64(what + ": dimension " + std::to_string(d));
        t.ne.push_back(n);
        if (__builtin_mul_overflow(t.numel, n, &t.numel)) too_many = true;
      }
      if (too_many || t.numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(what + ": dims " + dims_text(t.ne) + " hold more than 2^63 elements");
      t.type = r.u32(what + ": type");
      const GgmlTypeTraits* traits = ggml_type_traits(t.type);
      if (!traits)
        fail(what + " has unknown ggml type " + std::to_string(t.type) +
             " (not one of ggml's types that peft.cpp knows: a newer ggml, or not a GGUF tensor info?)");
      const uint64_t row = t.ne.empty() ? 1 : t.ne[0];
      if (row % traits->block_size != 0)
        fail(what + ": type " + traits->name + " stores blocks of " + std::to_string(traits->block_size) +
             " elements, but its rows (ne[0] of dims " + dims_text(t.ne) + ") hold " + std::to_string(row));
      if (__builtin_mul_overflow(t.numel / traits->block_size, static_cast<uint64_t>(traits->type_size), &t.nbytes))
        fail(what + ": " + traits->name + " dims " + dims_text(t.ne) + " need more than 2^64 bytes");
      t.offset = r.u64(what + ": data offset");
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment after the tensor infos.
    const uint64_t end_of_infos = r.pos();
    if (__builtin_add_overflow(end_of_infos, alignment_ - 1, &data_offset_))
      fail("the data section's start overflows with general.alignment " + std::to_string(alignment_));
    data_offset_ -= data_offset_ % alignment_;
    if (!tensors_.empty() && data_offset_ > size_)
      fail("the data section would start at byte " + std::to_string(data_offset_) + " (tensor infos end at " +
           std::to_string(end_of_infos) + ", aligned to " + std::to_string(alignment_) + "), beyond the end of the file (" +
           std::to_string(size_) + " bytes; truncated?)");
    const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;

    for (const GgufTensorInfo& t : tensors_) {
      const std::string what = "tensor " + in_quotes(t.name);
      if (t.offset % alignment_ != 0)
        fail(what + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
             std::to_string(alignment_));
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        fail(what + ": its " + std::to_string(t.nbytes) + " bytes of " + t.type_name() + " " + dims_text(t.ne) +
             " at data offset " + std::to_string(t.offset) + " run past the end of the data section (" +
             std::to_string(data_size) + " bytes from byte " + std::to_string(data_offset_) + "; truncated?)");
    }

    // No two tensors may share bytes: in order of offsets, each starts at or after the furthest end so far.
    std::vector<const GgufTensorInfo*> order;
    for (const GgufTensorInfo& t : tensors_)
      if (t.nbytes) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
      return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
    });
    const GgufTensorInfo* furthest = nullptr;
    for (const GgufTensorInfo* t : order) {
      if (furthest && furthest->offset + furthest->nbytes > t->offset)
        fail("tensor " + in_quotes(t->name) + ": data [" + std::to_string(t->offset) + ", " +
             std::to_string(t->offset + t->nbytes) + ") overlaps that of tensor " + in_quotes(furthest->name) + " [" +
             std::to_string(furthest->offset) + ", " + std::to_string(furthest->offset + furthest->nbytes) + ")");
      if (!furthest || t->offset + t->nbytes > furthest->offset + furthest->nbytes) furthest = t;
    }
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    ::close(fd_);
    throw;
  }
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void GgufFile::fail_key(const std::string& key, const std::string& what) const {
  throw std::runtime_error("gguf: " + path_ + ": metadata key " + in_quotes(key) + " " + what);
}

void GgufFile::missing_key(const std::string& key) const {
  fail_key(key, "is missing (the file has " + std::to_string(keys_.size()) + " keys" + similar(key, keys_) + ")");
}

const GgufValue& GgufFile::value(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) missing_key(key);
  return it->second;
}

const GgufValue* GgufFile::typed(const std::string& key, const char* wanted, bool (*accepts)(const GgufValue&)) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return nullptr;
  if (!accepts(it->second)) fail_key(key, "is " + it->second.type_text() + ", but " + wanted + " is expected");
  return &it->second;
}

namespace {
bool accepts_string(const GgufValue& v) { return v.type == GgufType::STRING; }
bool accepts_integer(const GgufValue& v) { return is_integer(v.type); }
bool accepts_number(const GgufValue& v) { return is_integer(v.type) || is_float(v.type); }
bool accepts_bool(const GgufValue& v) { return v.type == GgufType::BOOL; }
bool accepts_string_array(const GgufValue& v) { return v.is_array() && v.elem_type == GgufType::STRING; }
bool accepts_integer_array(const GgufValue& v) { return v.is_array() && is_integer(v.elem_type); }
bool accepts_number_array(const GgufValue& v) { return v.is_array() && (is_integer(v.elem_type) || is_float(v.elem_type)); }
}  // namespace

std::optional<std::string> GgufFile::find_string(const std::string& key) const {
  const GgufValue* v = typed(key, "a STRING", accepts_string);
  if (!v) return std::nullopt;
  return v->strings[0];
}

std::optional<uint64_t> GgufFile::find_uint(const std::string& key) const {
  const GgufValue* v = typed(key, "an integer", accepts_integer);
  if (!v) return std::nullopt;
  if (!v->uints.empty()) return v->uints[0];
  if (v->ints[0] < 0) fail_key(key, "is " + std::to_string(v->ints[0]) + ", but a non-negative integer is expected");
  return static_cast<uint64_t>(v->ints[0]);
}

std::optional<int64_t> GgufFile::find_int(const std::string& key) const {
  const GgufValue* v = typed(key, "an integer", accepts_integer);
  if (!v) return std::nullopt;
  if (!v->ints.empty()) return v->ints[0];
  if (v->uints[0] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail_key(key, "is " + std::to_string(v->uints[0]) + ", beyond the range of int64");
  return static_cast<int64_t>(v->uints[0]);
}

std::optional<double> GgufFile::find_float(const std::string& key) const {
  const GgufValue* v = typed(key, "a number", accepts_number);
  if (!v) return std::nullopt;
  if (!v->floats.empty()) return v->floats[0];
  if (!v->ints.empty()) return static_cast<double>(v->ints[0]);
  return static_cast<double>(v->uints[0]);
}

std::optional<bool> GgufFile::find_bool(const std::string& key) const {
  const GgufValue* v = typed(key, "a BOOL", accepts_bool);
  if (!v) return std::nullopt;
  return v->uints[0] != 0;
}

std::optional<std::vector<std::string>> GgufFile::find_string_array(const std::string& key) const {
  const GgufValue* v = typed(key, "an ARRAY of STRING", accepts_string_array);
  if (!v) return std::nullopt;
  return v->strings;
}

template <typename T>
T GgufFile::required(const std::string& key, std::optional<T> value) const {
  if (!value) missing_key(key);
  return *std::move(value);
}

std::string GgufFile::get_string(const std::string& key) const { return required(key, find_string(key)); }
uint64_t GgufFile::get_uint(const std::string& key) const { return required(key, find_uint(key)); }
int64_t GgufFile::get_int(const std::string& key) const { return required(key, find_int(key)); }
double GgufFile::get_float(const std::string& key) const { return required(key, find_float(key)); }
bool GgufFile::get_bool(const std::string& key) const { return required(key, find_bool(key)); }
std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  return required(key, find_string_array(key));
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = typed(key, "an ARRAY of integers", accepts_integer_array);
  if (!v) missing_key(key);
  if (!v->ints.empty() || v->uints.empty()) return v->ints;
  std::vector<int64_t> out;
  out.reserve(v->uints.size());
  for (size_t i = 0; i < v->uints.size(); ++i) {
    if (v->uints[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail_key(key, "element " + std::to_string(i) + " is " + std::to_string(v->uints[i]) + ", beyond the range of int64");
    out.push_back(static_cast<int64_t>(v->uints[i]));
  }
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = typed(key, "an ARRAY of numbers", accepts_number_array);
  if (!v) missing_key(key);
  if (!v->floats.empty()) return v->floats;
  std::vector<double> out;
  out.reserve(v->size());
  for (int64_t x : v->ints) out.push_back(static_cast<double>(x));
  for (uint64_t x : v->uints) out.push_back(static_cast<double>(x));
  return out;
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  if (it != tensor_index_.end()) return tensors_[it->second];
  std::vector<std::string> names;
  for (const GgufTensorInfo& t : tensors_) names.push_back(t.name);
  throw std::runtime_error("gguf: " + path_ + ": tensor " + in_quotes(name) + ": no such tensor (the file holds " +
                           std::to_string(tensors_.size()) + ")" + similar(name, names));
}

const GgufTensorInfo& GgufFile::readable(const std::string& name) const {
  const GgufTensorInfo& t = tensor(name);
  const GgmlTypeTraits* traits = ggml_type_traits(t.type);
  if (!traits->can_dequantize)
    throw std::runtime_error("gguf: " + path_ + ": tensor " + in_quotes(name) + " has type " + traits->name +
                             ", which peft.cpp cannot read yet; supported: " + ggml_dequantizable_types());
  return t;
}

void GgufFile::dequantize(const std::string& name, float* out) const {
  const GgufTensorInfo& t = readable(name);
  ggml_dequantize(t.ggml_type(), tensor_data(t), t.numel, out);
}

std::vector<float> GgufFile::dequantize(const std::string& name) const {
  const GgufTensorInfo& t = readable(name);
  std::vector<float> out(static_cast<size_t>(t.numel));
  ggml_dequantize(t.ggml_type(), tensor_data(t), t.numel, out.data());
  return out;
}

}  // namespace peft
