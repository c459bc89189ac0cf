// `peft tokenize`: encodes JSON strings read one per line from stdin into JSON arrays of token
// ids with a tokenizer.json (or decodes arrays of ids back into strings with --decode).
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/formats/gguf.h"
#include "peft/formats/gguf_model.h"
#include "peft/formats/gguf_tokenizer.h"
#include "peft/text/tokenizer.h"

namespace {

int run_tokenize(const std::vector<std::string>& args) {
  std::string path;
  bool special = false, decode = false, skip_special = false;
  peft::Flags flags(
      "tokenize", "peft tokenize TOKENIZER_JSON|FILE.gguf [--special] [--decode [--skip-special]]",
      "Reads one JSON string per line on stdin and writes its token ids as a JSON array per line.\n"
      "The tokenizer: a tokenizer.json, or the tokenizer.ggml.* metadata of a llama.cpp GGUF file.",
      "  echo '\"Hello world\"' | peft tokenize tokenizer.json\n"
      "  [9906,1917]\n"
      "  echo '[9906,1917]' | peft tokenize tokenizer.json --decode\n"
      "  \"Hello world\"");
  flags.positional("TOKENIZER_JSON", &path);
  flags.toggle("special", "add the special tokens of the tokenizer's post-processor (e.g. <s>)", &special);
  flags.toggle("decode", "read JSON arrays of ids instead and write the decoded JSON strings", &decode);
  flags.toggle("skip-special", "with --decode, leave special tokens out of the text", &skip_special);
  try {
    if (!flags.parse(args)) return 0;
    flags.require("TOKENIZER_JSON", path);
  } catch (const std::invalid_argument& e) {
    std::cerr << "peft tokenize: error: " << e.what() << "\n";
    return 2;
  }
  auto tokenizer = peft::is_gguf_path(path)
                       ? peft::Tokenizer::from_json_string(peft::gguf_tokenizer_files(peft::GgufFile(path)).tokenizer.dump(), path)
                       : peft::Tokenizer::from_file(path);
  std::ios::sync_with_stdio(false);
  std::string line;
  for (size_t number = 1; std::getline(std::cin, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // syntax, and numbers beyond double (out_of_range)
      throw std::runtime_error("stdin line " + std::to_string(number) + ": not valid JSON: " + e.what());
    }
    if (decode) {
      std::vector<int32_t> ids;
      bool ok = value.is_array();
      for (auto& v : value) {
        // JSON's non-negative integers are unsigned; a negative one is the only signed kind.
        ok = ok && v.is_number_unsigned() && v.get<uint64_t>() <= INT32_MAX;
        if (ok) ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
      }
      if (!ok)
        throw std::runtime_error("stdin line " + std::to_string(number) +
                                 ": expected a JSON array of token ids (integers from 0 to 2^31-1)");
      std::string text;
      try {
        text = tokenizer.decode(ids, skip_special);
      } catch (const std::exception& e) {
        throw std::runtime_error("stdin line " + std::to_string(number) + ": " + e.what());
      }
      std::cout << nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    } else {
      if (!value.is_string()) throw std::runtime_error("stdin line " + std::to_string(number) + ": expected a JSON string");
      try {
        std::cout << nlohmann::json(tokenizer.encode(value.get<std::string>(), special)).dump() << '\n';
      } catch (const std::exception& e) {
        throw std::runtime_error("stdin line " + std::to_string(number) + ": " + e.what());
      }
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace

PEFT_COMMAND("tokenize", "encode JSON strings from stdin into token ids with a tokenizer.json", run_tokenize);
