// PCRE2-backed regexes with the Oniguruma behaviour tokenizers relies on (Unicode \s and \w,
// onig-style match iteration), and tokenizers' literal/regex Pattern.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>

#include <stdexcept>

namespace peft::text {

namespace {

// Oniguruma's Unicode \s (White_Space) and \w (Letter, Mark, Number, Connector_Punctuation and
// the alphabetic symbols such as circled letters), as the contents of a character class.
const char* kSpaceClass =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";
const char* kWordClass =
    "\\p{L}\\p{M}\\p{N}\\p{Pc}\\x{24b6}-\\x{24e9}\\x{1f130}-\\x{1f149}\\x{1f150}-\\x{1f169}\\x{1f170}-\\x{1f189}";
const char* kHexClass = "0-9a-fA-F";  // Ruby syntax's \h

// Rewrites the escapes whose meaning differs between Oniguruma and PCRE2.
std::string translate(const std::string& p) {
  std::string out;
  int depth = 0;  // inside a character class when > 0
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[++i];
      const char* cls = e == 's' || e == 'S' ? kSpaceClass : e == 'w' || e == 'W' ? kWordClass
                      : e == 'h' || e == 'H' ? kHexClass : nullptr;
      bool negated = e == 'S' || e == 'W' || e == 'H';
      if ((e == 'b' || e == 'B') && depth == 0) {  // word boundaries on Oniguruma's \w
        std::string w = std::string("[") + kWordClass + "]";
        out += e == 'b' ? "(?:(?<=" + w + ")(?!" + w + ")|(?<!" + w + ")(?=" + w + "))"
                        : "(?:(?<=" + w + ")(?=" + w + ")|(?<!" + w + ")(?!" + w + "))";
      } else if (cls && depth == 0) {
        out += negated ? "[^" : "[";
        out += cls;
        out += ']';
      } else if (cls && !negated) {
        out += cls;
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') {
      if (depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX bracket [:alpha:]
        size_t close = p.find(":]", i + 2);
        if (close != std::string::npos) {
          out.append(p, i, close + 2 - i);
          i = close + 1;
          continue;
        }
      }
      ++depth;
      out += c;
      if (depth == 1) {  // a leading ']' (after an optional '^') is literal
        if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
        if (i + 1 < p.size() && p[i + 1] == ']') {
          out += "\\]";
          ++i;
        }
      }
      continue;
    }
    if (c == ']' && depth > 0) --depth;
    out += c;
  }
  return out;
}

struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

Regex::Regex(const std::string& pattern) {
  std::string translated = translate(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::runtime_error("invalid regex '" + pattern + "': " + reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_iter(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& s = scratch();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  bool has_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error(std::string("regex match failed: ") + reinterpret_cast<char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    size_t start = ov[0], end = ov[1];
    if (start == end && has_last && last_end == end) {
      // No empty match right after the previous one: step over one character and retry.
      if (pos >= text.size()) break;
      pos += char_len(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.emplace_back(start, end);
    pos = end;
    has_last = true;
    last_end = end;
  }
}

Pattern Pattern::literal(const std::string& s) {
  Pattern p;
  if (s.empty()) {
    p.regex_ = std::make_shared<Regex>("");
  } else {
    p.literal_ = s;
  }
  return p;
}

Pattern Pattern::regex(const std::string& re) {
  Pattern p;
  p.regex_ = std::make_shared<Regex>(re);
  return p;
}

std::vector<Match> Pattern::find_matches(std::string_view text, bool invert) const {
  std::vector<Match> out;
  if (text.empty()) {
    out.push_back({0, 0, invert});
    return out;
  }
  std::vector<std::pair<size_t, size_t>> found;
  if (regex_) {
    regex_->find_iter(text, found);
  } else {
    for (size_t at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, at + literal_.size()))
      found.emplace_back(at, at + literal_.size());
  }
  size_t prev = 0;
  for (auto [s, e] : found) {
    if (prev != s) out.push_back({prev, s, invert});
    out.push_back({s, e, !invert});
    prev = e;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), invert});
  return out;
}

}  // namespace peft::text
