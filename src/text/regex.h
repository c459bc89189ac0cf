// Regex and pattern matching for the tokenizer: PCRE2 with Oniguruma semantics (what tokenizers
// compiles Split/Replace patterns with), and tokenizers' Pattern (literal or regex, invertible).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace peft::text {

// A compiled regular expression written in Oniguruma syntax; \s and \w keep their Oniguruma
// Unicode meaning. Throws std::runtime_error on a pattern PCRE2 cannot compile.
class Regex {
 public:
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the (start, end) byte ranges of successive matches in text, iterating like the
  // onig crate: an empty match right after the previous match is skipped.
  void find_iter(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
};

// One slice of tokenizers' Pattern::find_matches: the slices cover the whole input in order.
struct Match {
  size_t start, end;
  bool is_match;
};

// tokenizers' SplitPattern / ReplacePattern: {"String": "..."} or {"Regex": "..."}.
class Pattern {
 public:
  static Pattern literal(const std::string& s);
  static Pattern regex(const std::string& re);
  // As Pattern::find_matches for a SysRegex: an empty input gives one empty non-match.
  std::vector<Match> find_matches(std::string_view text, bool invert = false) const;

 private:
  std::string literal_;
  std::shared_ptr<Regex> regex_;
};

// Pattern::find_matches for a per-character predicate (tokenizers' `impl Pattern for Fn(char)`).
template <class Pred>
std::vector<Match> find_char_matches(std::string_view text, Pred pred);

}  // namespace peft::text

#include "unicode.h"

namespace peft::text {
template <class Pred>
std::vector<Match> find_char_matches(std::string_view text, Pred pred) {
  std::vector<Match> out;
  if (text.empty()) {
    out.push_back({0, 0, false});
    return out;
  }
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    size_t b = i;
    char32_t c = next_char(text, i);
    if (pred(c)) {
      if (last < b) out.push_back({last, b, false});
      out.push_back({b, i, true});
      last = i;
    }
  }
  if (last < text.size()) out.push_back({last, text.size(), false});
  return out;
}
}  // namespace peft::text
