// Everything `peft train` can be told, with PEFT's names for adapter settings: set by flags,
// by a JSON recipe file (same names), or both (flags win). One table drives parsing and --help.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "peft/formats/adapter_config.h"

namespace peft {

struct TrainOptions {
  // What to train
  std::string model_dir;          // Hugging Face model dir: config.json, model.safetensors, tokenizer.json
  bool from_scratch = false;      // initialise the weights from config.json instead of loading them
  std::string method = "adalora"; // adalora | lora | full
  std::string data;               // training JSONL
  std::string eval_data;          // evaluation JSONL (optional)
  double eval_fraction = 0.0;     // else hold out this fraction of `data` for evaluation
  std::string output_dir = "out";
  std::string chat_format;        // override the chat template detection
  std::string resume;             // a checkpoint dir, or "latest" (of output_dir)
  bool overwrite_output_dir = false;  // replace an earlier run found in output_dir

  // Adapter settings (PEFT names); see AdapterConfig
  AdapterConfig adapter;
  // which of tinit / tfinal / deltaT the user set (the others get schedule defaults)
  bool tinit_set = false, tfinal_set = false, deltaT_set = false, total_step_set = false, max_steps_set = false;

  // Schedule of the run
  double epochs = 1;              // passes over the data; fractions allowed (0.5: half of one)
  int64_t max_steps = 0;          // > 0: optimizer steps, overrides epochs
  int64_t batch_size = 8;
  int64_t eval_batch_size = 0;    // 0: batch_size
  int64_t grad_accum = 1;
  int64_t max_length = 512;
  bool pack = false;
  bool gradient_checkpointing = false;  // recompute block activations in backward (less memory)
  double lr = 1e-3;
  std::string lr_scheduler = "linear";  // linear | cosine | constant
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;     // 0 = no clipping
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;

  // Bookkeeping
  int64_t logging_steps = 1;
  int64_t eval_steps = 0;         // 0: evaluate at the start and the end only
  int64_t save_steps = 0;         // 0: checkpoint at the end only
  int64_t save_total_limit = 2;   // checkpoints kept
  uint64_t seed = 42;
  std::string dtype = "float32";  // base weights: float32 | bfloat16 (adapters stay float32)
  std::string device = "cpu";     // cpu | cuda
  int64_t nproc_per_node = 0;     // > 1: start that many data-parallel processes here (0: not given)
  double dist_timeout = 300;      // seconds a process waits in a collective or the rendezvous
  bool quiet = false;             // no progress lines (files are still written)
  bool report = true;             // write report.html at the end

  // Every setting by its flag name, read back through the flag table (the one list of them).
  nlohmann::json to_json() const;
};

// Parses `--name value`, `--name=value` and boolean `--name` flags (peft::Flags: '_' and '-' are
// the same in names), after applying the JSON recipe given by `--recipe FILE` (if any). Throws
// std::invalid_argument naming the flag or the recipe file and key; --help is for the caller to
// handle (peft::Flags::asks_for_help, then train_options_help()).
TrainOptions parse_train_options(const std::vector<std::string>& args);
std::string train_options_help();

}  // namespace peft
