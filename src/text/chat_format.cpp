// Chat formats: one small renderer per template family, reproducing apply_chat_template's output,
// and recognition of a family from the signature strings of a tokenizer_config.json chat_template.
#include "peft/text/chat_format.h"
#include "peft/core/strings.h"

#include <nlohmann/json.hpp>

#include <ctime>
#include <stdexcept>

#include "peft/text/tokenizer_config.h"

namespace peft {
namespace {

// The code points Python's str.isspace() accepts, which Jinja's `trim` (str.strip()) removes.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Decodes the UTF-8 code point starting at s[i]; sets len. Invalid bytes decode as themselves.
char32_t decode_at(const std::string& s, size_t i, size_t& len) {
  const auto b = static_cast<unsigned char>(s[i]);
  size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) n = 1;
  char32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  len = n;
  return c;
}

// Jinja's `trim` filter: strips Python whitespace from both ends.
std::string trim(const std::string& s) {
  size_t begin = 0, len = 0;
  while (begin < s.size() && is_python_space(decode_at(s, begin, len))) begin += len;
  size_t end = begin;  // one past the last non-space code point
  for (size_t i = begin; i < s.size(); i += len)
    if (!is_python_space(decode_at(s, i, len))) end = i + len;
  return s.substr(begin, end - begin);
}

std::string lstrip_newlines(const std::string& s) {
  const size_t i = s.find_first_not_of('\n');
  return i == std::string::npos ? "" : s.substr(i);
}
std::string rstrip_newlines(const std::string& s) {
  const size_t i = s.find_last_not_of('\n');
  return i == std::string::npos ? "" : s.substr(0, i + 1);
}
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

// Collects rendered text, merging adjacent pieces with the same `assistant` flag.
class Builder {
 public:
  Builder(const std::vector<ChatMessage>& messages, size_t learn_from) : ms_(messages), learn_from_(learn_from) {}
  void prompt(const std::string& s) { add(s, false); }
  // Text that belongs to message i: learned when it is an assistant message at or after learn_from.
  void turn(size_t i, const std::string& s) { add(s, ms_[i].role == "assistant" && i >= learn_from_); }
  RenderedChat finish() { return std::move(out_); }

 private:
  void add(const std::string& s, bool assistant) {
    if (s.empty()) return;
    if (!out_.segments.empty() && out_.segments.back().assistant == assistant)
      out_.segments.back().text += s;
    else
      out_.segments.push_back({s, assistant});
  }
  const std::vector<ChatMessage>& ms_;
  size_t learn_from_;
  RenderedChat out_;
};

using Messages = std::vector<ChatMessage>;

// Meta-Llama-3-Instruct. The first release's template appends the assistant header whether or not
// add_generation_prompt is set; the later one ("llama3-genprompt") only when it is.
void render_llama3(const Messages& ms, bool gen, bool header_always, const std::string& bos, Builder& b) {
  for (size_t i = 0; i < ms.size(); ++i) {
    const std::string header = "<|start_header_id|>" + ms[i].role + "<|end_header_id|>\n\n";
    b.prompt((i == 0 ? bos : "") + header);
    b.turn(i, trim(ms[i].content) + "<|eot_id|>");
  }
  if (gen || header_always) b.prompt("<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// Llama 3.1/3.2/3.3 Instruct without tools: a system turn with the knowledge cutoff and date first,
// the conversation's own system message (trimmed) at its end; tool results as "ipython" turns.
void render_llama31(const Messages& ms, bool gen, const std::string& bos, const std::string& date,
                    Builder& b) {
  size_t first = 0;
  std::string system;
  if (ms[0].role == "system") {
    system = trim(ms[0].content);
    first = 1;
  }
  b.prompt(bos + "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n" +
           "Today Date: " + date + "\n\n" + system + "<|eot_id|>");
  for (size_t i = first; i < ms.size(); ++i) {
    const ChatMessage& m = ms[i];
    if (m.role == "tool" || m.role == "ipython") {
      // The template writes string content through `tojson` (a string is "iterable" in Jinja).
      b.prompt("<|start_header_id|>ipython<|end_header_id|>\n\n" +
               nlohmann::json(m.content).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
               "<|eot_id|>");
      continue;
    }
    b.prompt("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
    b.turn(i, trim(m.content) + "<|eot_id|>");
  }
  if (gen) b.prompt("<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// ChatML; `default_system`, when not empty, is the system turn the template writes for a conversation without one.
void render_chatml(const Messages& ms, bool gen, const std::string& default_system, Builder& b) {
  if (!default_system.empty() && ms[0].role != "system") b.prompt("<|im_start|>system\n" + default_system + "<|im_end|>\n");
  for (size_t i = 0; i < ms.size(); ++i) {
    b.prompt("<|im_start|>" + ms[i].role + "\n");
    b.turn(i, ms[i].content + "<|im_end|>");
    b.prompt("\n");
  }
  if (gen) b.prompt("<|im_start|>assistant\n");
}

// Qwen3 without tools: ChatML where assistant turns after the last real user query carry a
// <think> block (empty when the message has no reasoning), earlier turns drop their reasoning, and
// consecutive "tool" messages share one user turn of <tool_response> blocks.
void render_qwen3(const Messages& ms, bool gen, Builder& b) {
  const size_t n = ms.size();
  if (ms[0].role == "system") b.prompt("<|im_start|>system\n" + ms[0].content + "<|im_end|>\n");
  size_t last_query = n - 1;
  for (size_t k = n; k-- > 0;) {
    const std::string& c = ms[k].content;
    if (ms[k].role == "user" && !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = ms[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      b.prompt("<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n");
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      const size_t close = m.content.find("</think>");
      if (close != std::string::npos) {
        content = lstrip_newlines(m.content.substr(m.content.rfind("</think>") + 8));
        const std::string before = rstrip_newlines(m.content.substr(0, close));
        const size_t open = before.rfind("<think>");
        reasoning = lstrip_newlines(open == std::string::npos ? before : before.substr(open + 7));
      }
      b.prompt("<|im_start|>assistant\n");
      if (i > last_query && (i == n - 1 || !reasoning.empty())) {
        const std::string think = "<think>\n" + lstrip_newlines(rstrip_newlines(reasoning)) + "\n</think>\n\n";
        // An empty think block is the template's scaffolding, not something the model wrote.
        reasoning.empty() ? b.prompt(think) : b.turn(i, think);
        content = lstrip_newlines(content);
      }
      b.turn(i, content + "<|im_end|>");
      b.prompt("\n");
    } else if (m.role == "tool") {
      if (i == 0 || ms[i - 1].role != "tool") b.prompt("<|im_start|>user");
      b.prompt("\n<tool_response>\n" + m.content + "\n</tool_response>");
      if (i == n - 1 || ms[i + 1].role != "tool") b.prompt("<|im_end|>\n");
    }
    // Any other role is left out, as the template does.
  }
  if (gen) b.prompt("<|im_start|>assistant\n");
}

// Gemma 3 folds a system message into the first user turn; Gemma 1/2 reject it. Both require
// user/assistant alternation and call the assistant "model".
void render_gemma(const Messages& ms, bool gen, bool fold_system, const std::string& bos, Builder& b) {
  b.prompt(bos);
  size_t first = 0;
  std::string prefix;
  if (ms[0].role == "system") {
    if (!fold_system) throw std::runtime_error("System role not supported");
    prefix = ms[0].content + "\n\n";
    first = 1;
  }
  for (size_t i = first; i < ms.size(); ++i) {
    const ChatMessage& m = ms[i];
    if ((m.role == "user") != ((i - first) % 2 == 0))
      throw std::runtime_error("Conversation roles must alternate user/assistant/user/assistant/...");
    const bool assistant = m.role == "assistant";
    b.prompt("<start_of_turn>" + (assistant ? std::string("model") : m.role) + "\n" + (i == first ? prefix : ""));
    b.turn(i, trim(m.content) + "<end_of_turn>");
    b.prompt("\n");
  }
  if (gen) b.prompt("<start_of_turn>model\n");
}

struct Family {
  const char* name;
  const char* default_bos;
};
const Family kFamilies[] = {
    {"llama3", "<|begin_of_text|>"}, {"llama3-genprompt", "<|begin_of_text|>"},
    {"llama3.1", "<|begin_of_text|>"}, {"qwen3", ""}, {"chatml", ""}, {"gemma3", "<bos>"}, {"gemma", "<bos>"},
};

std::string known_list() {
  std::string s;
  for (const Family& f : kFamilies) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

// The literal system message of a ChatML template of the form
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nTEXT<|im_end|>\n' }}{% endif %}
// ("" when the template has another form). TEXT may hold no quote, brace or Jinja escape.
std::string default_system_message(const std::string& t) {
  const std::string guard = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n";
  const size_t at = t.find(guard);
  if (at == std::string::npos) return "";
  const size_t begin = at + guard.size();
  const size_t end = t.find("<|im_end|>\n' }}{% endif %}", begin);
  if (end == std::string::npos) return "";
  std::string text = t.substr(begin, end - begin);
  if (text.find_first_of("'\"{}\\") != std::string::npos) return "";
  return text;
}

// Python's datetime.now().strftime("%d %b %Y"), which transformers offers templates as strftime_now.
std::string today_date_string() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%d %b %Y", &local);
  return buf;
}

}  // namespace

std::string RenderedChat::text() const {
  std::string s;
  for (const ChatSegment& seg : segments) s += seg.text;
  return s;
}

ChatFormat::ChatFormat(std::string name, std::string bos_token)
    : name_(std::move(name)), bos_token_(std::move(bos_token)) {}

std::vector<std::string> ChatFormat::known_names() {
  std::vector<std::string> names;
  for (const Family& f : kFamilies) names.emplace_back(f.name);
  return names;
}

ChatFormat ChatFormat::by_name(const std::string& name, const std::string& bos_token) {
  for (const Family& f : kFamilies)
    if (name == f.name) return ChatFormat(name, bos_token.empty() ? f.default_bos : bos_token);
  throw std::runtime_error("unknown chat format '" + name + "' (--chat-format): known formats are " +
                           known_list());
}

ChatFormat ChatFormat::from_template(const std::string& t, const std::string& bos_token) {
  std::string name;
  if (contains(t, "<|start_header_id|>")) {
    name = contains(t, "Cutting Knowledge Date") ? "llama3.1"
           : contains(t, "add_generation_prompt") ? "llama3-genprompt"
                                                  : "llama3";
  } else if (contains(t, "<|im_start|>")) {
    // A ChatML template that writes a default system message of its own is plain ChatML only when
    // that message is a literal written for conversations that do not start with a system turn (SmolLM2).
    const std::string system = default_system_message(t);
    name = contains(t, "<think>") ? "qwen3" : contains(t, "You are") && system.empty() ? "" : "chatml";
    if (name == "chatml" && !system.empty()) {
      ChatFormat f = by_name(name, bos_token);
      f.default_system_ = system;
      return f;
    }
  } else if (contains(t, "<start_of_turn>")) {
    name = contains(t, "first_user_prefix") ? "gemma3" : contains(t, "System role not supported") ? "gemma" : "";
  }
  if (name.empty()) {
    std::string head = t.substr(0, 60);
    for (char& c : head)
      if (c == '\n') c = ' ';
    throw std::runtime_error("unrecognised chat template (\"" + head + (t.size() > 60 ? "...\"" : "\"") +
                             "): select a format with --chat-format NAME, one of: " + known_list());
  }
  ChatFormat f = by_name(name, bos_token);
  // Llama 3.2's template dates its system header with today's date when transformers offers it.
  if (name == "llama3.1" && contains(t, "strftime_now")) f.set_date_string(today_date_string());
  return f;
}

ChatFormat ChatFormat::from_config(const TokenizerConfig& config, const std::string& override_name) {
  const std::string bos = config.bos_token.value_or("");
  if (!override_name.empty()) return by_name(override_name, bos);
  if (config.chat_template.empty())
    throw std::runtime_error("the tokenizer config has no chat_template: select a format with --chat-format NAME, "
                             "one of: " + known_list());
  return from_template(config.chat_template, bos);
}

RenderedChat ChatFormat::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                size_t learn_from) const {
  if (messages.empty()) throw std::runtime_error("a conversation needs at least one message");
  Builder b(messages, learn_from);
  const bool gen = add_generation_prompt;
  if (name_ == "llama3" || name_ == "llama3-genprompt")
    render_llama3(messages, gen, name_ == "llama3", bos_token_, b);
  else if (name_ == "llama3.1")
    render_llama31(messages, gen, bos_token_, date_, b);
  else if (name_ == "qwen3")
    render_qwen3(messages, gen, b);
  else if (name_ == "chatml")
    render_chatml(messages, gen, default_system_, b);
  else
    render_gemma(messages, gen, name_ == "gemma3", bos_token_, b);
  return b.finish();
}

}  // namespace peft
