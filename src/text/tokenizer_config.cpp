// Reading tokenizer_config.json: the chat template and the special-token strings, which may be
// plain strings or AddedToken objects ({"content": ...}) depending on the transformers version.
#include "peft/text/tokenizer_config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace peft {
namespace {

std::optional<std::string> token_text(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

TokenizerConfig parse_tokenizer_config(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
    throw std::runtime_error(origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(origin + ": expected a JSON object");
  TokenizerConfig c;
  c.bos_token = token_text(j, "bos_token");
  c.eos_token = token_text(j, "eos_token");
  c.pad_token = token_text(j, "pad_token");
  auto t = j.find("chat_template");
  if (t != j.end() && t->is_string()) {
    c.chat_template = t->get<std::string>();
  } else if (t != j.end() && t->is_array()) {  // [{"name": "default", "template": ...}, ...]
    for (const auto& entry : *t)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        c.chat_template = entry["template"].get<std::string>();
  }
  return c;
}

TokenizerConfig read_tokenizer_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the tokenizer config");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_tokenizer_config(ss.str(), path);
}

}  // namespace peft
