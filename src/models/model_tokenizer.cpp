// Loading a model directory's tokenizer files and reading which tokens end generation; shared by
// the commands that turn text into model input (eval, generate).
#include "peft/models/model_tokenizer.h"

#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "peft/core/file_io.h"

namespace peft {
namespace fs = std::filesystem;

ModelTokenizer ModelTokenizer::load(const std::string& model_dir) {
  fs::path dir(model_dir);
  if (!fs::is_directory(dir)) throw std::runtime_error(model_dir + ": not a directory (expected a Hugging Face model directory)");
  if (!fs::exists(dir / "tokenizer.json"))
    throw std::runtime_error(model_dir + ": no tokenizer.json (copy the model's tokenizer.json next to its config.json)");
  ModelTokenizer mt;
  mt.dir_ = model_dir;
  mt.tokenizer_ = std::make_shared<Tokenizer>(Tokenizer::from_file((dir / "tokenizer.json").string()));
  if (fs::exists(dir / "tokenizer_config.json")) mt.config_ = read_tokenizer_config((dir / "tokenizer_config.json").string());
  return mt;
}

void ModelTokenizer::check_fits(int64_t embedding_rows) const {
  const int64_t n = tokenizer_->vocab_size();
  if (n > embedding_rows) {
    throw std::invalid_argument((fs::path(dir_) / "tokenizer.json").string() + " has " + std::to_string(n) +
                                " tokens but the model's embedding has " + std::to_string(embedding_rows) +
                                " rows (config.json vocab_size): use the tokenizer that belongs to this model");
  }
}

ChatFormat ModelTokenizer::chat_format(const std::string& override_name) const {
  if (override_name.empty() && config_.chat_template.empty()) {
    std::string known;
    for (auto& n : ChatFormat::known_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::runtime_error(dir_ + ": tokenizer_config.json has no chat_template; name the format with --chat-format (" +
                             known + ")");
  }
  return ChatFormat::from_config(config_, override_name);
}

std::optional<ChatFormat> ModelTokenizer::optional_chat_format(const std::string& override_name) const {
  if (!override_name.empty()) return chat_format(override_name);
  if (config_.chat_template.empty()) return std::nullopt;
  try {
    return ChatFormat::from_config(config_);
  } catch (const std::exception&) {
    return std::nullopt;  // only chat data needs it, and the dataset says so
  }
}

namespace {

void add_ids(const nlohmann::json& j, std::set<int64_t>& out) {
  if (j.is_number_integer()) out.insert(j.get<int64_t>());
  if (j.is_array())
    for (auto& v : j)
      if (v.is_number_integer()) out.insert(v.get<int64_t>());
}

void add_eos_from(const fs::path& file, std::set<int64_t>& out) {
  if (!fs::exists(file)) return;
  auto j = read_json_file(file.string(), "a JSON object");
  if (!j.is_object()) throw std::runtime_error(file.string() + ": not a JSON object");
  if (j.contains("eos_token_id")) add_ids(j["eos_token_id"], out);
}

}  // namespace

std::set<int64_t> ModelTokenizer::eos_ids() const {
  std::set<int64_t> ids;
  add_eos_from(fs::path(dir_) / "config.json", ids);
  add_eos_from(fs::path(dir_) / "generation_config.json", ids);
  if (config_.eos_token)
    if (auto id = tokenizer_->token_to_id(*config_.eos_token)) ids.insert(*id);
  return ids;
}

}  // namespace peft
