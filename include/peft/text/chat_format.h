// Chat formats: render a conversation to the exact string transformers' apply_chat_template gives
// for a model family, split into segments that say which text belongs to the assistant's turns.
#pragma once
#include <string>
#include <vector>

namespace peft {

struct TokenizerConfig;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (and "tool" where the format has it)
  std::string content;
};

// One piece of a rendered conversation. `assistant` marks what a model learns in training: an
// assistant message's content and its end-of-turn marker. Role headers, other turns, and scaffolding
// the template adds on its own (such as Qwen3's empty <think></think>) are not.
struct ChatSegment {
  std::string text;
  bool assistant = false;
};

struct RenderedChat {
  std::vector<ChatSegment> segments;  // adjacent segments always differ in `assistant`
  std::string text() const;           // the segments joined: apply_chat_template's string
};

// A hand-written renderer for one template family. Known names:
//   llama3    Meta-Llama-3-Instruct: <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>; its
//             template ends with the assistant header even without add_generation_prompt
//   llama3.1  Llama 3.1/3.2/3.3 Instruct: as llama3 with the dated system header first
//   qwen3     Qwen3: ChatML with <think></think> for assistant turns after the last user query
//   qwen2.5   Qwen2.5: ChatML with Qwen's default system message
//   chatml    plain ChatML: <|im_start|>role\n...<|im_end|>\n
//   gemma3    Gemma 3: <start_of_turn>user/model, system message folded into the first user turn
//   gemma     Gemma 1/2: as gemma3 without a system role
class ChatFormat {
 public:
  // By name (the --chat-format option). bos_token: the tokenizer's, for formats whose template
  // writes it ("" means the family's usual one). Throws listing the known names.
  static ChatFormat by_name(const std::string& name, const std::string& bos_token = "");

  // Recognises a tokenizer_config.json chat_template by its signature strings. Throws a
  // std::runtime_error that names --chat-format and the known formats when it cannot.
  static ChatFormat from_template(const std::string& chat_template, const std::string& bos_token = "");

  // override_name non-empty: by_name(override_name) with the config's bos_token; otherwise
  // from_template on the config's chat_template (an error if the config has none).
  static ChatFormat from_config(const TokenizerConfig& config, const std::string& override_name = "");

  static std::vector<std::string> known_names();

  const std::string& name() const { return name_; }
  const std::string& bos_token() const { return bos_token_; }

  // llama3.1's "Today Date" (default "26 Jul 2024", the template's own default).
  void set_date_string(const std::string& date) { date_ = date; }

  // As apply_chat_template(messages, tokenize=False, add_generation_prompt=...). Assistant messages
  // before index learn_from are not marked (a prompt's example turns). Throws std::runtime_error for
  // what the template itself rejects (e.g. gemma's non-alternating roles).
  RenderedChat render(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false,
                      size_t learn_from = 0) const;
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false) const {
    return render(messages, add_generation_prompt).text();
  }

 private:
  ChatFormat(std::string name, std::string bos_token);
  std::string name_;
  std::string bos_token_;
  std::string date_ = "26 Jul 2024";
  std::string default_system_;  // chatml: the system turn the template writes when a conversation has none
};

}  // namespace peft
