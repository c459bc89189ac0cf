// Loading a model directory's tokenizer files and reading which tokens end generation; shared by
// the commands that turn text into model input (eval, generate).
#include "peft/models/model_tokenizer.h"

#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "peft/core/file_io.h"
#include "peft/formats/gguf.h"
#include "peft/formats/gguf_model.h"
#include "peft/formats/gguf_tokenizer.h"

namespace peft {
namespace fs = std::filesystem;

ModelTokenizer ModelTokenizer::load(const std::string& model) {
  ModelTokenizer mt;
  mt.dir_ = model;
  if (is_gguf_path(model)) {
    GgufFile file(model);
    GgufTokenizerFiles files = gguf_tokenizer_files(file);
    mt.origin_ = model + " (its tokenizer.ggml.* metadata)";
    mt.tokenizer_ = std::make_shared<Tokenizer>(Tokenizer::from_json_string(files.tokenizer.dump(), mt.origin_));
    mt.config_ = parse_tokenizer_config(files.tokenizer_config.dump(), mt.origin_);
    if (auto eos = file.find_uint("tokenizer.ggml.eos_token_id")) mt.declared_eos_.insert(static_cast<int64_t>(*eos));
    return mt;
  }
  fs::path dir(model);
  if (!fs::is_directory(dir))
    throw std::runtime_error(model + ": not a directory or a .gguf file (expected a Hugging Face model directory or a "
                             "llama.cpp GGUF file)");
  if (!fs::exists(dir / "tokenizer.json"))
    throw std::runtime_error(model + ": no tokenizer.json (copy the model's tokenizer.json next to its config.json)");
  mt.origin_ = (dir / "tokenizer.json").string();
  mt.tokenizer_ = std::make_shared<Tokenizer>(Tokenizer::from_file(mt.origin_));
  if (fs::exists(dir / "tokenizer_config.json")) mt.config_ = read_tokenizer_config((dir / "tokenizer_config.json").string());
  return mt;
}

std::vector<std::string> write_tokenizer_files(const std::string& model, const std::string& dest) {
  std::vector<std::string> written;
  if (is_gguf_path(model)) {
    GgufFile file(model);
    GgufTokenizerFiles files = gguf_tokenizer_files(file);
    write_text_atomic((fs::path(dest) / "tokenizer.json").string(), files.tokenizer.dump() + "\n");
    write_text_atomic((fs::path(dest) / "tokenizer_config.json").string(), files.tokenizer_config.dump(2) + "\n");
    nlohmann::ordered_json generation = nlohmann::ordered_json::object();
    for (const char* id : {"bos_token_id", "eos_token_id"})
      if (auto v = file.find_uint(std::string("tokenizer.ggml.") + id)) generation[id] = *v;
    write_text_atomic((fs::path(dest) / "generation_config.json").string(), generation.dump(2) + "\n");
    return {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
  }
  for (auto* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}) {
    fs::path src = fs::path(model) / f;
    if (fs::exists(src)) {
      fs::copy_file(src, fs::path(dest) / f, fs::copy_options::overwrite_existing);
      written.push_back(f);
    }
  }
  return written;
}

void ModelTokenizer::check_fits(int64_t embedding_rows) const {
  const int64_t n = tokenizer_->vocab_size();
  if (n > embedding_rows) {
    throw std::invalid_argument(origin_ + " has " + std::to_string(n) +
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
  std::set<int64_t> ids = declared_eos_;
  if (!fs::is_directory(dir_)) {
    if (config_.eos_token)
      if (auto id = tokenizer_->token_to_id(*config_.eos_token)) ids.insert(*id);
    return ids;
  }
  add_eos_from(fs::path(dir_) / "config.json", ids);
  add_eos_from(fs::path(dir_) / "generation_config.json", ids);
  if (config_.eos_token)
    if (auto id = tokenizer_->token_to_id(*config_.eos_token)) ids.insert(*id);
  return ids;
}

}  // namespace peft
