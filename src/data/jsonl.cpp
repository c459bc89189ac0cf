// JSONL loading: each line's record (text, prompt/completion, messages, text + label) is checked,
// tokenized with its loss labels, truncated, and collected into a Dataset with counts of what was cut.
#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "peft/data/dataset.h"

namespace peft {
namespace {

using nlohmann::json;

// A problem with one line's content: reported with file:line, skippable under skip_bad_lines.
struct LineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* record_name(DataFormat f) {
  switch (f) {
    case DataFormat::Text: return "{\"text\"}";
    case DataFormat::PromptCompletion: return "{\"prompt\", \"completion\"}";
    case DataFormat::Messages: return "{\"messages\"}";
    case DataFormat::Classification: return "{\"text\", \"label\"}";
  }
  return "";
}

DataFormat detect_format(const json& record) {
  if (record.contains("messages")) return DataFormat::Messages;
  if (record.contains("prompt") || record.contains("completion")) return DataFormat::PromptCompletion;
  if (record.contains("text")) return record.contains("label") ? DataFormat::Classification : DataFormat::Text;
  throw LineError("expected a \"text\", \"prompt\"/\"completion\" or \"messages\" field");
}

const std::string& string_field(const json& object, const std::string& key, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end()) throw LineError("missing field \"" + where + "\"");
  if (!it->is_string()) throw LineError("expected a string in \"" + where + "\"");
  return it->get_ref<const std::string&>();
}

// A list of {"role", "content"} objects under `key`, appended to `messages`.
void messages_field(const json& record, const std::string& key, std::vector<ChatMessage>& messages) {
  auto it = record.find(key);
  if (it == record.end()) throw LineError("missing field \"" + key + "\"");
  const json& list = *it;
  if (!list.is_array() || list.empty())
    throw LineError("expected a non-empty list of {\"role\", \"content\"} objects in \"" + key + "\"");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = key + "[" + std::to_string(i) + "]";
    if (!list[i].is_object()) throw LineError("expected a {\"role\", \"content\"} object in \"" + where + "\"");
    messages.push_back({string_field(list[i], "role", where + ".role"),
                        string_field(list[i], "content", where + ".content")});
  }
}

// Conversational prompt/completion: {"prompt": [messages], "completion": [messages]}.
bool is_conversational_prompt(const json& record, DataFormat format) {
  return format == DataFormat::PromptCompletion && record.contains("prompt") && record["prompt"].is_array();
}

int64_t label_field(const json& record) {
  const json& label = record["label"];
  if (!label.is_number_unsigned())  // JSON parsing gives non-negative integers this type
    throw LineError("expected a non-negative integer in \"label\"");
  // A class count (label + 1) must fit in int64 too.
  if (label.get<uint64_t>() >= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw LineError("\"label\" " + label.dump() + " is too large for a class index");
  return label.get<int64_t>();
}

void append(Example& ex, const std::vector<int32_t>& ids, bool learn) {
  ex.input_ids.insert(ex.input_ids.end(), ids.begin(), ids.end());
  if (learn)
    ex.labels.insert(ex.labels.end(), ids.begin(), ids.end());
  else
    ex.labels.insert(ex.labels.end(), ids.size(), kIgnoreIndex);
}

class Loader {
 public:
  Loader(std::string origin, const TextEncoder& encoder, const DatasetOptions& options)
      : origin_(std::move(origin)), enc_(encoder), opt_(options) {
    if (!enc_.encode) throw std::invalid_argument("TextEncoder has no encode function");
  }

  Dataset load(std::istream& in) {
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      if (number == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // UTF-8 BOM
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      ++stats_.lines;
      try {
        add_line(line, number);
      } catch (const LineError& e) {
        const std::string message = origin_ + ":" + std::to_string(number) + ": " + e.what();
        if (!opt_.skip_bad_lines) throw std::runtime_error(message);
        if (stats_.skipped_lines++ == 0) stats_.first_skip_reason = message;
      }
    }
    if (examples_.empty()) {
      std::string why = std::to_string(stats_.lines) + " non-blank lines";
      if (stats_.skipped_lines) why += ", " + std::to_string(stats_.skipped_lines) + " skipped as bad";
      if (stats_.dropped_examples)
        why += ", " + std::to_string(stats_.dropped_examples) + " with no token to learn after truncation";
      throw std::runtime_error(origin_ + ": no examples (" + why + ")");
    }
    const int32_t pad = enc_.pad ? *enc_.pad : enc_.eos ? *enc_.eos : 0;
    return Dataset(std::move(examples_), *format_, pad, stats_);
  }

 private:
  void add_line(const std::string& line, int64_t number) {
    json record;
    try {
      record = json::parse(line);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
      throw LineError(std::string("malformed JSON (") + e.what() + ")");
    }
    if (!record.is_object()) throw LineError("expected a JSON object");
    const DataFormat format = detect_format(record);
    if (!format_) {
      format_ = format;
      first_line_ = number;
    } else if (format != *format_) {
      throw LineError(std::string("expected a ") + record_name(*format_) + " record like line " +
                      std::to_string(first_line_) + ", found a " + record_name(format) + " record");
    }
    if ((format == DataFormat::Messages || is_conversational_prompt(record, format)) && !opt_.chat_format)
      throw std::runtime_error(origin_ + ":" + std::to_string(number) +
                               ": conversational records need a chat format: give --chat-format NAME or a "
                               "tokenizer_config.json with a chat_template");
    Example ex = make_example(record, format);
    truncate(ex);
    if (format != DataFormat::Classification && !has_target(ex)) {
      ++stats_.dropped_examples;
      return;
    }
    examples_.push_back(std::move(ex));
  }

  Example make_example(const json& record, DataFormat format) const {
    Example ex;
    const std::vector<int32_t> bos = opt_.add_bos && enc_.bos ? std::vector<int32_t>{*enc_.bos} : std::vector<int32_t>{};
    const std::vector<int32_t> eos = opt_.add_eos && enc_.eos ? std::vector<int32_t>{*enc_.eos} : std::vector<int32_t>{};
    switch (format) {
      case DataFormat::Text:
        append(ex, bos, true);
        append(ex, enc_.encode(string_field(record, "text", "text")), true);
        append(ex, eos, true);
        break;
      case DataFormat::PromptCompletion: {
        if (is_conversational_prompt(record, format)) {
          std::vector<ChatMessage> messages;
          messages_field(record, "prompt", messages);
          const size_t prompt_size = messages.size();
          messages_field(record, "completion", messages);
          add_chat(ex, messages, opt_.completion_only_loss ? prompt_size : 0);
          break;
        }
        // Encoded apart, so the prompt's tokens are exactly the ones masked.
        const std::string& prompt = string_field(record, "prompt", "prompt");
        const std::string& completion = string_field(record, "completion", "completion");
        append(ex, bos, !opt_.completion_only_loss);
        append(ex, enc_.encode(prompt), !opt_.completion_only_loss);
        append(ex, enc_.encode(completion), true);
        append(ex, eos, true);
        break;
      }
      case DataFormat::Messages: {
        std::vector<ChatMessage> messages;
        messages_field(record, "messages", messages);
        add_chat(ex, messages, 0);
        break;
      }
      case DataFormat::Classification:
        ex.class_label = label_field(record);
        ex.input_ids = bos;
        for (int32_t id : enc_.encode(string_field(record, "text", "text"))) ex.input_ids.push_back(id);
        ex.input_ids.insert(ex.input_ids.end(), eos.begin(), eos.end());
        break;
    }
    return ex;
  }

  // Renders a conversation and appends its tokens; assistant messages from learn_from on are learned.
  void add_chat(Example& ex, const std::vector<ChatMessage>& messages, size_t learn_from) const {
    RenderedChat chat;
    try {
      chat = opt_.chat_format->render(messages, false, learn_from);
    } catch (const std::runtime_error& e) {  // what the template itself rejects
      throw LineError(opt_.chat_format->name() + " chat format: " + e.what());
    }
    for (const ChatSegment& s : chat.segments) append(ex, enc_.encode(s.text), s.assistant || !opt_.assistant_only_loss);
  }

  void truncate(Example& ex) {
    const auto max = static_cast<size_t>(opt_.max_length);
    if (opt_.max_length <= 0 || ex.input_ids.size() <= max) return;
    ++stats_.truncated_examples;
    stats_.truncated_tokens += static_cast<int64_t>(ex.input_ids.size() - max);
    ex.input_ids.resize(max);
    if (!ex.labels.empty()) ex.labels.resize(max);
  }

  static bool has_target(const Example& ex) {
    for (int32_t l : ex.labels)
      if (l != kIgnoreIndex) return true;
    return false;
  }

  std::string origin_;
  const TextEncoder& enc_;
  const DatasetOptions& opt_;
  std::optional<DataFormat> format_;
  int64_t first_line_ = 0;
  std::vector<Example> examples_;
  DatasetStats stats_;
};

}  // namespace

Dataset Dataset::from_jsonl(const std::string& path, const TextEncoder& encoder, const DatasetOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the dataset");
  return Loader(path, encoder, options).load(in);
}

Dataset Dataset::from_jsonl_string(const std::string& jsonl, const std::string& origin, const TextEncoder& encoder,
                                   const DatasetOptions& options) {
  std::istringstream in(jsonl);
  return Loader(origin, encoder, options).load(in);
}

}  // namespace peft
