// Tokenizer throughput: encodes the llama3 reference corpus, repeated to a few MB, with the
// llama3 tokenizer.json and prints MB/s and tokens/s (one thread).
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "peft/text/tokenizer.h"

namespace {

void bench_tokenizer() {
  const std::string data = PEFT_TEST_DATA "/tokenizers";
  const std::string path = PEFT_TEST_DATA "/../../.cache/tokenizers/llama3/tokenizer.json";
  if (!std::ifstream(path)) {
    std::cout << "tokenizer llama3: skipped, " << path << " is missing (run scripts/fetch-test-data.sh)\n";
    return;
  }
  std::ifstream in(data + "/llama3.encodings.json");
  auto ref = nlohmann::json::parse(in);
  std::vector<std::string> corpus;
  size_t corpus_bytes = 0;
  for (auto& c : ref["cases"]) {
    corpus.push_back(c["text"].get<std::string>());
    corpus_bytes += corpus.back().size();
  }

  double t0 = peft::bench::now_s();
  auto tok = peft::Tokenizer::from_file(path);
  double t1 = peft::bench::now_s();
  std::cout << "tokenizer llama3: loaded in " << (t1 - t0) << " s\n";

  const size_t target = 4 << 20;
  size_t bytes = 0, tokens = 0;
  double start = peft::bench::now_s();
  while (bytes < target) {
    for (auto& text : corpus) tokens += tok.encode(text).size();
    bytes += corpus_bytes;
  }
  double seconds = peft::bench::now_s() - start;
  std::cout << "tokenizer llama3: " << (bytes / 1e6) / seconds << " MB/s (" << static_cast<long>(tokens / seconds)
            << " tokens/s)\n";
}

}  // namespace

PEFT_BENCH("tokenizer", bench_tokenizer);
