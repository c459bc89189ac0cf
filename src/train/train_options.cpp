// The option table of `peft train`: peft::Flags bound to a TrainOptions parses each flag or recipe
// value and documents it for --help. Unknown flags and bad values name themselves and the closest name.
#include "peft/train/train_options.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/core/flags.h"

namespace peft {
namespace {

// The table of `peft train`, bound to `o`. `recipe` is listed so that --help and typos know it; its
// files are applied by parse_train_options before the flags.
// A setter for an integer setting whose default is derived unless the user gives it.
void given_int(Flags& f, const std::string& name, const std::string& arg, const std::string& help, int64_t* value,
               bool* given) {
  f.flag(name, arg, help,
         [value, given](const std::string& v) {
           *value = Flags::to_int64(v);
           *given = true;
         },
         [value] { return nlohmann::json(*value); });
}

Flags train_flags(TrainOptions& o) {
  Flags f("train", "peft train --model DIR --data FILE [options]   (or --recipe FILE.json; flags override it)",
          "Fine-tunes a Hugging Face model with AdaLoRA (default), LoRA, or in full. The trainer derives\n"
          "total_step from the plan (examples, epochs, batch size, accumulation), calls update_and_allocate\n"
          "after every optimizer step, checkpoints, and writes adapter/ (PEFT format), metrics.jsonl,\n"
          "ranks.jsonl and report.html into --output-dir.",
          "  peft train --model models/fortune-llama --data data/demo/definitions-train.jsonl \\\n"
          "             --eval-fraction 0.1 --init_r 12 --target_r 4 --epochs 2 --lr 2e-2 --output-dir runs/ada");
  f.options_note("recipe keys are the same names, e.g. {\"init_r\": 12, \"lr\": 0.002}");
  f.flag("recipe", "FILE", "JSON object of option names to values, applied first (flags override it)",
         [](const std::string& v) {
           if (v.empty()) throw std::invalid_argument("expected a file name");
         });
  f.flag("model", "DIR|FILE.gguf", "Hugging Face model directory (config.json, model.safetensors, tokenizer.json) or llama.cpp GGUF file", &o.model_dir);
  f.toggle("from-scratch", "initialise the weights from config.json instead of loading them (with --method full)", &o.from_scratch);
  f.flag("method", "NAME", "adalora (default), lora, or full (every weight trained)", &o.method);
  f.flag("data", "FILE", "training data, JSONL: {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\"} or {\"text\",\"label\"}", &o.data);
  f.flag("eval-data", "FILE", "evaluation data in the same form", &o.eval_data);
  f.flag("eval-fraction", "F", "hold out this fraction of --data for evaluation (when no --eval-data)", &o.eval_fraction);
  f.flag("output-dir", "DIR", "where adapter/, checkpoints/, metrics.jsonl, ranks.jsonl, report.html go (default out)", &o.output_dir);
  f.toggle("overwrite-output-dir", "replace an earlier run found in --output-dir (without it, such a run is refused)",
           &o.overwrite_output_dir);
  f.flag("chat-format", "NAME", "chat format for {\"messages\"} data when the model's template is not recognised", &o.chat_format);
  f.flag("resume", "CKPT", "continue from a checkpoint directory, or 'latest' in --output-dir", &o.resume);
  // adapter
  auto& a = o.adapter;
  f.flag("init_r", "N", "AdaLoRA: rank every module starts with (default 12)", &a.init_r);
  f.flag("target_r", "N", "AdaLoRA: average rank at the end (default 8)", &a.target_r);
  given_int(f, "tinit", "N", "AdaLoRA: warm-up steps without pruning (default: 10% of total_step)", &a.tinit, &o.tinit_set);
  given_int(f, "tfinal", "N", "AdaLoRA: final steps with the mask frozen (default: 20% of total_step)", &a.tfinal,
            &o.tfinal_set);
  given_int(f, "deltaT", "N", "AdaLoRA: steps between two masks while budgeting (default: 1% of total_step, at least 1)",
            &a.deltaT, &o.deltaT_set);
  f.flag("beta1", "F", "AdaLoRA: EMA factor of sensitivity (default 0.85)", &a.beta1);
  f.flag("beta2", "F", "AdaLoRA: EMA factor of uncertainty (default 0.85)", &a.beta2);
  f.flag("orth_reg_weight", "F", "AdaLoRA: weight of the orthogonal penalty (default 0.5)", &a.orth_reg_weight);
  given_int(f, "total_step", "N", "AdaLoRA: optimizer steps of the schedule (default: derived from the plan; leave it)",
            &a.total_step, &o.total_step_set);
  f.flag("r", "N", "LoRA: rank (default 8)", &a.r);
  f.flag("lora_alpha", "F", "scaling numerator (default 8; AdaLoRA multiplier lora_alpha/init_r, LoRA lora_alpha/r)", &a.lora_alpha);
  f.flag("lora_dropout", "F", "dropout on the adapter input (default 0)", &a.lora_dropout);
  f.toggle("use_rslora", "LoRA: scale by lora_alpha/sqrt(r)", &a.use_rslora);
  f.flag("target_modules", "LIST", "comma-separated module names (q_proj,v_proj), 'all-linear', or a regex with --target_modules_regex",
         &a.target_modules);
  f.flag("target_modules_regex", "RE", "regex matched against whole module paths",
         [&a](const std::string& v) { a.target_modules_regex = v; },
         [&a] { return a.target_modules_regex ? nlohmann::json(*a.target_modules_regex) : nlohmann::json(); });
  f.flag("modules_to_save", "LIST", "comma-separated modules trained in full and saved with the adapter (classification: classifier)",
         &a.modules_to_save);
  // run
  f.flag("epochs", "F", "passes over the training data, fractions allowed (default 1)", &o.epochs);
  given_int(f, "max-steps", "N", "optimizer steps; overrides --epochs", &o.max_steps, &o.max_steps_set);
  f.flag("batch-size", "N", "examples per micro-batch (default 8)", &o.batch_size);
  f.flag("eval-batch-size", "N", "examples per evaluation batch (default: --batch-size)", &o.eval_batch_size);
  f.flag("grad-accum", "N", "micro-batches per optimizer step (default 1)", &o.grad_accum);
  f.flag("max-length", "N", "truncate examples to this many tokens (default 512)", &o.max_length);
  f.toggle("pack", "pack several examples per row (causal LM data)", &o.pack);
  f.toggle("gradient-checkpointing", "recompute each block's activations in backward: less memory, one more forward",
           &o.gradient_checkpointing);
  f.flag("lr", "F", "peak learning rate (default 1e-3)", &o.lr);
  f.flag("lr-scheduler", "NAME", "linear (default), cosine or constant, after warm-up", &o.lr_scheduler);
  f.flag("warmup-steps", "N", "learning-rate warm-up steps (default 0)", &o.warmup_steps);
  f.flag("warmup-ratio", "F", "warm-up as a fraction of the run (when no --warmup-steps)", &o.warmup_ratio);
  f.flag("weight-decay", "F", "AdamW decoupled weight decay (default 0)", &o.weight_decay);
  f.flag("max-grad-norm", "F", "clip the gradient norm to this (default 1; 0 = off)", &o.max_grad_norm);
  f.flag("adam-beta1", "F", "AdamW beta1 (default 0.9)", &o.adam_beta1);
  f.flag("adam-beta2", "F", "AdamW beta2 (default 0.999)", &o.adam_beta2);
  f.flag("adam-eps", "F", "AdamW eps (default 1e-8)", &o.adam_eps);
  f.flag("logging-steps", "N", "print a progress line every N optimizer steps (default 1)", &o.logging_steps);
  f.flag("eval-steps", "N", "evaluate every N steps (default 0: at the start and the end)", &o.eval_steps);
  f.flag("save-steps", "N", "checkpoint every N steps (default 0: at the end)", &o.save_steps);
  f.flag("save-total-limit", "N", "checkpoints kept (default 2)", &o.save_total_limit);
  f.flag("seed", "N", "seed of initialisation, shuffling and dropout (default 42)", &o.seed);
  f.flag("dtype", "NAME", "base weights float32 (default) or bfloat16; adapters stay float32", &o.dtype);
  f.flag("bf16", "", "bfloat16 frozen base, float32 adapters and optimizer (= --dtype bfloat16)",
         [&o](const std::string& v) { o.dtype = Flags::to_bool(v.empty() ? "true" : v) ? "bfloat16" : "float32"; },
         [&o] { return nlohmann::json(o.dtype == "bfloat16"); });
  f.flag("device", "NAME", "cpu (default) or cuda", &o.device);
  f.flag("nproc-per-node", "N", "train as N data-parallel processes of this machine (or start under torchrun; docs/distributed.md)",
         &o.nproc_per_node);
  f.flag("dist-timeout", "S", "data parallel: seconds a process waits for the others before it stops (default 300)", &o.dist_timeout);
  f.toggle("quiet", "no progress lines", &o.quiet);
  f.toggle("report", "write report.html at the end (default true; --report=false to skip)", &o.report);
  // transformers' TrainingArguments names, where the meaning is the same, so its command lines carry over.
  for (auto [name, other] : std::initializer_list<std::pair<const char*, const char*>>{
           {"lr", "learning_rate"},
           {"epochs", "num_train_epochs"},
           {"batch-size", "per_device_train_batch_size"},
           {"eval-batch-size", "per_device_eval_batch_size"},
           {"grad-accum", "gradient_accumulation_steps"},
           {"lr-scheduler", "lr_scheduler_type"},
           {"adam-beta1", "adam_beta1"},
           {"adam-beta2", "adam_beta2"},
           {"adam-eps", "adam_epsilon"},
           {"max-grad-norm", "max_grad_norm"},
           {"overwrite-output-dir", "overwrite_output_dir"},
           {"resume", "resume_from_checkpoint"}})
    f.alias(name, other);
  return f;
}

std::string json_to_value(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_array()) {
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ",") + (x.is_string() ? x.get<std::string>() : x.dump());
    return s;
  }
  return v.dump();
}

// Applies the recipe `file` to the options behind `flags`: each key is a flag name, each value goes
// through the same conversion as on the command line. Errors name the file and the key.
void apply_recipe(Flags& flags, const std::string& file) {
  nlohmann::json j;
  try {
    j = read_json_file(file, "a recipe given to --recipe");
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(e.what());
  }
  if (!j.is_object()) throw std::invalid_argument(file + ": a recipe is a JSON object of option names to values");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (Flags::normalise(key) == "recipe") throw std::invalid_argument(file + ": key \"" + key + "\": a recipe cannot name another recipe");
    if (!flags.has(key)) {
      auto s = flags.suggest(key);
      throw std::invalid_argument(file + ": unknown key \"" + key + "\"" + (s.empty() ? "" : " (did you mean " + s + "?)"));
    }
    try {
      flags.set(key, json_to_value(it.value()));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(file + ": key \"" + key + "\": " + e.what());
    }
  }
}

// Refuses values that would fail later, naming the flag (or recipe key: the same name), the value
// and the valid range.
void check_values(const TrainOptions& o) {
  auto fail = [](const std::string& flag, const std::string& value, const std::string& range) {
    throw std::invalid_argument("--" + flag + " " + value + ": " + range);
  };
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  if (!(std::isfinite(o.lr) && o.lr > 0)) fail("lr", num(o.lr), "the learning rate must be a finite number > 0");
  if (o.batch_size <= 0) fail("batch-size", std::to_string(o.batch_size), "must be >= 1");
  if (o.grad_accum <= 0) fail("grad-accum", std::to_string(o.grad_accum), "must be >= 1");
  if (o.max_steps_set && o.max_steps < 1)
    fail("max-steps", std::to_string(o.max_steps), "must be >= 1 (leave it out to train for --epochs)");
  if (!o.max_steps_set && !(std::isfinite(o.epochs) && o.epochs > 0 && o.epochs <= 1e6))
    fail("epochs", num(o.epochs), "must be a number > 0 and at most 1e6 (or give --max-steps)");
  if (o.eval_batch_size < 0) fail("eval-batch-size", std::to_string(o.eval_batch_size), "must be >= 1 (0: --batch-size)");
  if (o.max_length < 2) fail("max-length", std::to_string(o.max_length), "must be >= 2 (a token and the one it predicts)");
  if (!(o.eval_fraction >= 0 && o.eval_fraction < 1)) fail("eval-fraction", num(o.eval_fraction), "must be in [0, 1)");
  if (!(o.warmup_ratio >= 0 && o.warmup_ratio <= 1)) fail("warmup-ratio", num(o.warmup_ratio), "must be in [0, 1]");
  if (o.warmup_steps < 0) fail("warmup-steps", std::to_string(o.warmup_steps), "must be >= 0");
  if (!(o.weight_decay >= 0 && std::isfinite(o.weight_decay))) fail("weight-decay", num(o.weight_decay), "must be a finite number >= 0");
  if (!(o.max_grad_norm >= 0 && std::isfinite(o.max_grad_norm)))
    fail("max-grad-norm", num(o.max_grad_norm), "must be a finite number >= 0 (0: no clipping)");
  if (!(o.adam_beta1 >= 0 && o.adam_beta1 < 1)) fail("adam-beta1", num(o.adam_beta1), "must be in [0, 1)");
  if (!(o.adam_beta2 >= 0 && o.adam_beta2 < 1)) fail("adam-beta2", num(o.adam_beta2), "must be in [0, 1)");
  if (!(o.adam_eps > 0 && std::isfinite(o.adam_eps))) fail("adam-eps", num(o.adam_eps), "must be a finite number > 0");
  if (o.eval_steps < 0) fail("eval-steps", std::to_string(o.eval_steps), "must be >= 0 (0: at the start and the end)");
  if (o.save_steps < 0) fail("save-steps", std::to_string(o.save_steps), "must be >= 0 (0: at the end)");
  if (o.save_total_limit < 1) fail("save-total-limit", std::to_string(o.save_total_limit), "must be >= 1");
  if (o.nproc_per_node < 0 || o.nproc_per_node > 1024)
    fail("nproc-per-node", std::to_string(o.nproc_per_node), "must be from 1 to 1024 processes");
  if (!(std::isfinite(o.dist_timeout) && o.dist_timeout > 0 && o.dist_timeout <= 86400))
    fail("dist-timeout", num(o.dist_timeout), "must be a number of seconds > 0 and at most 86400");
}

}  // namespace

TrainOptions parse_train_options(const std::vector<std::string>& args) {
  if (Flags::asks_for_help(args))
    throw std::invalid_argument("--help is not an option to parse; print train_options_help() (peft train --help)");
  TrainOptions o;
  Flags flags = train_flags(o);
  // The recipes first (in order), so that flags override them.
  for (size_t i = 0; i < args.size(); ++i) {
    std::string file;
    if (args[i] == "--recipe" && i + 1 < args.size()) file = args[++i];
    else if (args[i].rfind("--recipe=", 0) == 0) file = args[i].substr(9);
    if (!file.empty()) apply_recipe(flags, file);
  }
  flags.parse(args);
  if (o.method == "adalora") o.adapter.peft_type = PeftType::AdaLora;
  else if (o.method == "lora") o.adapter.peft_type = PeftType::Lora;
  else if (o.method != "full") throw std::invalid_argument("--method: expected adalora, lora or full, got \"" + o.method + "\"");
  if (o.lr_scheduler != "linear" && o.lr_scheduler != "cosine" && o.lr_scheduler != "constant")
    throw std::invalid_argument("--lr-scheduler: expected linear, cosine or constant, got \"" + o.lr_scheduler + "\"");
  check_values(o);
  if (o.logging_steps <= 0) o.logging_steps = 1;
  return o;
}

std::string train_options_help() {
  TrainOptions o;
  return train_flags(o).help();
}

nlohmann::json TrainOptions::to_json() const {
  TrainOptions copy = *this;  // the flag table binds to the copy; values() reads every flag back
  auto j = train_flags(copy).values();
  j.erase("recipe");
  return j;
}

}  // namespace peft
