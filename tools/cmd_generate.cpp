// `peft generate`: samples text from a causal LM, with or without an adapter, streaming it to the
// terminal as it is produced; --chat wraps the prompt in the model's chat format.
#include <chrono>
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/eval/generate.h"
#include "peft/models/model_tokenizer.h"
#include "peft/adapters/peft_model.h"
#include "peft/text/token_streamer.h"

namespace {

int run_generate(const std::vector<std::string>& argv) {
  std::string device = "cpu", model_dir, adapter_dir, prompt, chat_format, dtype = "float32";
  peft::GenerateOptions g;
  bool chat = false, show_stats = false;
  peft::Flags args(
      "generate", "peft generate --model DIR [--adapter DIR] --prompt TEXT [options]",
      "Continues a prompt with a causal LM (Llama, Mistral, Qwen2, GPT-2), with or without a PEFT\n"
      "adapter, printing the text as it is generated. The prompt is run once into a key/value cache,\n"
      "then one token at a time. Each token is drawn from softmax(logits / temperature) over the\n"
      "top-k most likely tokens, then the smallest set of them holding top-p of the probability;\n"
      "--temperature 0 takes the most likely token (greedy). Generation stops at an end-of-sequence\n"
      "token (config.json / generation_config.json eos_token_id, the tokenizer's eos_token) or after\n"
      "--max-new-tokens. The same --seed gives the same text.",
      "  peft generate --model models/fortune-llama --prompt \"Experience, n.:\" --max-new-tokens 80\n"
      "  peft generate --model models/chat --adapter runs/chat/adapter --chat --prompt \"Tell me a fortune\" \\\n"
      "                --temperature 0.7 --top-p 0.9 --seed 42");
  args.flag("model", "DIR|FILE.gguf", "Hugging Face causal LM directory (config.json, model.safetensors, tokenizer.json) or llama.cpp GGUF file", &model_dir);
  args.flag("adapter", "DIR", "PEFT adapter directory to generate with (default: the model alone)", &adapter_dir);
  args.flag("prompt", "TEXT", "the text to continue (with --chat: the user's message)", &prompt);
  args.flag("max-new-tokens", "N", "at most this many new tokens (default 64)", &g.max_new_tokens);
  args.flag("temperature", "T", "sampling temperature (default 0.8; 0 = greedy)", &g.sampling.temperature);
  args.flag("top-k", "K", "sample among the K most likely tokens (default 40; 0 = all)", &g.sampling.top_k);
  args.flag("top-p", "P", "then among the most likely holding probability P (default 1.0 = all)", &g.sampling.top_p);
  args.flag("seed", "S", "random seed (default 0)", &g.seed);
  args.toggle("chat", "render the prompt as a user message in the model's chat format, ready for the reply", &chat);
  args.flag("chat-format", "NAME", "chat format to use when the model's template is not recognised", &chat_format);
  args.flag("dtype", "NAME", "base weights float32 (default) or bfloat16", &dtype);
  args.flag("device", "NAME", "cpu (default) or cuda (a libtorch build with CUDA)", &device);
  args.toggle("stats", "print the number of tokens, the stop reason and tokens/s to stderr at the end", &show_stats);
  if (!args.parse(argv)) return 0;
  args.require("model", model_dir);
  args.require("prompt", prompt);
  if (g.max_new_tokens < 0) throw std::invalid_argument("--max-new-tokens must be >= 0");
  if (!(g.sampling.temperature >= 0)) throw std::invalid_argument("--temperature must be >= 0 (0 = greedy)");
  if (g.sampling.top_k < 0) throw std::invalid_argument("--top-k must be >= 0 (0 = no limit)");
  if (!(g.sampling.top_p > 0 && g.sampling.top_p <= 1)) throw std::invalid_argument("--top-p must be in (0, 1]");
  if (!chat_format.empty() && !chat) throw std::invalid_argument("--chat-format only applies with --chat");

  auto text = peft::ModelTokenizer::load(model_dir);
  std::vector<int32_t> ids;
  if (chat) {
    auto format = text.chat_format(chat_format);
    // The rendered chat carries its own special tokens (the template writes bos where it wants one).
    ids = text.tokenizer().encode(format.apply({{"user", prompt}}, /*add_generation_prompt=*/true), false);
  } else {
    ids = text.tokenizer().encode(prompt, true);
  }
  g.stop_ids = text.eos_ids();

  auto model = peft::load_model(model_dir, peft::load_options(dtype, device));
  text.check_fits(model->config().vocab_size);
  if (!model->config().is_causal_lm)
    throw std::invalid_argument(model_dir + " is " + model->config().architecture + ", not a causal LM; generate needs one");
  std::unique_ptr<peft::PeftModel> adapted;
  if (!adapter_dir.empty()) adapted = peft::PeftModel::load(model, adapter_dir);

  if (!chat) std::cout << prompt << std::flush;
  std::vector<int32_t> context(ids.begin(), ids.end());
  peft::TokenStreamer streamer(text.tokenizer(), context);
  auto on_token = [&](int64_t tok) {
    if (!g.stop_ids.count(tok)) std::cout << streamer.put(static_cast<int32_t>(tok)) << std::flush;
    return true;
  };
  std::vector<int64_t> prompt_ids(ids.begin(), ids.end());
  auto t0 = std::chrono::steady_clock::now();
  auto r = adapted ? peft::generate(*adapted, prompt_ids, g, on_token) : peft::generate(*model, prompt_ids, g, on_token);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << streamer.finish() << "\n";
  if (show_stats)
    std::cerr << r.tokens.size() << " tokens, stopped by " << peft::to_string(r.stop) << ", "
              << (secs > 0 ? static_cast<double>(r.tokens.size()) / secs : 0.0) << " tokens/s\n";
  if (r.stop == peft::StopReason::MaxLength)
    std::cerr << "note: stopped at the model's " << model->config().max_position_embeddings << " positions\n";
  return 0;
}

}  // namespace

PEFT_COMMAND("generate", "sample text from a causal LM, with or without an adapter", run_generate);
