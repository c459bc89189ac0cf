// The optimizer-step loop of `peft train`: data -> forward/backward over micro-batches -> clip ->
// AdamW -> update_and_allocate -> zero_grad, with logging, evaluation, checkpoints and exact resume.
#include "peft/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "peft/chat_format.h"
#include "peft/checkpoint.h"
#include "peft/compat.h"
#include "peft/file_io.h"
#include "peft/rank_table.h"
#include "peft/report.h"
#include "peft/text_encoder.h"
#include "peft/tokenizer_config.h"

namespace peft {
namespace fs = std::filesystem;

std::atomic<bool> Trainer::interrupt_requested{false};

double lr_at(const std::string& scheduler, double peak, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  if (scheduler == "constant") return peak;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (scheduler == "cosine") return peak * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return peak * std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

namespace {

std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  std::ostringstream os;
  if (t >= 3600) os << t / 3600 << "h" << std::setw(2) << std::setfill('0') << (t % 3600) / 60 << "m";
  else if (t >= 60) os << t / 60 << "m" << std::setw(2) << std::setfill('0') << t % 60 << "s";
  else os << t << "s";
  return os.str();
}

// Keeps what a run had written up to its checkpoint after `step` optimizer steps (for a resumed run),
// atomically: records of the 0-based steps below `step`, and evaluations made after `step` steps or fewer.
void truncate_jsonl(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      const int64_t s = j.value("step", int64_t{0});
      if (s < step || (s == step && j.value("type", "") == "eval")) kept << line << "\n";
    } catch (...) {
      // a line cut by a crash: dropped
    }
  }
  in.close();
  write_text_atomic(path.string(), kept.str());
}

void append_jsonl(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::app);
  out << j.dump() << "\n";
}

}  // namespace

Trainer::Trainer(TrainOptions options) : opt_(std::move(options)) {
  if (opt_.model_dir.empty()) throw std::invalid_argument("--model is required (a Hugging Face model directory)");
  if (opt_.data.empty()) throw std::invalid_argument("--data is required (a JSONL file)");
  LoadOptions lo = load_options(opt_.dtype, opt_.device);
  device_ = lo.device;
  at::manual_seed(opt_.seed);
  if (opt_.method == "full" && lo.dtype != at::kFloat)
    throw std::invalid_argument("--method full trains every weight in float32; drop --dtype " + opt_.dtype);
  if (opt_.from_scratch) {
    if (opt_.method != "full") throw std::invalid_argument("--from-scratch needs --method full (an adapter on random weights learns nothing useful)");
    model_ = build_model(ModelConfig::from_file((fs::path(opt_.model_dir) / "config.json").string()), lo);
  } else {
    model_ = load_model(opt_.model_dir, lo);
  }
  load_data();
  plan();
  if (opt_.method == "full") {
    std::vector<std::pair<std::string, at::Tensor>> all;
    for (auto& p : model_->named_parameters(true)) all.emplace_back(p.key(), p.value());
    full_params_ = std::make_unique<ParamBuffer>();
    full_params_->assign(all);
  } else {
    AdapterConfig ac = opt_.adapter;
    ac.task_type = model_->config().is_causal_lm ? "CAUSAL_LM" : "SEQ_CLS";
    ac.base_model_name_or_path = opt_.model_dir;
    if (ac.peft_type == PeftType::AdaLora) ac.total_step = total_steps_;
    peft_ = std::make_unique<PeftModel>(model_, ac);
  }
  AdamW::Options ao;
  ao.lr = opt_.lr;
  ao.beta1 = opt_.adam_beta1;
  ao.beta2 = opt_.adam_beta2;
  ao.eps = opt_.adam_eps;
  ao.weight_decay = opt_.weight_decay;
  optimizer_ = std::make_unique<AdamW>(peft_ ? peft_->params() : *full_params_, ao);
  if (!opt_.resume.empty()) {
    std::string path = opt_.resume;
    if (path == "latest") {
      auto l = latest_checkpoint((fs::path(opt_.output_dir) / "checkpoints").string());
      if (!l) throw std::invalid_argument("--resume latest: no checkpoint in " + opt_.output_dir + "/checkpoints");
      path = *l;
    }
    restore(path);
  }
}

Trainer::~Trainer() = default;

void Trainer::say(const std::string& s) {
  if (opt_.quiet) return;
  if (print) print(s);
  else std::cout << s << std::flush;
}

void Trainer::load_data() {
  fs::path dir(opt_.model_dir);
  if (!fs::exists(dir / "tokenizer.json"))
    throw std::invalid_argument(opt_.model_dir + ": no tokenizer.json (needed to read the training data)");
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_file((dir / "tokenizer.json").string()));
  TokenizerConfig tc;
  if (fs::exists(dir / "tokenizer_config.json")) tc = read_tokenizer_config((dir / "tokenizer_config.json").string());
  TextEncoder enc = make_text_encoder(*tokenizer_, tc);
  DatasetOptions dopt;
  dopt.max_length = opt_.max_length;
  if (!opt_.chat_format.empty() || !tc.chat_template.empty()) {
    try {
      dopt.chat_format = ChatFormat::from_config(tc, opt_.chat_format);
    } catch (const std::exception& e) {
      if (!opt_.chat_format.empty()) throw;
      // An unrecognised template only matters for {"messages"} data, where the dataset says so.
    }
  }
  auto data = Dataset::from_jsonl(opt_.data, enc, dopt);
  if (!opt_.eval_data.empty()) {
    train_data_ = std::make_unique<Dataset>(std::move(data));
    eval_data_ = std::make_unique<Dataset>(Dataset::from_jsonl(opt_.eval_data, enc, dopt));
  } else if (opt_.eval_fraction > 0) {
    auto split = split_train_eval(data, opt_.eval_fraction, opt_.seed);
    train_data_ = std::make_unique<Dataset>(std::move(split.train));
    eval_data_ = std::make_unique<Dataset>(std::move(split.eval));
  } else {
    train_data_ = std::make_unique<Dataset>(std::move(data));
  }
  check_task(*train_data_, model_->config(), opt_.data, opt_.model_dir);
  auto st = train_data_->stats();
  LoaderOptions lopt;
  lopt.batch_size = opt_.batch_size;
  lopt.shuffle = true;
  lopt.seed = opt_.seed;
  lopt.pack_length = opt_.pack ? opt_.max_length : 0;
  loader_ = std::make_unique<DataLoader>(*train_data_, lopt);
  std::ostringstream os;
  os << "data: " << train_data_->size() << " training examples (" << to_string(train_data_->format()) << ", "
     << train_data_->num_tokens() << " tokens)";
  if (eval_data_) os << ", " << eval_data_->size() << " for evaluation";
  if (st.truncated_examples) os << "; " << st.truncated_examples << " cut to --max-length " << opt_.max_length << " (" << st.truncated_tokens << " tokens lost)";
  if (st.dropped_examples) os << "; " << st.dropped_examples << " dropped (nothing left to learn)";
  say(os.str() + "\n");
}

void Trainer::plan() {
  int64_t per_epoch = loader_->steps_per_epoch();
  std::ostringstream os;
  if (opt_.max_steps > 0) {
    total_steps_ = opt_.max_steps;
    os << "total_step " << total_steps_ << " (--max-steps)";
  } else {
    total_steps_ = std::max<int64_t>(1, opt_.epochs * per_epoch / opt_.grad_accum);
    os << "total_step " << total_steps_ << " = " << opt_.epochs << " epoch(s) x " << per_epoch
       << " micro-batches of " << opt_.batch_size << " / grad_accum " << opt_.grad_accum;
  }
  warmup_ = opt_.warmup_steps > 0 ? opt_.warmup_steps
                                  : static_cast<int64_t>(std::ceil(opt_.warmup_ratio * static_cast<double>(total_steps_)));
  say("plan: " + os.str() + " optimizer steps\n");
  if (opt_.method != "adalora") return;
  auto& a = opt_.adapter;
  if (opt_.total_step_set && a.total_step != total_steps_) {
    say("warning: --total_step " + std::to_string(a.total_step) + " differs from the " + std::to_string(total_steps_) +
        " optimizer steps this run makes; using the run's " + std::to_string(total_steps_) + "\n");
  }
  a.total_step = total_steps_;
  std::vector<std::string> defaults;
  if (!opt_.tinit_set) {
    a.tinit = total_steps_ / 10;
    defaults.push_back("tinit");
  }
  if (!opt_.tfinal_set) {
    a.tfinal = total_steps_ / 5;
    defaults.push_back("tfinal");
  }
  if (!opt_.deltaT_set) {
    a.deltaT = std::max<int64_t>(1, total_steps_ / 100);
    defaults.push_back("deltaT");
  }
  try {
    a.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + "\n  (" + os.str() + ")");
  }
  int64_t budgeting = a.total_step - a.tfinal - a.tinit - 1;
  std::ostringstream s;
  s << "AdaLoRA schedule: warm-up steps 0.." << a.tinit << ", budgeting " << a.tinit + 1 << ".." << a.total_step - a.tfinal - 1
    << " (mask every " << a.deltaT << "), final mask at step " << a.total_step - a.tfinal << ", frozen after";
  if (!defaults.empty()) {
    s << "\n  (";
    for (size_t i = 0; i < defaults.size(); ++i) s << (i ? ", " : "") << defaults[i];
    s << " from the defaults: tinit 10%, tfinal 20%, deltaT 1% of total_step; set them to choose)";
  }
  say(s.str() + "\n");
  if (budgeting < a.deltaT) {
    say("warning: deltaT (" + std::to_string(a.deltaT) + ") is longer than the budgeting phase (" +
        std::to_string(std::max<int64_t>(0, budgeting)) + " steps): the budget will hardly be scheduled; lower --deltaT\n");
  }
  if (a.tfinal == 0) {
    say("warning: tfinal is 0: the final mask (at step total_step) never runs, so the last allocation is the last "
        "deltaT mask and nothing freezes it; set --tfinal > 0\n");
  }
}

Batch Trainer::to_batch(const TokenBatch& tb) const { return to_model_batch(tb, device_, opt_.pack); }

EvalResult Trainer::evaluate() {
  if (!eval_data_) return {};
  return peft_ ? peft::evaluate(*peft_, *eval_data_, opt_.batch_size) : peft::evaluate(*model_, *eval_data_, opt_.batch_size);
}

void Trainer::write_checkpoint(int64_t steps_done) {
  Checkpoint c;
  auto& params = peft_ ? peft_->params() : *full_params_;
  c.tensors["params"] = params.values();
  c.tensors["exp_avg"] = optimizer_->exp_avg();
  c.tensors["exp_avg_sq"] = optimizer_->exp_avg_sq();
  c.tensors["rng"] = rng_state();
  if (peft_ && peft_->allocator())
    for (auto& [k, t] : peft_->allocator()->state()) c.tensors["allocator." + k] = t;
  auto pos = loader_->position();
  c.state = {{"step", steps_done},
             {"micro", micro_},
             {"epoch", pos.epoch},
             {"loader_step", pos.step},
             {"optimizer_steps", optimizer_->step_count()},
             {"total_steps", total_steps_},
             {"options", opt_.to_json()}};
  if (peft_) c.state["adapter_config"] = peft_->config().to_json();
  auto dir = save_checkpoint((fs::path(opt_.output_dir) / "checkpoints").string(), steps_done, c, opt_.save_total_limit,
                             [&](const std::string& tmp) {
                               if (peft_) peft_->save((fs::path(tmp) / "adapter").string());
                             });
  say("checkpoint: " + dir + "\n");
}

void Trainer::restore(const std::string& path) {
  auto c = load_checkpoint(path);
  auto saved = c.state.at("options");
  auto now = opt_.to_json();
  for (auto* key : {"model", "method", "data", "batch_size", "grad_accum", "max_length", "seed", "pack", "epochs", "max_steps"}) {
    if (saved.value(key, nlohmann::json()) != now.value(key, nlohmann::json())) {
      throw std::invalid_argument(path + ": the checkpoint was made with " + key + " = " + saved.value(key, nlohmann::json()).dump() +
                                  ", this run has " + now.value(key, nlohmann::json()).dump() + "; resume with the same settings");
    }
  }
  auto& params = peft_ ? peft_->params() : *full_params_;
  auto t = c.tensors.at("params");
  if (t.numel() != params.numel()) throw std::invalid_argument(path + ": the checkpoint's parameters do not match this model/adapter");
  at::NoGradGuard no_grad;
  params.values().copy_(t);
  optimizer_->exp_avg().copy_(c.tensors.at("exp_avg"));
  optimizer_->exp_avg_sq().copy_(c.tensors.at("exp_avg_sq"));
  optimizer_->set_step_count(c.state.at("optimizer_steps").get<int64_t>());
  if (peft_ && peft_->allocator()) {
    std::map<std::string, at::Tensor> st;
    for (auto& [k, v] : c.tensors)
      if (k.rfind("allocator.", 0) == 0) st[k.substr(10)] = v;
    peft_->allocator()->load_state(st);
    peft_->config().rank_pattern = AdapterConfig::from_json(c.state.at("adapter_config")).rank_pattern;
  }
  set_rng_state(c.tensors.at("rng"));
  start_step_ = c.state.at("step").get<int64_t>();
  micro_ = c.state.at("micro").get<int64_t>();
  loader_->set_position({c.state.at("epoch").get<int64_t>(), c.state.at("loader_step").get<int64_t>()});
  if (peft_ && peft_->allocator()) last_phase_ = schedule_phase(peft_->config(), std::max<int64_t>(0, start_step_ - 1));
  say("resumed from " + path + " at step " + std::to_string(start_step_) + "/" + std::to_string(total_steps_) + "\n");
}

void Trainer::log_allocation(const AllocationEvent& ev, bool show_table) {
  auto* alloc = peft_->allocator();
  auto live = alloc->live_ranks();
  const auto& cfg = peft_->config();
  nlohmann::json rec = {{"step", ev.step},       {"phase", phase_name(ev.phase)}, {"budget", ev.budget},
                        {"final_mask", ev.final_mask}, {"init_r", cfg.init_r},   {"target_r", cfg.target_r}};
  nlohmann::json mods = nlohmann::json::array();
  std::vector<std::pair<std::string, int64_t>> cells;
  int64_t allocated_total = 0;
  for (size_t i = 0; i < peft_->modules().size(); ++i) {
    const auto& path = peft_->modules()[i].path;
    auto it = cfg.rank_pattern.find(path + ".lora_E");
    int64_t allocated = 0;
    std::vector<bool> pattern;
    if (it != cfg.rank_pattern.end()) {
      pattern = it->second;
      for (bool b : pattern) allocated += b;
    }
    allocated_total += allocated;
    auto loc = parse_module_path(path);
    mods.push_back({{"path", path}, {"layer", loc.layer}, {"type", loc.type}, {"init_r", cfg.init_r},
                    {"allocated", allocated}, {"live", live[i]}, {"pattern", pattern}});
    cells.emplace_back(path, allocated);
  }
  rec["modules"] = mods;
  append_jsonl(fs::path(opt_.output_dir) / "ranks.jsonl", rec);
  if (!show_table) return;
  std::ostringstream os;
  os << "allocation at step " << ev.step << (ev.final_mask ? " (final mask, frozen from here)" : "") << ": budget "
     << allocated_total << " of " << alloc->init_budget() << " (scheduled " << ev.budget << ")\n";
  os << render_rank_table_compact(build_rank_table(cells, cfg.init_r, cfg.target_r), 100);
  say(os.str());
}

TrainResult Trainer::train() {
  fs::create_directories(opt_.output_dir);
  fs::path out(opt_.output_dir);
  fs::path metrics = out / "metrics.jsonl", ranks = out / "ranks.jsonl";
  if (start_step_ == 0) {
    fs::remove(metrics);
    fs::remove(ranks);
  } else {
    truncate_jsonl(metrics, start_step_);
    truncate_jsonl(ranks, start_step_);
  }
  TrainResult res;
  res.total_steps = total_steps_;
  res.output_dir = opt_.output_dir;
  if (peft_) {
    std::ostringstream os;
    os << "model: " << model_->config().architecture << ", " << peft_->modules().size() << " adapted modules ("
       << peft_->config().method() << "), trainable " << peft_->trainable_parameters() << " of "
       << peft_->total_parameters() << " parameters\n";
    say(os.str());
  }
  if (eval_data_ && start_step_ == 0) {
    res.eval_before = evaluate();
    nlohmann::json e = {{"type", "eval"}, {"step", 0}, {"eval_loss", res.eval_before->loss}, {"eval_tokens", res.eval_before->tokens}};
    if (res.eval_before->accuracy >= 0) e["eval_accuracy"] = res.eval_before->accuracy;
    else e["eval_ppl"] = res.eval_before->perplexity;
    append_jsonl(metrics, e);
    say("eval before training: loss " + fmt(res.eval_before->loss) +
        (res.eval_before->accuracy >= 0 ? ", accuracy " + fmt(res.eval_before->accuracy)
                                         : ", perplexity " + fmt(res.eval_before->perplexity)) + "\n");
  }
  interrupt_requested.store(false);
  if (peft_) peft_->train(true);
  else model_->train(true);
  auto& params = peft_ ? peft_->params() : *full_params_;
  // Print the allocation table about eight times a run (and at the final mask); ranks.jsonl has all.
  int64_t table_every = 1;
  if (peft_ && peft_->allocator()) {
    const auto& c = peft_->config();
    int64_t masks = std::max<int64_t>(1, (c.total_step - c.tfinal - c.tinit) / c.deltaT);
    table_every = std::max<int64_t>(1, masks / 8);
  }
  int64_t allocations = 0;
  bool ada = peft_ && peft_->allocator();
  auto t0 = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  auto last_log = t0;
  int64_t last_good_checkpoint = -1;
  for (int64_t step = start_step_; step < total_steps_; ++step) {
    double lr = lr_at(opt_.lr_scheduler, opt_.lr, step, warmup_, total_steps_);
    optimizer_->set_lr(lr);
    at::Tensor loss_acc, task_acc;
    int64_t step_tokens = 0;
    for (int64_t k = 0; k < opt_.grad_accum; ++k, ++micro_) {
      auto tb = loader_->next();
      for (auto m : tb.attention_mask) step_tokens += m;  // counted on the host: no device sync
      auto b = to_batch(tb);
      auto outp = peft_ ? peft_->forward(b) : model_->forward(b);
      auto scaled = outp.loss / static_cast<double>(opt_.grad_accum);
      scaled.backward();
      auto l = scaled.detach();
      loss_acc = loss_acc.defined() ? loss_acc + l : l;
      if (outp.task_loss.defined()) {
        auto tl = outp.task_loss.detach() / static_cast<double>(opt_.grad_accum);
        task_acc = task_acc.defined() ? task_acc + tl : tl;
      }
    }
    at::Tensor grad_norm;
    {
      at::NoGradGuard ng;
      grad_norm = params.grads().norm();
      if (opt_.max_grad_norm > 0) params.grads().mul_((opt_.max_grad_norm / (grad_norm + 1e-6)).clamp_max(1.0));
    }
    optimizer_->step();
    AllocationEvent ev;
    if (ada) ev = peft_->update_and_allocate(step);
    params.zero_grad();
    tokens_since += step_tokens;

    bool last = step + 1 == total_steps_;
    bool log_now = (step + 1) % opt_.logging_steps == 0 || last || ev.masked;
    if (log_now) {
      double loss = loss_acc.item<double>();
      double gn = grad_norm.item<double>();
      res.last_loss = loss;
      if (!std::isfinite(loss) || !std::isfinite(gn)) {
        std::ostringstream os;
        os << "error: the loss is " << loss << " (gradient norm " << gn << ") at step " << step
           << "; stopping. Nothing of this step was saved";
        auto l = latest_checkpoint((out / "checkpoints").string());
        os << (l ? "; the last good checkpoint is " + *l : "; no checkpoint was written before it")
           << ". Lower --lr (now " << opt_.lr << ") or keep --max-grad-norm on.\n";
        if (print) print(os.str());
        else std::cerr << os.str();
        res.stopped_on_nan = true;
        res.steps_done = step;
        return res;
      }
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - last_log).count();
      double elapsed = std::chrono::duration<double>(now - t0).count();
      double tps = dt > 0 ? tokens_since / dt : 0;
      tokens_since = 0;
      last_log = now;
      double eta = elapsed / static_cast<double>(step + 1 - start_step_) * static_cast<double>(total_steps_ - step - 1);
      nlohmann::json m = {{"type", "train"}, {"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gn},
                          {"tokens", step_tokens}, {"tokens_per_s", tps}, {"elapsed_s", elapsed},
                          {"epoch", static_cast<double>(micro_) / static_cast<double>(loader_->steps_per_epoch())}};
      std::ostringstream os;
      os << "step " << step + 1 << "/" << total_steps_;
      if (task_acc.defined() && ada) {  // the model's loss, and AdaLoRA's orthogonal penalty beside it
        double task = task_acc.item<double>();
        m["task_loss"] = task;
        os << "  loss " << fmt(task) << " (+orth " << fmt(loss - task, 3) << ")";
      } else {
        os << "  loss " << fmt(loss);
      }
      os << "  lr " << fmt(lr, 3) << "  " << static_cast<int64_t>(tps) << " tok/s  ETA " << duration(eta);
      if (ada) {
        auto live = peft_->allocator()->live_ranks();
        int64_t live_total = 0;
        for (auto v : live) live_total += v;
        m["phase"] = phase_name(ev.phase);
        m["budget"] = ev.budget;
        m["live_rank"] = live_total;
        os << "  budget " << ev.budget << " (live " << live_total << ")  [" << phase_name(ev.phase) << "]";
      }
      append_jsonl(metrics, m);
      say(os.str() + "\n");
    }
    if (ada) {
      auto phase = ev.phase;
      if (phase != last_phase_) {
        const auto& c = peft_->config();
        if (phase == Phase::Budgeting) {
          say("-- budgeting begins: the budget shrinks from " + std::to_string(peft_->allocator()->init_budget()) + " to " +
              std::to_string(c.target_r * peft_->allocator()->num_modules()) + " by step " +
              std::to_string(c.total_step - c.tfinal) + ", a new mask every " + std::to_string(c.deltaT) + " steps\n");
        } else if (phase == Phase::Final) {
          say("-- final phase: the rank pattern is fixed; masked singular values stay at zero from now on\n");
        }
        last_phase_ = phase;
      }
      if (ev.masked) {
        log_allocation(ev, ev.final_mask || allocations++ % table_every == 0);
        if (!explained_live_rank_ && !ev.final_mask) {
          explained_live_rank_ = true;
          say("   note: between masks the optimizer's momentum moves masked singular values away from zero, so the\n"
              "   live rank (non-zero lora_E) returns to init_r one step after each mask; the allocated pattern is what\n"
              "   counts, and it is frozen from the final mask on.\n");
        }
      }
    }
    if (opt_.eval_steps > 0 && (step + 1) % opt_.eval_steps == 0 && !last && eval_data_) {
      auto e = evaluate();
      nlohmann::json j = {{"type", "eval"}, {"step", step + 1}, {"eval_loss", e.loss}, {"eval_tokens", e.tokens}};
      if (e.accuracy >= 0) j["eval_accuracy"] = e.accuracy;
      else j["eval_ppl"] = e.perplexity;
      append_jsonl(metrics, j);
      say("eval at step " + std::to_string(step + 1) + ": loss " + fmt(e.loss) + "\n");
    }
    if (after_step) after_step(step);
    bool interrupted = interrupt_requested.load();
    if ((opt_.save_steps > 0 && (step + 1) % opt_.save_steps == 0 && !last) || interrupted) {
      if (!params.values().isfinite().all().item<bool>()) {
        res.stopped_on_nan = true;
        res.steps_done = step + 1;
        say("error: parameters are no longer finite at step " + std::to_string(step) + "; not checkpointing; stopping\n");
        return res;
      }
      write_checkpoint(step + 1);
      last_good_checkpoint = step + 1;
    }
    if (interrupted) {
      say("interrupted: checkpoint written; continue with --resume latest\n");
      res.interrupted = true;
      res.steps_done = step + 1;
      return res;
    }
  }
  (void)last_good_checkpoint;
  res.steps_done = total_steps_;
  if (eval_data_) {
    res.eval_after = evaluate();
    nlohmann::json e = {{"type", "eval"}, {"step", total_steps_}, {"eval_loss", res.eval_after->loss}, {"eval_tokens", res.eval_after->tokens}};
    if (res.eval_after->accuracy >= 0) e["eval_accuracy"] = res.eval_after->accuracy;
    else e["eval_ppl"] = res.eval_after->perplexity;
    append_jsonl(metrics, e);
    say("eval after training: loss " + fmt(res.eval_after->loss) +
        (res.eval_after->accuracy >= 0 ? ", accuracy " + fmt(res.eval_after->accuracy)
                                        : ", perplexity " + fmt(res.eval_after->perplexity)) + "\n");
  }
  write_checkpoint(total_steps_);
  save_outputs();
  return res;
}

void Trainer::save_outputs() {
  fs::path out(opt_.output_dir);
  if (peft_) {
    peft_->save((out / "adapter").string());
    say("adapter: " + (out / "adapter").string() + " (PEFT format)\n");
  } else {
    fs::path m = out / "model";
    save_model(*model_, m.string());
    for (auto* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
      fs::path src = fs::path(opt_.model_dir) / f;
      if (fs::exists(src)) fs::copy_file(src, m / f, fs::copy_options::overwrite_existing);
    }
    say("model: " + m.string() + " (Hugging Face format)\n");
  }
  if (opt_.report) {
    write_report(opt_.output_dir);
    say("report: " + (out / "report.html").string() + "\n");
  }
}

}  // namespace peft
