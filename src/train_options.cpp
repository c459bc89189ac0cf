// The option table of `peft train`: each entry parses a flag or recipe value into TrainOptions and
// documents itself for --help. Unknown flags and bad values name themselves and list close names.
#include "peft/train_options.h"

#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

namespace peft {
namespace {

struct Option {
  std::string name;
  std::string arg;   // "" for a boolean switch
  std::string help;
  std::function<void(TrainOptions&, const std::string&)> set;
};

int64_t to_int(const std::string& name, const std::string& v) {
  try {
    size_t pos = 0;
    long long x = std::stoll(v, &pos);
    if (pos != v.size()) throw std::invalid_argument("");
    return x;
  } catch (...) {
    throw std::invalid_argument("--" + name + ": expected an integer, got \"" + v + "\"");
  }
}

double to_double(const std::string& name, const std::string& v) {
  try {
    size_t pos = 0;
    double x = std::stod(v, &pos);
    if (pos != v.size()) throw std::invalid_argument("");
    return x;
  } catch (...) {
    throw std::invalid_argument("--" + name + ": expected a number, got \"" + v + "\"");
  }
}

bool to_bool(const std::string& name, const std::string& v) {
  if (v.empty() || v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw std::invalid_argument("--" + name + ": expected true or false, got \"" + v + "\"");
}

std::vector<std::string> to_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

#define STR(field) [](TrainOptions& o, const std::string& v) { o.field = v; }
#define INT(field) [](TrainOptions& o, const std::string& v) { o.field = to_int(#field, v); }
#define DBL(field) [](TrainOptions& o, const std::string& v) { o.field = to_double(#field, v); }
#define BOOL(field) [](TrainOptions& o, const std::string& v) { o.field = to_bool(#field, v); }

const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      {"model", "DIR", "Hugging Face model directory (config.json, model.safetensors, tokenizer.json)", STR(model_dir)},
      {"from-scratch", "", "initialise the weights from config.json instead of loading them (with --method full)", BOOL(from_scratch)},
      {"method", "NAME", "adalora (default), lora, or full (every weight trained)", STR(method)},
      {"data", "FILE", "training data, JSONL: {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\"} or {\"text\",\"label\"}", STR(data)},
      {"eval-data", "FILE", "evaluation data in the same form", STR(eval_data)},
      {"eval-fraction", "F", "hold out this fraction of --data for evaluation (when no --eval-data)", DBL(eval_fraction)},
      {"output-dir", "DIR", "where adapter/, checkpoints/, metrics.jsonl, ranks.jsonl, report.html go (default out)", STR(output_dir)},
      {"chat-format", "NAME", "chat format for {\"messages\"} data when the model's template is not recognised", STR(chat_format)},
      {"resume", "CKPT", "continue from a checkpoint directory, or 'latest' in --output-dir", STR(resume)},
      // adapter
      {"init_r", "N", "AdaLoRA: rank every module starts with (default 12)", INT(adapter.init_r)},
      {"target_r", "N", "AdaLoRA: average rank at the end (default 8)", INT(adapter.target_r)},
      {"tinit", "N", "AdaLoRA: warm-up steps without pruning (default: 10% of total_step)",
       [](TrainOptions& o, const std::string& v) { o.adapter.tinit = to_int("tinit", v); o.tinit_set = true; }},
      {"tfinal", "N", "AdaLoRA: final steps with the mask frozen (default: 20% of total_step)",
       [](TrainOptions& o, const std::string& v) { o.adapter.tfinal = to_int("tfinal", v); o.tfinal_set = true; }},
      {"deltaT", "N", "AdaLoRA: steps between two masks while budgeting (default: 1% of total_step, at least 1)",
       [](TrainOptions& o, const std::string& v) { o.adapter.deltaT = to_int("deltaT", v); o.deltaT_set = true; }},
      {"beta1", "F", "AdaLoRA: EMA factor of sensitivity (default 0.85)", DBL(adapter.beta1)},
      {"beta2", "F", "AdaLoRA: EMA factor of uncertainty (default 0.85)", DBL(adapter.beta2)},
      {"orth_reg_weight", "F", "AdaLoRA: weight of the orthogonal penalty (default 0.5)", DBL(adapter.orth_reg_weight)},
      {"total_step", "N", "AdaLoRA: optimizer steps of the schedule (default: derived from the plan; leave it)",
       [](TrainOptions& o, const std::string& v) { o.adapter.total_step = to_int("total_step", v); o.total_step_set = true; }},
      {"r", "N", "LoRA: rank (default 8)", INT(adapter.r)},
      {"lora_alpha", "F", "scaling numerator (default 8; AdaLoRA multiplier lora_alpha/init_r, LoRA lora_alpha/r)", DBL(adapter.lora_alpha)},
      {"lora_dropout", "F", "dropout on the adapter input (default 0)", DBL(adapter.lora_dropout)},
      {"use_rslora", "", "LoRA: scale by lora_alpha/sqrt(r)", BOOL(adapter.use_rslora)},
      {"target_modules", "LIST", "comma-separated module names (q_proj,v_proj), 'all-linear', or a regex with --target_modules_regex",
       [](TrainOptions& o, const std::string& v) { o.adapter.target_modules = to_list(v); }},
      {"target_modules_regex", "RE", "regex matched against whole module paths",
       [](TrainOptions& o, const std::string& v) { o.adapter.target_modules_regex = v; }},
      {"modules_to_save", "LIST", "comma-separated modules trained in full and saved with the adapter (classification: classifier)",
       [](TrainOptions& o, const std::string& v) { o.adapter.modules_to_save = to_list(v); }},
      // run
      {"epochs", "N", "passes over the training data (default 1)", INT(epochs)},
      {"max-steps", "N", "optimizer steps; overrides --epochs", INT(max_steps)},
      {"batch-size", "N", "examples per micro-batch (default 8)", INT(batch_size)},
      {"grad-accum", "N", "micro-batches per optimizer step (default 1)", INT(grad_accum)},
      {"max-length", "N", "truncate examples to this many tokens (default 512)", INT(max_length)},
      {"pack", "", "pack several examples per row (causal LM data)", BOOL(pack)},
      {"lr", "F", "peak learning rate (default 1e-3)", DBL(lr)},
      {"lr-scheduler", "NAME", "linear (default), cosine or constant, after warm-up", STR(lr_scheduler)},
      {"warmup-steps", "N", "learning-rate warm-up steps (default 0)", INT(warmup_steps)},
      {"warmup-ratio", "F", "warm-up as a fraction of the run (when no --warmup-steps)", DBL(warmup_ratio)},
      {"weight-decay", "F", "AdamW decoupled weight decay (default 0)", DBL(weight_decay)},
      {"max-grad-norm", "F", "clip the gradient norm to this (default 1; 0 = off)", DBL(max_grad_norm)},
      {"adam-beta1", "F", "AdamW beta1 (default 0.9)", DBL(adam_beta1)},
      {"adam-beta2", "F", "AdamW beta2 (default 0.999)", DBL(adam_beta2)},
      {"adam-eps", "F", "AdamW eps (default 1e-8)", DBL(adam_eps)},
      {"logging-steps", "N", "print a progress line every N optimizer steps (default 1)", INT(logging_steps)},
      {"eval-steps", "N", "evaluate every N steps (default 0: at the start and the end)", INT(eval_steps)},
      {"save-steps", "N", "checkpoint every N steps (default 0: at the end)", INT(save_steps)},
      {"save-total-limit", "N", "checkpoints kept (default 2)", INT(save_total_limit)},
      {"seed", "N", "seed of initialisation, shuffling and dropout (default 42)",
       [](TrainOptions& o, const std::string& v) { o.seed = static_cast<uint64_t>(to_int("seed", v)); }},
      {"dtype", "NAME", "base weights float32 (default) or bfloat16; adapters stay float32", STR(dtype)},
      {"device", "NAME", "cpu (default) or cuda", STR(device)},
      {"quiet", "", "no progress lines", BOOL(quiet)},
      {"report", "", "write report.html at the end (default true; --report=false to skip)", BOOL(report)},
  };
  return table;
}

std::string normalise(std::string name) {
  for (auto& c : name)
    if (c == '_') c = '-';
  return name;
}

const Option* find_option(const std::string& name) {
  for (auto& o : options())
    if (normalise(o.name) == normalise(name)) return &o;
  return nullptr;
}

std::string suggest(const std::string& name) {
  std::string best;
  size_t best_score = 0;
  for (auto& o : options()) {
    size_t common = 0;
    auto a = normalise(name), b = normalise(o.name);
    for (size_t i = 0; i < std::min(a.size(), b.size()) && a[i] == b[i]; ++i) ++common;
    if (common > best_score) {
      best_score = common;
      best = o.name;
    }
  }
  return best_score >= 3 ? " (did you mean --" + best + "?)" : "";
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

}  // namespace

TrainOptions parse_train_options(const std::vector<std::string>& args) {
  TrainOptions o;
  // The recipe first, so that flags override it.
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    std::string file;
    if (a == "--recipe" && i + 1 < args.size()) file = args[i + 1];
    else if (a.rfind("--recipe=", 0) == 0) file = a.substr(9);
    if (file.empty()) continue;
    std::ifstream in(file);
    if (!in) throw std::invalid_argument("--recipe: cannot open " + file);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw std::invalid_argument(file + ": malformed JSON: " + e.what());
    }
    if (!j.is_object()) throw std::invalid_argument(file + ": a recipe is a JSON object of option names to values");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const Option* opt = find_option(it.key());
      if (!opt) throw std::invalid_argument(file + ": unknown key \"" + it.key() + "\"" + suggest(it.key()));
      try {
        opt->set(o, json_to_value(it.value()));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(file + ": key \"" + it.key() + "\": " + e.what());
      }
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--recipe") {
      ++i;
      continue;
    }
    if (a.rfind("--recipe=", 0) == 0) continue;
    if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument \"" + a + "\" (options start with --)");
    std::string name = a.substr(2), value;
    bool has_value = false;
    auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Option* opt = find_option(name);
    if (!opt) throw std::invalid_argument("unknown option --" + name + suggest(name) + "; see peft train --help");
    if (!has_value && !opt->arg.empty()) {
      if (i + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value (" + opt->arg + ")");
      value = args[++i];
    }
    opt->set(o, value);
  }
  if (o.method == "adalora") o.adapter.peft_type = PeftType::AdaLora;
  else if (o.method == "lora") o.adapter.peft_type = PeftType::Lora;
  else if (o.method != "full") throw std::invalid_argument("--method: expected adalora, lora or full, got \"" + o.method + "\"");
  if (o.lr_scheduler != "linear" && o.lr_scheduler != "cosine" && o.lr_scheduler != "constant")
    throw std::invalid_argument("--lr-scheduler: expected linear, cosine or constant, got \"" + o.lr_scheduler + "\"");
  if (o.batch_size <= 0) throw std::invalid_argument("--batch-size must be > 0");
  if (o.grad_accum <= 0) throw std::invalid_argument("--grad-accum must be > 0");
  if (o.epochs <= 0 && o.max_steps <= 0) throw std::invalid_argument("--epochs or --max-steps must be > 0");
  if (o.eval_fraction < 0 || o.eval_fraction >= 1) throw std::invalid_argument("--eval-fraction must be in [0, 1)");
  if (o.logging_steps <= 0) o.logging_steps = 1;
  return o;
}

std::string train_options_help() {
  std::ostringstream os;
  os << "usage: peft train --model DIR --data FILE [options]   (or --recipe FILE.json; flags override it)\n\n"
        "Fine-tunes a Hugging Face model with AdaLoRA (default), LoRA, or in full. The trainer derives\n"
        "total_step from the plan (examples, epochs, batch size, accumulation), calls update_and_allocate\n"
        "after every optimizer step, checkpoints, and writes adapter/ (PEFT format), metrics.jsonl,\n"
        "ranks.jsonl and report.html into --output-dir.\n\n"
        "example:\n"
        "  peft train --model models/tiny-fortunes --data data/train.jsonl --eval-fraction 0.1 \\\n"
        "             --init_r 12 --target_r 4 --epochs 3 --lr 2e-3 --output-dir runs/ada\n\n"
        "options (recipe keys are the same names, e.g. {\"init_r\": 12, \"lr\": 0.002}):\n";
  for (auto& o : options()) {
    std::string flag = "  --" + o.name + (o.arg.empty() ? "" : " " + o.arg);
    os << flag << std::string(flag.size() < 30 ? 30 - flag.size() : 1, ' ') << o.help << "\n";
  }
  return os.str();
}

nlohmann::json TrainOptions::to_json() const {
  nlohmann::json j;
  j["model"] = model_dir;
  j["from_scratch"] = from_scratch;
  j["method"] = method;
  j["data"] = data;
  j["eval_data"] = eval_data;
  j["eval_fraction"] = eval_fraction;
  j["epochs"] = epochs;
  j["max_steps"] = max_steps;
  j["batch_size"] = batch_size;
  j["grad_accum"] = grad_accum;
  j["max_length"] = max_length;
  j["pack"] = pack;
  j["lr"] = lr;
  j["lr_scheduler"] = lr_scheduler;
  j["warmup_steps"] = warmup_steps;
  j["warmup_ratio"] = warmup_ratio;
  j["weight_decay"] = weight_decay;
  j["max_grad_norm"] = max_grad_norm;
  j["seed"] = seed;
  j["dtype"] = dtype;
  j["device"] = device;
  j["adapter"] = adapter.to_json();
  return j;
}

}  // namespace peft
