// Decoders of tokenizer.json: ByteLevel, Metaspace, WordPiece, ByteFallback, Fuse, Strip,
// Replace, BPEDecoder, CTC and Sequence, turning tokens back into text as tokenizers does.
#include "pipeline.h"
#include "unicode.h"

namespace peft::text {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (auto& t : tokens) {
      size_t mark = bytes.size();
      bool mapped = true;
      for (size_t i = 0; i < t.size();) {
        int b = unicode_to_byte(next_char(t, i));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first) : replacement_(replacement), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      for (size_t i = 0; i < tokens[k].size();) {
        char32_t c = next_char(tokens[k], i);
        if (c != replacement_) append_utf8(out, c);
        else if (k != 0 || !strip_first_) out += ' ';
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  bool strip_first_;
};

void wordpiece_cleanup(std::string& s) {
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."},      {" ?", "?"},         {" !", "!"},   {" ,", ","},   {" ' ", "'"},   {" n't", "n't"},
      {" 'm", "'m"},    {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (auto& [from, to] : rules) replace_all(s, from, to);
}

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0) t.erase(0, prefix_.size());
        else t.insert(0, " ");
      }
      if (cleanup_) wordpiece_cleanup(t);
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&]() {
      if (pending.empty()) return;
      if (is_valid_utf8(pending)) out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : tokens) {
      int byte = parse_byte(t);
      if (byte >= 0) {
        pending += static_cast<char>(byte);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  // "<0xNN>" -> NN, as u8::from_str_radix(&t[3..5], 16) accepts it; -1 otherwise.
  static int parse_byte(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
    int hi = t[3] == '+' ? 0 : hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class Fuse : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<char32_t> chars;
      for (size_t i = 0; i < t.size();) chars.push_back(next_char(t, i));
      size_t begin = 0, end = chars.size();
      for (size_t i = 0; i < start_ && i < chars.size() && chars[i] == content_; ++i) begin = i + 1;
      for (size_t i = 0; i < stop_ && i < chars.size() && chars[chars.size() - 1 - i] == content_; ++i)
        end = chars.size() - 1 - i;
      std::string out;
      for (size_t i = begin; i < end; ++i) append_utf8(out, chars[i]);
      t = std::move(out);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::string out;
      for (auto& m : pattern_.find_matches(t)) {
        if (m.is_match) out += content_;
        else out.append(t, m.start, m.end - m.start);
      }
      t = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class CtcDecoder : public Decoder {
 public:
  CtcDecoder(std::string pad, std::string delimiter, bool cleanup)
      : pad_(std::move(pad)), delimiter_(std::move(delimiter)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && tokens[i] == tokens[i - 1]) continue;
      std::string t = tokens[i];
      replace_all(t, pad_, "");
      if (cleanup_) {
        wordpiece_cleanup(t);
        replace_all(t, delimiter_, " ");
      }
      if (!t.empty()) out.push_back(std::move(t));
    }
    tokens = std::move(out);
  }

 private:
  std::string pad_, delimiter_;
  bool cleanup_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& d : parts_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};


size_t get_count(const json& j, const char* key, const Where& w) {
  if (!j.contains(key)) return 0;
  int64_t n = get_int(j, key, w);
  if (n < 0) w.at(key).fail("expected a non-negative count");
  return static_cast<size_t>(n);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const Where& w) {
  std::string type = type_of(j, w);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto scheme = get_optional_string(j, "prepend_scheme", w).value_or("always");
    bool strip_first = scheme != "never" && get_bool(j, "add_prefix_space", true, w);
    return std::make_unique<MetaspaceDecoder>(get_char(j, "replacement", w), strip_first);
  }
  if (type == "WordPiece")
    return std::make_unique<WordPieceDecoder>(get_optional_string(j, "prefix", w).value_or("##"),
                                              get_bool(j, "cleanup", true, w));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(get_char(j, "content", w), get_count(j, "start", w), get_count(j, "stop", w));
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(get_pattern(require(j, "pattern", w), w.at("pattern")),
                                            get_string(j, "content", w));
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(get_optional_string(j, "suffix", w).value_or("</w>"));
  if (type == "CTC")
    return std::make_unique<CtcDecoder>(get_optional_string(j, "pad_token", w).value_or("<pad>"),
                                        get_optional_string(j, "word_delimiter_token", w).value_or("|"),
                                        get_bool(j, "cleanup", true, w));
  if (type == "Sequence") {
    const json& list = require(j, "decoders", w);
    if (!list.is_array()) w.at("decoders").fail("expected an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_decoder(list[i], w.at("decoders").at(i)));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  w.unsupported("decoder", type,
                "ByteLevel, Metaspace, WordPiece, ByteFallback, Fuse, Strip, Replace, BPEDecoder, CTC, Sequence");
}

}  // namespace peft::text
