// Normalizers of tokenizer.json: NFC/NFD/NFKC/NFKD, Lowercase, Replace, Prepend, Strip,
// StripAccents, Nmt, ByteLevel, BertNormalizer, Precompiled and Sequence, as tokenizers defines them.
#include <utf8proc.h>

#include <cstdlib>

#include "pipeline.h"
#include "unicode.h"

namespace peft::text {

namespace {

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::string unicode_normalize(const std::string& s, int options) {
  utf8proc_uint8_t* dst = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                        &dst, static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) return s;  // unreachable for valid UTF-8
  std::string out(reinterpret_cast<char*>(dst), static_cast<size_t>(n));
  std::free(dst);
  return out;
}

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  void normalize(Piece& p) const override { apply(p, options_); }
  static void apply(Piece& p, int options) {
    if (is_ascii(p.text)) return;
    std::string out = unicode_normalize(p.text, options);
    if (out == p.text) return;
    if (p.zero_prefix) p.zero_prefix = std::min(out.size(), unicode_normalize(p.text.substr(0, p.zero_prefix), options).size());
    p.text = std::move(out);
  }

 private:
  int options_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(Piece& p) const override { transform_chars(p, [](char32_t c, std::string& out) { append_lowercase(out, c); }); }
};

class StripAccents : public Normalizer {
 public:
  void normalize(Piece& p) const override {
    transform_chars(p, [](char32_t c, std::string& out) {
      if (!is_combining_mark(c)) append_utf8(out, c);
    });
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(Piece& p) const override {
    size_t begin = 0, end = p.text.size();
    if (left_) {
      for (size_t i = 0; i < end && is_whitespace(next_char(p.text, i));) begin = i;
    }
    if (right_) {
      while (end > begin) {
        size_t b = end - 1;
        while (b > begin && (static_cast<unsigned char>(p.text[b]) & 0xC0) == 0x80) --b;
        size_t i = b;
        if (!is_whitespace(next_char(p.text, i))) break;
        end = b;
      }
    }
    if (begin == 0 && end == p.text.size()) return;
    p.zero_prefix = p.zero_prefix > begin ? std::min(p.zero_prefix, end) - begin : 0;
    p.text = p.text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string s) : prepend_(std::move(s)) {}
  void normalize(Piece& p) const override {
    if (p.text.empty()) return;
    p.text.insert(0, prepend_);
    if (p.zero_prefix) p.zero_prefix += prepend_.size();
  }

 private:
  std::string prepend_;
};

class Replace : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(Piece& p) const override {
    auto matches = pattern_.find_matches(p.text);
    if (matches.size() == 1 && !matches[0].is_match) return;
    std::string out;
    out.reserve(p.text.size());
    size_t zero = 0;
    bool aligned = true;  // still inside the prefix aligned to offset 0
    for (auto& m : matches) {
      if (!m.is_match) {
        if (aligned && m.start < p.zero_prefix) zero = out.size() + std::min(m.end, p.zero_prefix) - m.start;
        aligned = aligned && m.end <= p.zero_prefix;
        out.append(p.text, m.start, m.end - m.start);
      } else {
        // Inserted text takes the alignment of the last replaced byte.
        out += content_;
        if (aligned) {
          aligned = m.end <= p.zero_prefix;
          if (aligned) zero = out.size();
        }
      }
    }
    p.text = std::move(out);
    p.zero_prefix = zero;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class Nmt : public Normalizer {
 public:
  void normalize(Piece& p) const override {
    transform_chars(p, [](char32_t c, std::string& out) {
      if ((c >= 0x01 && c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F)
        return;
      bool space = c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
                   c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD;
      append_utf8(out, space ? U' ' : c);
    });
  }
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(Piece& p) const override {
    std::string out;
    out.reserve(p.text.size() * 2);
    size_t zero = 0;
    for (size_t i = 0; i < p.text.size(); ++i) {
      out += byte_to_unicode(static_cast<unsigned char>(p.text[i]));
      if (i < p.zero_prefix) zero = out.size();
    }
    p.text = std::move(out);
    p.zero_prefix = zero;
  }
};

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}
  void normalize(Piece& p) const override {
    if (clean_text_) {
      transform_chars(p, [](char32_t c, std::string& out) {
        bool control = c != '\t' && c != '\n' && c != '\r' && is_other(c);
        if (c == 0 || c == 0xFFFD || control) return;
        bool space = c == '\t' || c == '\n' || c == '\r' || is_whitespace(c);
        append_utf8(out, space ? U' ' : c);
      });
    }
    if (chinese_) {
      transform_chars(p, [](char32_t c, std::string& out) {
        if (is_chinese_char(c)) {
          out += ' ';
          append_utf8(out, c);
          out += ' ';
        } else {
          append_utf8(out, c);
        }
      });
    }
    if (strip_accents_) {
      UnicodeNormalizer::apply(p, UTF8PROC_DECOMPOSE);
      transform_chars(p, [](char32_t c, std::string& out) {
        if (!is_mark_nonspacing(c)) append_utf8(out, c);
      });
    }
    if (lowercase_) transform_chars(p, [](char32_t c, std::string& out) { append_lowercase(out, c); });
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

std::string base64_decode(const std::string& in, const Where& w) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = value(c);
    if (v < 0) w.fail("precompiled_charsmap is not valid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// SentencePiece's compiled normalization rules (T5, XLM-R, ALBERT, ...): a double-array trie
// from UTF-8 prefixes to replacement strings, applied per grapheme cluster as tokenizers does.
class Precompiled : public Normalizer {
 public:
  Precompiled(const std::string& charsmap, const Where& w) {
    if (charsmap.empty()) return;  // no rules
    if (charsmap.size() < 4) w.fail("precompiled_charsmap is truncated");
    uint32_t trie_bytes = 0;
    for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<unsigned char>(charsmap[i]);
    if (trie_bytes / 4 > (charsmap.size() - 4) / 4) w.fail("precompiled_charsmap is truncated");
    trie_.resize(trie_bytes / 4);
    for (size_t k = 0; k < trie_.size(); ++k) {
      uint32_t u = 0;
      for (int i = 3; i >= 0; --i) u = (u << 8) | static_cast<unsigned char>(charsmap[4 + 4 * k + i]);
      trie_[k] = u;
    }
    normalized_ = charsmap.substr(4 + 4 * trie_.size());
    if (!is_valid_utf8(normalized_)) w.fail("precompiled_charsmap replacements are not valid UTF-8");
  }

  void normalize(Piece& p) const override {
    if (trie_.empty() || p.text.empty()) return;
    const std::string& s = p.text;
    std::string out;
    out.reserve(s.size());
    size_t zero = 0;
    bool modified = false;
    auto emit = [&](size_t start, std::string_view text) {
      out.append(text);
      if (start < p.zero_prefix) zero = out.size();
    };
    utf8proc_int32_t state = 0;
    for (size_t g = 0; g < s.size();) {
      size_t end = g;  // [g, end): one extended grapheme cluster
      char32_t prev = next_char(s, end);
      while (end < s.size()) {
        size_t j = end;
        char32_t c = next_char(s, j);
        if (utf8proc_grapheme_break_stateful(static_cast<utf8proc_int32_t>(prev), static_cast<utf8proc_int32_t>(c), &state))
          break;
        prev = c;
        end = j;
      }
      std::string_view grapheme(s.data() + g, end - g);
      if (grapheme.size() < 6) {
        if (auto r = transform(grapheme)) {
          emit(g, *r);
          modified = true;
          g = end;
          continue;
        }
      }
      for (size_t k = g; k < end;) {
        size_t start = k;
        k += char_len(static_cast<unsigned char>(s[k]));
        std::string_view one(s.data() + start, k - start);
        auto r = transform(one);
        modified = modified || r.has_value();
        emit(start, r ? *r : one);
      }
      g = end;
    }
    if (!modified) return;
    p.text = std::move(out);
    p.zero_prefix = zero;
  }

 private:
  // The replacement for the shortest rule matching a prefix of chunk (spm_precompiled's transform).
  std::optional<std::string_view> transform(std::string_view chunk) const {
    auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
    size_t node = offset(trie_[0]);
    for (unsigned char b : chunk) {
      if (b == 0) break;
      node ^= b;
      if (node >= trie_.size()) return std::nullopt;
      uint32_t unit = trie_[node];
      if ((unit & ((1u << 31) | 0xFF)) != b) return std::nullopt;
      node ^= offset(unit);
      if (node >= trie_.size()) return std::nullopt;
      if ((unit >> 8) & 1) {
        size_t at = trie_[node] & ((1u << 31) - 1);
        if (at > normalized_.size()) return std::nullopt;
        size_t stop = normalized_.find('\0', at);
        return std::string_view(normalized_).substr(at, (stop == std::string::npos ? normalized_.size() : stop) - at);
      }
    }
    return std::nullopt;
  }

  std::vector<uint32_t> trie_;
  std::string normalized_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(Piece& p) const override {
    for (auto& n : parts_) n->normalize(p);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const Where& w) {
  std::string type = type_of(j, w);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Nmt") return std::make_unique<Nmt>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Strip")
    return std::make_unique<Strip>(get_bool(j, "strip_left", true, w), get_bool(j, "strip_right", true, w));
  if (type == "Prepend") return std::make_unique<Prepend>(get_string(j, "prepend", w));
  if (type == "Replace")
    return std::make_unique<Replace>(get_pattern(require(j, "pattern", w), w.at("pattern")), get_string(j, "content", w));
  if (type == "BertNormalizer") {
    bool lowercase = get_bool(j, "lowercase", true, w);
    return std::make_unique<BertNormalizer>(get_bool(j, "clean_text", true, w),
                                            get_bool(j, "handle_chinese_chars", true, w),
                                            get_bool(j, "strip_accents", lowercase, w), lowercase);
  }
  if (type == "Precompiled") {
    auto it = j.find("precompiled_charsmap");
    if (it == j.end() || it->is_null()) return std::make_unique<Precompiled>("", w);
    if (!it->is_string()) w.at("precompiled_charsmap").fail("expected a base64 string");
    return std::make_unique<Precompiled>(base64_decode(it->get<std::string>(), w), w);
  }
  if (type == "Sequence") {
    const json& list = require(j, "normalizers", w);
    if (!list.is_array()) w.at("normalizers").fail("expected an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_normalizer(list[i], w.at("normalizers").at(i)));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  w.unsupported("normalizer", type,
                "NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Replace, Prepend, Nmt, ByteLevel, "
                "BertNormalizer, Precompiled, Sequence");
}

}  // namespace peft::text
