// The optimizer-step loop of `peft train`: data -> forward/backward over micro-batches -> (all-reduce
// across processes) -> clip -> AdamW -> update_and_allocate -> zero_grad, then log, evaluate and
// checkpoint; exact resume.
#include "peft/train/trainer.h"
#include "peft/core/gemm.h"
#include "peft/core/runtime.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "peft/formats/checkpoint.h"
#include "peft/observability/report.h"
#include "peft/models/model_family.h"

namespace peft {
namespace fs = std::filesystem;

std::atomic<bool> Trainer::interrupt_requested{false};

namespace {

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? NAN : v[v.size() / 2];
}

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// FNV-1a, for checksums that every process computes alike.
uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}
constexpr uint64_t kFnvBasis = 14695981039346656037ULL;

// Whether a dataset has anything evaluate() scores: a classification example, or a label after the
// first token of an example.
bool has_targets(const Dataset& data) {
  for (const auto& ex : data.examples()) {
    if (ex.class_label) return true;
    for (size_t t = 1; t < ex.labels.size(); ++t)
      if (ex.labels[t] != kIgnoreIndex) return true;
  }
  return false;
}

}  // namespace

Trainer::Trainer(TrainOptions options, std::shared_ptr<World> world)
    : opt_(std::move(options)), world_(world ? std::move(world) : std::make_shared<World>()) {
  world_->all_succeed([this] { setup(); }, "preparing the run");
  if (world_->distributed()) {
    // The same adapter, optimizer step and data position everywhere (bits of the values, summed as integers).
    uint64_t h = kFnvBasis;
    const int64_t state[] = {start_step_, micro_, loader_->position().epoch, loader_->position().step,
                             optimizer_->step_count(),
                             trainable().values().view(at::kInt).to(at::kLong).sum().item<int64_t>()};
    h = fnv1a(h, state, sizeof state);
    world_->check_same(h, "the starting state (the adapter's initial values, the step, the data position)");
  }
}

void Trainer::setup() {
  if (world_->distributed()) {  // every process with rank 0's options, or a clear refusal
    const auto mine = opt_.to_json();
    const auto main = nlohmann::json::parse(world_->text_of_main("options", mine.dump()));
    for (auto it = main.begin(); it != main.end(); ++it) {
      const auto here = mine.value(it.key(), nlohmann::json());
      if (here != it.value())
        throw std::invalid_argument("this process was started with --" + it.key() + " " + here.dump() + ", rank 0 with " +
                                    it.value().dump() + ": start every process with the same options");
    }
    if (opt_.device == "cuda") opt_.device = "cuda:" + std::to_string(world_->local_rank());
  }
  if (opt_.model_dir.empty()) throw std::invalid_argument("--model is required (a Hugging Face model directory)");
  if (opt_.data.empty()) throw std::invalid_argument("--data is required (a JSONL file)");
  LoadOptions lo = load_options(opt_.dtype, opt_.device);
  device_ = lo.device;
  if (opt_.method == "full" && lo.dtype != at::kFloat)
    throw std::invalid_argument("--method full trains every weight in float32; drop --dtype " + opt_.dtype);
  if (lo.dtype == at::kBFloat16 && lo.device.is_cpu()) {
    const std::string note = bf16_cpu_note();
    if (!note.empty()) say(note + "\n");
  }
  if (opt_.from_scratch && opt_.method != "full")
    throw std::invalid_argument("--from-scratch needs --method full (an adapter on random weights learns nothing useful)");
  if (world_->is_main()) {  // one process owns the output directory
    run_dir_ = std::make_unique<RunDir>(opt_.output_dir, !opt_.resume.empty(), opt_.overwrite_output_dir,
                                        [this](const std::string& s) { say(s); });
    log_ = std::make_unique<RunLog>(opt_.output_dir);
  }
  at::manual_seed(opt_.seed);
  model_ = opt_.from_scratch ? build_model(model_config_of(opt_.model_dir), lo)
                             : load_model(opt_.model_dir, lo);
  model_->gradient_checkpointing = opt_.gradient_checkpointing;
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
    peft_ = std::make_unique<PeftModel>(model_, ac);
    peft_->forwards_per_step = opt_.grad_accum;
    if (adalora()) {  // PEFT allows it, but a rank above min(in, out) has nothing to keep: refuse in training
      for (auto& m : peft_->modules()) {
        const int64_t in = m.linear->in_features(), out = m.linear->out_features(), smaller = std::min(in, out);
        if (ac.init_r > smaller) {
          throw std::invalid_argument("init_r " + std::to_string(ac.init_r) + " is larger than the smaller dimension of " +
                                      m.path + " (" + std::to_string(in) + " in, " + std::to_string(out) +
                                      " out): use --init_r " + std::to_string(smaller) +
                                      " or less, or leave the module out of --target_modules");
        }
      }
    }
  }
  AdamW::Options ao;
  ao.lr = opt_.lr;
  ao.beta1 = opt_.adam_beta1;
  ao.beta2 = opt_.adam_beta2;
  ao.eps = opt_.adam_eps;
  ao.weight_decay = opt_.weight_decay;
  optimizer_ = std::make_unique<AdamW>(trainable(), ao);
  // Dropout differs between processes as between micro-batches; rank 0 keeps the stream of one process.
  if (world_->rank() > 0) at::manual_seed(opt_.seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(world_->rank()));
  if (!opt_.resume.empty()) {
    std::string path = opt_.resume;
    if (path == "latest") {
      auto l = latest_checkpoint((fs::path(opt_.output_dir) / "checkpoints").string());
      if (!l) throw std::invalid_argument("--resume latest: no checkpoint in " + opt_.output_dir + "/checkpoints");
      path = *l;
    }
    restore(path);
  }
  progress_ = std::make_unique<Progress>([this](const std::string& s) { say(s); }, total_steps_, start_step_);
}

Trainer::~Trainer() = default;

void Trainer::say(const std::string& s) {
  if (opt_.quiet || !world_->is_main()) return;
  if (print) print(s);
  else std::cout << s << std::flush;
}

void Trainer::load_data() {
  text_ = std::make_unique<ModelTokenizer>(ModelTokenizer::load(opt_.model_dir));
  text_->check_fits(model_->config().vocab_size);
  DatasetOptions dopt;
  dopt.max_length = opt_.max_length;
  dopt.chat_format = text_->optional_chat_format(opt_.chat_format);
  auto data = Dataset::from_jsonl(opt_.data, text_->encoder(), dopt);
  if (!opt_.eval_data.empty()) {
    train_data_ = std::make_unique<Dataset>(std::move(data));
    eval_data_ = std::make_unique<Dataset>(Dataset::from_jsonl(opt_.eval_data, text_->encoder(), dopt));
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
  const int64_t procs = world_->size();
  const int64_t per_step = opt_.grad_accum * procs;  // micro-batches of the global batch
  std::ostringstream os;
  if (opt_.max_steps > 0) {
    total_steps_ = opt_.max_steps;
    os << "total_step " << total_steps_ << " (--max-steps)";
  } else {
    // Whole epochs: every micro-batch of them, grouped by grad_accum; a fraction rounds up, as transformers does.
    const double exact = opt_.epochs * static_cast<double>(per_epoch) / static_cast<double>(per_step);
    total_steps_ = std::floor(opt_.epochs) == opt_.epochs
                       ? static_cast<int64_t>(opt_.epochs) * per_epoch / per_step
                       : static_cast<int64_t>(std::ceil(exact));
    total_steps_ = std::max<int64_t>(1, total_steps_);
    os << "total_step " << total_steps_ << " = " << opt_.epochs << " epoch(s) x " << per_epoch
       << " micro-batches of " << opt_.batch_size << " / ";
    if (procs > 1) os << "(grad_accum " << opt_.grad_accum << " x " << procs << " processes)";
    else os << "grad_accum " << opt_.grad_accum;
  }
  warmup_ = opt_.warmup_steps > 0 ? opt_.warmup_steps
                                  : static_cast<int64_t>(std::ceil(opt_.warmup_ratio * static_cast<double>(total_steps_)));
  say("plan: " + os.str() + " optimizer steps\n");
  if (procs > 1) {
    say("data parallel: " + std::to_string(procs) + " processes, global batch " + std::to_string(opt_.batch_size * per_step) +
        " = --batch-size " + std::to_string(opt_.batch_size) + " per process x " + std::to_string(procs) +
        " processes x --grad-accum " + std::to_string(opt_.grad_accum) +
        "; total_step and the schedules count global batches\n");
  }
  if (opt_.method != "adalora") return;
  auto& a = opt_.adapter;
  if (opt_.total_step_set && a.total_step != total_steps_) {
    say("warning: --total_step " + std::to_string(a.total_step) + " differs from the " + std::to_string(total_steps_) +
        " optimizer steps this run makes; using the run's " + std::to_string(total_steps_) + "\n");
  }
  a.total_step = total_steps_;
  auto defaulted = apply_schedule_defaults(a, opt_.tinit_set, opt_.tfinal_set, opt_.deltaT_set);
  try {
    a.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + "\n  (" + os.str() + ")");
  }
  say(describe_schedule(a, defaulted) + "\n");
  for (auto& w : schedule_warnings(a)) say("warning: " + w + "\n");
}

EvalResult Trainer::evaluate() {
  if (!eval_data_) return {};
  try {
    const int64_t batch = opt_.eval_batch_size > 0 ? opt_.eval_batch_size : opt_.batch_size;
    auto run = [&](const Dataset& d) { return peft_ ? peft::evaluate(*peft_, d, batch) : peft::evaluate(*model_, d, batch); };
    if (!world_->distributed()) return run(*eval_data_);
    // Every size-th batch here, the sums of all processes then: the batches and their mean of
    // one process, whatever the number of processes.
    std::vector<size_t> mine;
    const auto n = static_cast<int64_t>(eval_data_->size());
    for (int64_t b = world_->rank(); b * batch < n; b += world_->size())
      for (int64_t i = b * batch; i < std::min(n, (b + 1) * batch); ++i) mine.push_back(static_cast<size_t>(i));
    const Dataset shard = eval_data_->subset(mine);
    double sums[3] = {0, 0, 0};  // loss x count, correct, count
    if (!mine.empty() && has_targets(shard)) {
      auto r = run(shard);
      sums[0] = r.loss * static_cast<double>(r.tokens);
      sums[1] = r.accuracy >= 0 ? std::round(r.accuracy * static_cast<double>(r.tokens)) : 0;
      sums[2] = static_cast<double>(r.tokens);
    }
    auto t = at::tensor(std::vector<double>(sums, sums + 3), at::kDouble);
    world_->all_reduce_sum(t, "the evaluation's sums");
    const double loss_sum = t[0].item<double>(), correct = t[1].item<double>(), count = t[2].item<double>();
    if (count == 0) return run(*eval_data_);  // nothing to score anywhere: its own error, the same everywhere
    EvalResult e;
    e.tokens = static_cast<int64_t>(count);
    e.loss = loss_sum / count;
    if (model_->config().is_causal_lm) e.perplexity = std::exp(e.loss);
    else e.accuracy = correct / count;
    return e;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument((opt_.eval_data.empty() ? opt_.data + " (held-out part)" : opt_.eval_data) + ": " + e.what());
  }
}

EvalResult Trainer::evaluate_and_log(int64_t step, const std::string& when) {
  auto e = evaluate();
  if (log_) log_->eval(step, e);
  progress_->eval(when, e);
  return e;
}

// Forward and backward over the micro-batches of one optimizer step; the gradients accumulate.
Trainer::StepLoss Trainer::forward_backward() {
  StepLoss s;
  // Each micro-batch's share of the global batch's mean; process r reads micro-batch r of every
  // `size` in the order of one process.
  const int64_t procs = world_->size();
  const double scale = 1.0 / static_cast<double>(opt_.grad_accum * procs);
  for (int64_t k = 0; k < opt_.grad_accum; ++k, micro_ += procs) {
    auto tb = loader_->peek(world_->rank());
    loader_->advance(procs);
    for (auto m : tb.attention_mask) s.tokens += m;  // counted on the host: no device sync
    auto out = peft_ ? peft_->forward(to_model_batch(tb, device_, opt_.pack)) : model_->forward(to_model_batch(tb, device_, opt_.pack));
    auto scaled = out.loss * scale;
    scaled.backward();
    s.total = s.total.defined() ? s.total + scaled.detach() : scaled.detach();
    if (out.task_loss.defined()) {
      auto task = out.task_loss.detach() * scale;
      s.task = s.task.defined() ? s.task + task : task;
    }
  }
  return s;
}

// The gradients summed over the processes (each micro-batch already weighted by its share), then the
// step's losses, tokens and stop requests in one small all-reduce, so every process logs, stops
// and checkpoints alike.
void Trainer::reduce_step(StepLoss& loss, int64_t done) {
  world_->all_reduce_sum(trainable().grads(), "the gradient all-reduce of step " + std::to_string(done));
  const auto dev = loss.total.device();
  auto task = loss.task.defined() ? loss.task : at::zeros({}, loss.total.options());
  auto host = at::tensor(std::vector<double>{static_cast<double>(loss.tokens), interrupt_requested.load() ? 1.0 : 0.0},
                         at::kDouble);
  auto stats = at::cat({loss.total.detach().to(at::kDouble).reshape({1}), task.detach().to(at::kDouble).reshape({1}),
                        host.to(dev)});
  world_->all_reduce_sum(stats, "the losses of step " + std::to_string(done));
  loss.total = stats[0];
  if (loss.task.defined()) loss.task = stats[1];
  auto counts = stats.slice(0, 2).cpu();  // one host sync per step
  loss.tokens = static_cast<int64_t>(counts[0].item<double>());
  loss.interrupt = counts[1].item<double>() > 0;
}

// Every process computed the mask from the same reduced gradients; a checksum of rank_pattern proves it.
void Trainer::check_same_mask(int64_t done) {
  uint64_t h = kFnvBasis;
  for (const auto& [name, kept] : peft_->config().rank_pattern) {
    h = fnv1a(h, name.data(), name.size());
    for (bool b : kept) {
      const unsigned char c = b ? 1 : 0;
      h = fnv1a(h, &c, 1);
    }
  }
  world_->check_same(h, "the AdaLoRA mask after step " + std::to_string(done) + " (a checksum of rank_pattern)");
}

at::Tensor Trainer::clip_gradients() {
  at::NoGradGuard no_grad;
  auto& params = trainable();
  auto norm = params.grads().norm();
  if (opt_.max_grad_norm > 0) params.grads().mul_((opt_.max_grad_norm / (norm + 1e-6)).clamp_max(1.0));
  return norm;
}

void Trainer::report_finished(TrainResult& res) {
  say("the run in " + opt_.output_dir + " is finished (" + std::to_string(start_step_) + " of " +
      std::to_string(total_steps_) + " steps): nothing to do; its " + (peft_ ? "adapter" : "model") + " is in " +
      (fs::path(opt_.output_dir) / (peft_ ? "adapter" : "model")).string() + "\n");
  res.steps_done = start_step_;
  res.already_finished = true;
}

void Trainer::begin(TrainResult& res) {
  if (log_) log_->start(start_step_);
  if (peft_) {
    say("model: " + model_->config().architecture + ", " + std::to_string(peft_->modules().size()) + " adapted modules (" +
        peft_->config().method() + "), trainable " + std::to_string(peft_->trainable_parameters()) + " of " +
        std::to_string(peft_->total_parameters()) + " parameters\n");
  }
  if (device_.is_cpu()) {
    const int threads = at::get_num_threads();
    say("cpu: " + std::to_string(threads) + (threads == 1 ? " thread" : " threads") + "; float32 products on " +
        gemm_backend_description() + "; PEFT_GEMM=openblas or =libtorch chooses\n");
  }
  if (eval_data_ && start_step_ == 0) res.eval_before = evaluate_and_log(0, "before training");
  interrupt_requested.store(false);
  if (peft_) peft_->train(true);
  else model_->train(true);
}

TrainResult Trainer::train() {
  TrainResult res;
  res.total_steps = total_steps_;
  res.output_dir = opt_.output_dir;
  if (start_step_ >= total_steps_) {
    report_finished(res);
    return res;
  }
  begin(res);
  const auto t0 = std::chrono::steady_clock::now();
  last_log_ = t0;
  for (int64_t step = start_step_; step < total_steps_; ++step) {
    const int64_t done = step + 1;  // steps are counted from 1 in every output
    const bool last = done == total_steps_;
    // 1. one optimizer step: gradients of the micro-batches, clip, AdamW, AdaLoRA's allocator
    const double lr = lr_at(opt_.lr_scheduler, opt_.lr, step, warmup_, total_steps_);
    optimizer_->set_lr(lr);
    auto loss = forward_backward();
    if (world_->distributed()) reduce_step(loss, done);
    tokens_since_log_ += loss.tokens;
    auto grad_norm = clip_gradients();
    optimizer_->step();
    AllocationEvent ev;
    if (adalora()) ev = peft_->update_and_allocate(step);
    if (ev.masked && world_->distributed()) check_same_mask(done);
    trainable().zero_grad();

    try {
      // 2. the record of the step (a host sync: only on logged steps), stop if it is not finite
      if (done % opt_.logging_steps == 0 || last || ev.masked) {
        auto r = step_record(done, loss, grad_norm, ev, lr);
        r.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        res.last_loss = r.loss;
        if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm)) {
          if (world_->is_main()) {  // every process stops here: the loss is the same everywhere
            const std::string m = stop_on_non_finite(r);
            if (print) print(m);
            else std::cerr << m;
          }
          res.stopped_on_nan = true;
          res.steps_done = step;
          return res;
        }
        if (log_) log_->step(r);
        progress_->step(r);
        watch_divergence(r);
      }
      if (adalora()) {
        if (ev.masked && log_) log_->allocation(allocation_record(*peft_, ev, done));
        progress_->allocation(*peft_, ev, done);
      }
      // 3. evaluation, checkpoint, interruption
      if (opt_.eval_steps > 0 && done % opt_.eval_steps == 0 && !last && eval_data_)
        evaluate_and_log(done, "at step " + std::to_string(done));
    } catch (const RunWriteError& e) {
      if (world_->distributed())  // a checkpoint needs the others, who stop when this process does
        throw RunWriteError(std::string(e.what()) + "; stopped at step " + std::to_string(done) +
                            ": make the file writable, then continue from the last checkpoint with --resume latest");
      const bool saved = checkpoint_if_finite(done);
      throw RunWriteError(std::string(e.what()) + "; stopped at step " + std::to_string(done) +
                          (saved ? ", checkpoint written: make the file writable, then continue with --resume latest"
                                 : ", no checkpoint could be written"));
    }
    if (after_step) after_step(step);
    const bool interrupted = world_->distributed() ? loss.interrupt : interrupt_requested.load();
    if ((opt_.save_steps > 0 && done % opt_.save_steps == 0 && !last) || interrupted) {
      if (!checkpoint_if_finite(done)) {
        res.stopped_on_nan = true;
        res.steps_done = done;
        return res;
      }
    }
    if (interrupted) {
      say("interrupted: checkpoint written; continue with --resume latest\n");
      res.interrupted = true;
      res.steps_done = done;
      return res;
    }
  }
  // 4. the end: evaluation, the last checkpoint, the adapter (or model) and the report
  res.steps_done = total_steps_;
  if (eval_data_) res.eval_after = evaluate_and_log(total_steps_, "after training");
  write_checkpoint(total_steps_);
  if (world_->is_main()) save_outputs();
  world_->barrier("waiting for rank 0 to save the " + std::string(peft_ ? "adapter" : "model"));
  return res;
}

StepRecord Trainer::step_record(int64_t done, const StepLoss& loss, const at::Tensor& grad_norm, const AllocationEvent& ev,
                                double lr) {
  StepRecord r;
  r.step = done;
  const double total = loss.total.item<double>();
  if (loss.task.defined() && adalora()) {
    r.loss = loss.task.item<double>();
    r.orth_penalty = total - r.loss;
  } else {
    r.loss = total;
  }
  r.lr = lr;
  r.grad_norm = grad_norm.item<double>();
  r.tokens = loss.tokens;
  r.epoch = static_cast<double>(micro_) / static_cast<double>(loader_->steps_per_epoch());
  if (adalora()) {
    r.phase = phase_name(ev.phase);
    r.budget = ev.budget;
    for (auto v : peft_->allocator()->live_ranks()) r.live_rank += v;
  }
  auto now = std::chrono::steady_clock::now();  // tokens/s over the steps since the last record
  double dt = std::chrono::duration<double>(now - last_log_).count();
  r.tokens_per_s = dt > 0 ? static_cast<double>(tokens_since_log_) / dt : 0;
  tokens_since_log_ = 0;
  last_log_ = now;
  return r;
}

// Warns once when the run diverges: the task loss far above its running median, or the orthogonal
// penalty exploding; remembers the last checkpoint written before it began. Until the window holds
// enough steps, and whenever the first step was lower (a run diverging from its first steps fills the
// window with diverged values), the first step's value is the baseline.
void Trainer::watch_divergence(const StepRecord& r) {
  const size_t window = 50, enough = 10;
  auto baseline = [&](const std::vector<double>& recent, double first) {
    return recent.size() >= enough ? std::min(median_of(recent), first) : first;
  };
  const double loss_median = baseline(recent_loss_, first_loss_);
  const double orth_median = baseline(recent_orth_, first_orth_);
  const bool loss_high = !recent_loss_.empty() && r.loss > 3.0 * loss_median + 1.0;
  const bool orth_high = !std::isnan(r.orth_penalty) && !recent_orth_.empty() && r.orth_penalty > 100.0 * orth_median + 10.0;
  if ((loss_high || orth_high) && diverging_since_ < 0) {
    diverging_since_ = r.step;
    checkpoint_before_divergence_ = last_finite_checkpoint_;
    std::ostringstream os;
    os << "warning: training is diverging at step " << r.step << ": ";
    if (loss_high) os << "loss " << number(r.loss) << " against " << number(loss_median) << " (the running median, or the first step if lower)";
    if (loss_high && orth_high) os << ", ";
    if (orth_high) os << "orthogonal penalty " << number(r.orth_penalty) << " against " << number(orth_median);
    os << ". Lower --lr (now " << number(opt_.lr) << ")" << (opt_.max_grad_norm > 0 ? "" : ", turn --max-grad-norm on")
       << (warmup_ == 0 ? ", add --warmup-ratio 0.05" : "") << "; checkpoints from here on may hold diverged weights\n";
    say(os.str());
  }
  if (recent_loss_.empty()) first_loss_ = r.loss;
  if (recent_orth_.empty() && !std::isnan(r.orth_penalty)) first_orth_ = r.orth_penalty;
  recent_loss_.push_back(r.loss);
  if (!std::isnan(r.orth_penalty)) recent_orth_.push_back(r.orth_penalty);
  if (recent_loss_.size() > window) recent_loss_.erase(recent_loss_.begin());
  if (recent_orth_.size() > window) recent_orth_.erase(recent_orth_.begin());
}

std::string Trainer::stop_on_non_finite(const StepRecord& r) const {
  std::ostringstream os;
  os << "error: the loss is " << r.loss << " (gradient norm " << r.grad_norm << ") at step " << r.step
     << "; stopping. Nothing of this step was saved";
  const std::string& good = diverging_since_ >= 0 ? checkpoint_before_divergence_ : last_finite_checkpoint_;
  if (!good.empty()) {
    os << "; the last checkpoint with finite weights and optimizer state"
       << (diverging_since_ >= 0 ? " from before the divergence (step " + std::to_string(diverging_since_) + ")" : "")
       << " is " << good << " (--resume " << good << ")";
  } else {
    os << "; no checkpoint " << (diverging_since_ >= 0 ? "was written before the divergence" : "was written before it");
  }
  os << ". Lower --lr (now " << number(opt_.lr) << ") or keep --max-grad-norm on.\n";
  return os.str();
}

// A checkpoint only of finite state: parameters and both AdamW moments. False (and said) otherwise.
bool Trainer::checkpoint_if_finite(int64_t steps_done) {
  auto& params = trainable();
  const bool finite = params.values().isfinite().all().item<bool>() && optimizer_->exp_avg().isfinite().all().item<bool>() &&
                      optimizer_->exp_avg_sq().isfinite().all().item<bool>();
  if (!finite) {
    say("error: the parameters or the optimizer state are no longer finite after step " + std::to_string(steps_done) +
        "; not checkpointing; stopping\n");
    return false;
  }
  write_checkpoint(steps_done);
  return true;
}

void Trainer::write_checkpoint(int64_t steps_done) {
  // Every process's random state (dropout); rank 0 writes them with the state all share.
  auto rngs = world_->all_gather(rng_state(), "gathering the random states for the checkpoint of step " +
                                                  std::to_string(steps_done));
  if (!world_->is_main()) return;
  Checkpoint c;
  auto& params = trainable();
  c.tensors["params"] = params.values();
  c.tensors["exp_avg"] = optimizer_->exp_avg();
  c.tensors["exp_avg_sq"] = optimizer_->exp_avg_sq();
  c.tensors["rng"] = rngs[0];
  for (size_t r = 1; r < rngs.size(); ++r) c.tensors["rng.rank" + std::to_string(r)] = rngs[r];
  if (adalora())
    for (auto& [k, t] : peft_->allocator()->state()) c.tensors["allocator." + k] = t;
  auto pos = loader_->position();
  c.state = {{"step", steps_done},
             {"micro", micro_},
             {"epoch", pos.epoch},
             {"loader_step", pos.step},
             {"optimizer_steps", optimizer_->step_count()},
             {"total_steps", total_steps_},
             {"processes", world_->size()},
             {"options", opt_.to_json()}};
  if (peft_) c.state["adapter_config"] = peft_->config().to_json();
  auto dir = save_checkpoint((fs::path(opt_.output_dir) / "checkpoints").string(), steps_done, c, opt_.save_total_limit,
                             [&](const std::string& tmp) {
                               if (peft_) peft_->save((fs::path(tmp) / "adapter").string());
                             });
  last_finite_checkpoint_ = dir;
  say("checkpoint: " + dir + "\n");
}

void Trainer::restore(const std::string& path) {
  auto c = load_checkpoint(path);
  auto saved = c.state.at("options");
  auto now = opt_.to_json();
  for (auto* key : {"model", "method", "data", "batch-size", "max-length", "seed", "pack", "epochs", "max-steps"}) {
    if (saved.value(key, nlohmann::json()) != now.value(key, nlohmann::json())) {
      throw std::invalid_argument(path + ": the checkpoint was made with " + key + " = " + saved.value(key, nlohmann::json()).dump() +
                                  ", this run has " + now.value(key, nlohmann::json()).dump() + "; resume with the same settings");
    }
  }
  // The global batch must stay: processes x grad-accum micro-batches per step (their split may change).
  const int64_t saved_procs = c.state.value("processes", int64_t{1});
  const int64_t saved_accum = saved.value("grad-accum", nlohmann::json(1)).get<int64_t>();
  if (saved_procs * saved_accum != world_->size() * opt_.grad_accum) {
    throw std::invalid_argument(path + ": the checkpoint was made with " + std::to_string(saved_procs) + " process(es) x --grad-accum " +
                                std::to_string(saved_accum) + " = " + std::to_string(saved_procs * saved_accum) +
                                " micro-batches per optimizer step, this run has " + std::to_string(world_->size()) + " x " +
                                std::to_string(opt_.grad_accum) + "; resume with the same product (the global batch), e.g. --grad-accum " +
                                std::to_string(saved_procs * saved_accum) + " in one process");
  }
  if (saved_procs != world_->size())
    say("resuming a run of " + std::to_string(saved_procs) + " process(es) with " + std::to_string(world_->size()) +
        ": the same global batch of " + std::to_string(saved_procs * saved_accum) + " micro-batches per step\n");
  auto& params = trainable();
  auto t = c.tensors.at("params");
  if (t.numel() != params.numel()) throw std::invalid_argument(path + ": the checkpoint's parameters do not match this model/adapter");
  at::NoGradGuard no_grad;
  params.values().copy_(t);
  optimizer_->exp_avg().copy_(c.tensors.at("exp_avg"));
  optimizer_->exp_avg_sq().copy_(c.tensors.at("exp_avg_sq"));
  optimizer_->set_step_count(c.state.at("optimizer_steps").get<int64_t>());
  if (adalora()) {
    std::map<std::string, at::Tensor> st;
    for (auto& [k, v] : c.tensors)
      if (k.rfind("allocator.", 0) == 0) st[k.substr(10)] = v;
    peft_->allocator()->load_state(st);
    peft_->config().rank_pattern = AdapterConfig::from_json(c.state.at("adapter_config")).rank_pattern;
  }
  const std::string rng = world_->rank() == 0 ? "rng" : "rng.rank" + std::to_string(world_->rank());
  if (c.tensors.count(rng)) set_rng_state(c.tensors.at(rng));  // a process the run did not have keeps its own seed
  start_step_ = c.state.at("step").get<int64_t>();
  micro_ = c.state.at("micro").get<int64_t>();
  loader_->set_position({c.state.at("epoch").get<int64_t>(), c.state.at("loader_step").get<int64_t>()});
  last_finite_checkpoint_ = path;
  say("resumed from " + path + " at step " + std::to_string(start_step_) + "/" + std::to_string(total_steps_) + "\n");
}

void Trainer::save_outputs() {
  fs::path out(opt_.output_dir);
  if (peft_) {
    peft_->save((out / "adapter").string());
    say("adapter: " + (out / "adapter").string() + " (PEFT format)\n");
  } else {
    fs::path m = out / "model";
    save_model(*model_, m.string());
    write_tokenizer_files(opt_.model_dir, m.string());
    say("model: " + m.string() + " (Hugging Face format)\n");
  }
  if (opt_.report) {
    write_report(opt_.output_dir);
    say("report: " + (out / "report.html").string() + "\n");
  }
}

}  // namespace peft
