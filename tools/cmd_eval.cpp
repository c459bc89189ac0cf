// `peft eval`: loss and perplexity (causal LM) or loss and accuracy (classification) of a model,
// with or without an adapter, on a JSONL dataset; prints a human line and a JSON line.
// --dump-logits writes the first batch and its logits, to compare with another implementation.
#include <iomanip>
#include <iostream>
#include <sstream>

#include "command.h"
#include "peft/eval/eval_mode.h"
#include "peft/eval/evaluate.h"
#include "peft/core/flags.h"
#include "peft/models/model_tokenizer.h"
#include "peft/adapters/peft_model.h"
#include "peft/formats/safetensors.h"

namespace {

// The first batch of `data` exactly as evaluate() forms it (the first `batch_size` examples,
// right-padded) and what `forward` gives for it, written to `path` as safetensors: input_ids,
// attention_mask and labels (int64) and logits (float32). Call in eval mode.
void dump_first_batch(const peft::ForwardFn& forward, const peft::Dataset& data, int64_t batch_size, at::Device device,
                      const std::string& path) {
  at::NoGradGuard no_grad;
  peft::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  auto tb = peft::DataLoader(data, lo).batch({0, 0});
  auto b = peft::to_model_batch(tb, device);
  auto mask = at::tensor(tb.attention_mask, at::kLong).view({tb.batch_size, tb.seq_len});
  auto logits = forward(b).logits.to(at::kFloat);
  peft::save_safetensors(path, {{"input_ids", b.input_ids}, {"attention_mask", mask}, {"labels", b.labels}, {"logits", logits}});
}

int run_eval(const std::vector<std::string>& argv) {
  std::string device = "cpu", model_dir, adapter_dir, data, chat_format, dtype = "float32", dump_logits;
  int64_t batch_size = 8, max_length = 512;
  peft::Flags args(
      "eval", "peft eval --model DIR [--adapter DIR] --data FILE.jsonl [options]",
      "Evaluates a model, or a model with a PEFT adapter (LoRA or AdaLoRA), on a dataset in any of\n"
      "`peft train`'s forms. Causal LMs: the mean loss over the tokens that training would learn\n"
      "(completions, assistant turns, or all text) and its perplexity exp(loss). Classification\n"
      "models on {\"text\",\"label\"} records: the mean loss and the accuracy. AdaLoRA's orthogonal\n"
      "penalty is not included. Prints one line for people and one JSON line:\n"
      "  {\"eval_loss\":..., \"eval_ppl\":..., \"eval_tokens\":...}   (classification: eval_accuracy, eval_examples)\n"
      "--dump-logits also writes the first batch (the first --batch-size examples, right-padded) and\n"
      "the logits the model gives it, e.g. to compare with PEFT and transformers on the same tokens.",
      "  peft eval --model models/fortune-llama --data data/demo/definitions-eval.jsonl\n"
      "  peft eval --model models/fortune-llama --adapter out/demo/adapter --data data/demo/definitions-eval.jsonl --batch-size 4\n"
      "  peft eval --model models/fortune-llama --data data/demo/definitions-eval.jsonl --dump-logits first-batch.safetensors");
  args.flag("model", "DIR|FILE.gguf", "Hugging Face model directory (config.json, model.safetensors, tokenizer.json) or llama.cpp GGUF file", &model_dir);
  args.flag("adapter", "DIR", "PEFT adapter directory to evaluate with (default: the model alone)", &adapter_dir);
  args.flag("data", "FILE", "JSONL: {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\"} or {\"text\",\"label\"}", &data);
  args.flag("batch-size", "N", "examples per forward pass (default 8; the result does not depend on it)", &batch_size);
  args.flag("max-length", "N", "cut examples to this many tokens, as training does (default 512)", &max_length);
  args.flag("chat-format", "NAME", "chat format for {\"messages\"} data when the model's template is not recognised", &chat_format);
  args.flag("dtype", "NAME", "base weights float32 (default) or bfloat16", &dtype);
  args.flag("device", "NAME", "cpu (default) or cuda (a libtorch build with CUDA)", &device);
  args.flag("dump-logits", "FILE",
            "write the first batch to FILE (safetensors): input_ids, attention_mask, labels (int64) and logits (float32)",
            &dump_logits);
  if (!args.parse(argv)) return 0;
  args.require("model", model_dir);
  args.require("data", data);
  if (batch_size <= 0) throw std::invalid_argument("--batch-size must be > 0, got " + std::to_string(batch_size));
  if (max_length < 2)
    throw std::invalid_argument("--max-length must be at least 2 (a token and the one it predicts), got " + std::to_string(max_length));

  auto text = peft::ModelTokenizer::load(model_dir);
  peft::DatasetOptions dopt;
  dopt.max_length = max_length;
  dopt.chat_format = text.optional_chat_format(chat_format);
  auto dataset = peft::Dataset::from_jsonl(data, text.encoder(), dopt);

  auto model = peft::load_model(model_dir, peft::load_options(dtype, device));
  text.check_fits(model->config().vocab_size);
  peft::check_task(dataset, model->config(), data, model_dir);
  peft::EvalResult r;
  if (!adapter_dir.empty()) {
    auto adapted = peft::PeftModel::load(model, adapter_dir);
    r = peft::evaluate(*adapted, dataset, batch_size);
    if (!dump_logits.empty()) {
      peft::EvalMode eval_mode(*adapted);
      dump_first_batch([&](const peft::Batch& b) { return adapted->forward(b); }, dataset, batch_size, model->device(), dump_logits);
    }
  } else {
    r = peft::evaluate(*model, dataset, batch_size);
    if (!dump_logits.empty()) {
      peft::EvalMode eval_mode(*model);
      dump_first_batch([&](const peft::Batch& b) { return model->forward(b); }, dataset, batch_size, model->device(), dump_logits);
    }
  }

  std::ostringstream human;
  human << std::setprecision(6) << (adapter_dir.empty() ? model_dir : model_dir + " + " + adapter_dir) << " on " << data
        << ": loss " << r.loss;
  nlohmann::ordered_json j;
  j["eval_loss"] = r.loss;
  if (r.accuracy >= 0) {
    human << ", accuracy " << r.accuracy << " (" << r.tokens << " examples)";
    j["eval_accuracy"] = r.accuracy;
    j["eval_examples"] = r.tokens;
  } else {
    human << ", perplexity " << r.perplexity << " (" << r.tokens << " tokens, " << dataset.size() << " examples)";
    j["eval_ppl"] = r.perplexity;
    j["eval_tokens"] = r.tokens;
  }
  auto st = dataset.stats();
  if (st.truncated_examples) human << "; " << st.truncated_examples << " examples cut to --max-length " << max_length;
  if (st.dropped_examples) human << "; " << st.dropped_examples << " dropped (no token to score)";
  if (!dump_logits.empty()) human << "; first batch and its logits written to " << dump_logits;
  std::cout << human.str() << "\n" << j.dump() << "\n";
  return 0;
}

}  // namespace

PEFT_COMMAND("eval", "loss / perplexity or accuracy of a model, with or without an adapter", run_eval);
