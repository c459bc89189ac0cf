// Pre-tokenizers of tokenizer.json: Split, ByteLevel, Whitespace, WhitespaceSplit,
// BertPreTokenizer, Metaspace, Punctuation, Digits, CharDelimiterSplit, FixedLength and Sequence.
#include <array>

#include "pipeline.h"
#include "unicode.h"

namespace peft::text {

namespace {

// PreTokenizedString::split: runs fn on every piece that is not an added token; empty results
// are dropped.
template <class F>
void split_each(std::vector<Piece>& pieces, F fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    size_t first = out.size();
    fn(p, out);
    for (size_t i = first; i < out.size(); ++i) {
      if (out[i].text.empty()) {
        out.erase(out.begin() + static_cast<std::ptrdiff_t>(i));
        --i;
      }
    }
  }
  pieces = std::move(out);
}

class Split : public PreTokenizer {
 public:
  Split(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      split_piece(p, pattern_.find_matches(p.text, invert_), behavior_, out);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    static const Pattern gpt2 = Pattern::regex(
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
    auto prefix = [&](Piece& p) {
      if (add_prefix_space_ && !p.text.empty() && p.text[0] != ' ') {
        p.text.insert(0, " ");
        if (p.zero_prefix) ++p.zero_prefix;
      }
    };
    if (use_regex_) {
      split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
        prefix(p);
        split_piece(p, gpt2.find_matches(p.text), SplitBehavior::Isolated, out);
      });
    } else {
      for (auto& p : pieces)
        if (p.id < 0) prefix(p);
    }
    static const auto table = [] {  // byte -> its character's UTF-8 (one or two bytes)
      std::array<std::string, 256> t;
      for (int b = 0; b < 256; ++b) t[b] = byte_to_unicode(static_cast<unsigned char>(b));
      return t;
    }();
    std::string mapped;
    for (auto& p : pieces) {
      if (p.id >= 0) continue;
      mapped.resize(p.text.size() * 2);
      size_t n = 0, zero = 0;
      for (size_t i = 0; i < p.text.size(); ++i) {
        const std::string& c = table[static_cast<unsigned char>(p.text[i])];
        mapped[n++] = c[0];
        if (c.size() > 1) mapped[n++] = c[1];
        if (i < p.zero_prefix) zero = n;
      }
      p.text.assign(mapped, 0, n);
      p.zero_prefix = zero;
    }
  }

 private:
  bool add_prefix_space_, use_regex_;
};

// Splits with a per-character predicate and a fixed behaviour.
template <class Pred>
class CharSplit : public PreTokenizer {
 public:
  CharSplit(Pred pred, SplitBehavior behavior) : pred_(pred), behavior_(behavior) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      split_piece(p, find_char_matches(p.text, pred_), behavior_, out);
    });
  }

 private:
  Pred pred_;
  SplitBehavior behavior_;
};

template <class Pred>
std::unique_ptr<PreTokenizer> char_split(Pred pred, SplitBehavior behavior) {
  return std::make_unique<CharSplit<Pred>>(pred, behavior);
}

// Whitespace: keeps the matches of \w+|[^\w\s]+ (regex crate classes), drops the rest.
class Whitespace : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      enum Kind { Space, Word, Other };
      auto kind = [](char32_t c) { return is_rust_word_char(c) ? Word : is_whitespace(c) ? Space : Other; };
      size_t run_start = 0;
      Kind run = Space;
      for (size_t i = 0; i < p.text.size();) {
        size_t b = i;
        Kind k = kind(next_char(p.text, i));
        if (k != run) {
          if (run != Space) out.push_back(slice(p, run_start, b));
          run = k;
          run_start = b;
        }
      }
      if (run != Space) out.push_back(slice(p, run_start, p.text.size()));
    });
  }
};

class BertPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [](Piece& p, std::vector<Piece>& out) {
      split_piece(p, find_char_matches(p.text, is_whitespace), SplitBehavior::Removed, out);
    });
    split_each(pieces, [](Piece& p, std::vector<Piece>& out) {
      split_piece(p, find_char_matches(p.text, is_punctuation), SplitBehavior::Isolated, out);
    });
  }
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  Metaspace(char32_t replacement, Prepend scheme, bool split)
      : replacement_(replacement), rep_(to_utf8(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (p.text.find(' ') != std::string::npos) {
        transform_chars(p, [&](char32_t c, std::string& s) {
          if (c == ' ') s += rep_;
          else append_utf8(s, c);
        });
      }
      bool starts = p.text.compare(0, rep_.size(), rep_) == 0;
      if (!starts && !p.text.empty() && (scheme_ == Prepend::Always || (scheme_ == Prepend::First && p.at_start))) {
        p.text.insert(0, rep_);
        if (p.zero_prefix) p.zero_prefix += rep_.size();
      }
      if (split_) {
        char32_t r = replacement_;
        split_piece(p, find_char_matches(p.text, [r](char32_t c) { return c == r; }), SplitBehavior::MergedWithNext,
                    out);
      } else {
        out.push_back(std::move(p));
      }
    });
  }

 private:
  char32_t replacement_;
  std::string rep_;
  Prepend scheme_;
  bool split_;
};

class FixedLength : public PreTokenizer {
 public:
  explicit FixedLength(size_t length) : length_(length) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      size_t start = 0, count = 0;
      for (size_t i = 0; i < p.text.size();) {
        next_char(p.text, i);
        if (++count == length_) {
          out.push_back(slice(p, start, i));
          start = i;
          count = 0;
        }
      }
      if (start < p.text.size()) out.push_back(slice(p, start, p.text.size()));
    });
  }

 private:
  size_t length_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};


}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const Where& w) {
  std::string type = type_of(j, w);
  if (type == "Split") {
    return std::make_unique<Split>(get_pattern(require(j, "pattern", w), w.at("pattern")),
                                   get_behavior(require(j, "behavior", w), w.at("behavior")),
                                   get_bool(j, "invert", false, w));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(get_bool(j, "add_prefix_space", true, w), get_bool(j, "use_regex", true, w));
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "WhitespaceSplit") return char_split(is_whitespace, SplitBehavior::Removed);
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Punctuation") {
    SplitBehavior b = j.contains("behavior") ? get_behavior(j["behavior"], w.at("behavior")) : SplitBehavior::Isolated;
    return char_split(is_punctuation, b);
  }
  if (type == "Digits")
    return char_split(is_numeric, get_bool(j, "individual_digits", false, w) ? SplitBehavior::Isolated
                                                                              : SplitBehavior::Contiguous);
  if (type == "CharDelimiterSplit" || type == "Delimiter") {
    char32_t d = get_char(j, "delimiter", w);
    return char_split([d](char32_t c) { return c == d; }, SplitBehavior::Removed);
  }
  if (type == "Metaspace") {
    auto scheme = Metaspace::Prepend::Always;
    if (auto s = get_optional_string(j, "prepend_scheme", w)) {
      if (*s == "always") scheme = Metaspace::Prepend::Always;
      else if (*s == "first") scheme = Metaspace::Prepend::First;
      else if (*s == "never") scheme = Metaspace::Prepend::Never;
      else w.at("prepend_scheme").fail("unknown prepend_scheme '" + *s + "'; expected first, always or never");
    }
    if (!get_bool(j, "add_prefix_space", true, w)) scheme = Metaspace::Prepend::Never;
    return std::make_unique<Metaspace>(get_char(j, "replacement", w), scheme, get_bool(j, "split", true, w));
  }
  if (type == "FixedLength") {
    int64_t n = j.contains("length") ? get_int(j, "length", w) : 5;
    if (n <= 0) w.at("length").fail("expected a positive length");
    return std::make_unique<FixedLength>(static_cast<size_t>(n));
  }
  if (type == "Sequence") {
    const json& list = require(j, "pretokenizers", w);
    if (!list.is_array()) w.at("pretokenizers").fail("expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_pre_tokenizer(list[i], w.at("pretokenizers").at(i)));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  w.unsupported("pre_tokenizer", type,
                "Split, ByteLevel, Whitespace, WhitespaceSplit, BertPreTokenizer, Metaspace, Punctuation, Digits, "
                "CharDelimiterSplit, FixedLength, Sequence");
}

}  // namespace peft::text
