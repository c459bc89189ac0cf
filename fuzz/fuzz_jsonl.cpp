// libFuzzer target: JSONL training data (text, prompt/completion, messages, text + label records) read by
// Dataset::from_jsonl_string with the tiny test tokenizer; errors must be std::runtime_error "file:line".
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "peft/text/chat_format.h"
#include "peft/data/data_loader.h"
#include "peft/data/dataset.h"
#include "peft/text/tokenizer.h"
#include "peft/text/tokenizer_config.h"

namespace {

const peft::Tokenizer& tokenizer() {
  static const peft::Tokenizer tok = peft::Tokenizer::from_file(PEFT_TEST_DATA "/tiny/tokenizer.json");
  return tok;
}

// The checks every loaded dataset passes, whatever its records.
void check(const peft::Dataset& d, const peft::DatasetOptions& opt) {
  PEFT_FUZZ_CHECK(d.size() > 0, "an empty dataset must be an error");
  PEFT_FUZZ_CHECK(d.num_classes() >= 0, std::to_string(d.num_classes()));
  for (const peft::Example& ex : d.examples()) {
    if (opt.max_length > 0) PEFT_FUZZ_CHECK(ex.input_ids.size() <= static_cast<size_t>(opt.max_length), "max_length");
    if (d.format() == peft::DataFormat::Classification) {
      PEFT_FUZZ_CHECK(ex.class_label.has_value() && *ex.class_label >= 0,
                      "class label " + std::to_string(ex.class_label.value_or(-1)));
      PEFT_FUZZ_CHECK(ex.labels.empty(), "classification examples have no token labels");
    } else {
      PEFT_FUZZ_CHECK(ex.labels.size() == ex.input_ids.size(), "labels as long as input_ids");
    }
  }
  // Batches of what was loaded.
  peft::LoaderOptions lo;
  lo.batch_size = 3;
  peft::DataLoader loader(d, lo);
  for (int64_t i = 0; i < loader.steps_per_epoch() && i < 4; ++i) {
    const peft::TokenBatch b = loader.next();
    PEFT_FUZZ_CHECK(b.input_ids.size() == static_cast<size_t>(b.batch_size * b.seq_len), "batch shape");
  }
  if (d.size() >= 2) (void)peft::split_train_eval(d, 0.5, 7);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const peft::TextEncoder enc = peft::make_text_encoder(tokenizer(), peft::TokenizerConfig{});
  static const std::vector<std::string> formats = peft::ChatFormat::known_names();
  const std::string jsonl(reinterpret_cast<const char*>(data), size);

  // The defaults, strict; then lenient with truncation and a chat format chosen by the input's size.
  peft::DatasetOptions strict;
  strict.chat_format = peft::ChatFormat::by_name("chatml");
  peft::DatasetOptions lenient;
  lenient.skip_bad_lines = true;
  lenient.max_length = 1 + static_cast<int64_t>(size % 13);
  lenient.chat_format = peft::ChatFormat::by_name(formats[size % formats.size()]);
  lenient.add_bos = false;
  lenient.completion_only_loss = false;
  lenient.assistant_only_loss = size % 2 == 0;
  peft::DatasetOptions no_chat;  // conversational records without a chat format: an error, not a crash

  const bool lists = jsonl.find('[') != std::string::npos;  // only conversations differ without a chat format
  for (const peft::DatasetOptions* opt : {&strict, &lenient, &no_chat}) {
    if (opt == &no_chat && !lists) continue;
    try {
      check(peft::Dataset::from_jsonl_string(jsonl, "data.jsonl", enc, *opt), *opt);
    } catch (const std::runtime_error&) {
    }
  }
  return 0;
}
