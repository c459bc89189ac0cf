// AdaLoRA's rank allocator (docs/adalora.md, sections 4-5) over the flat adapter buffer: importance
// EMAs in three element-wise ops, triplet scores by index_add, one kthvalue for the threshold.
#include "peft/allocator/rank_allocator.h"

#include <stdexcept>

#include "peft/layers/adapter.h"

namespace peft {

RankAllocator::RankAllocator(const AdapterConfig& config, std::vector<std::string> names,
                             std::vector<AdaLoraLayer*> layers, at::Tensor values, at::Tensor grads, int64_t offset)
    : names_(std::move(names)), beta1_(config.beta1), beta2_(config.beta2) {
  std::vector<at::Tensor> a_idx, b_idx, a_cnt, b_cnt;
  int64_t base = 0;
  auto lopt = at::TensorOptions().dtype(at::kLong);
  for (auto* l : layers) {
    int64_t r = l->rank(), in = l->in_features, out = l->out_features;
    ranks_.push_back(r);
    auto ids = at::arange(base, base + r, lopt);
    a_idx.push_back(ids.repeat_interleave(in));  // A (r, in): row i -> triplet i
    b_idx.push_back(ids.repeat({out}));          // B (out, r): column i -> triplet i
    a_cnt.push_back(at::full({r}, static_cast<double>(in), at::kDouble));
    b_cnt.push_back(at::full({r}, static_cast<double>(out), at::kDouble));
    a_len_ += r * in;
    e_len_ += r;
    b_len_ += out * r;
    base += r;
  }
  total_rank_ = base;
  auto device = values.device();
  a_triplet_ = at::cat(a_idx).to(device);
  b_triplet_ = at::cat(b_idx).to(device);
  a_count_ = at::cat(a_cnt).to(device);
  b_count_ = at::cat(b_cnt).to(device);
  values_ = values.narrow(0, offset, a_len_ + e_len_ + b_len_);
  grads_ = grads.narrow(0, offset, a_len_ + e_len_ + b_len_);
}

void RankAllocator::reset_ipt() {
  ipt_ema_ = at::Tensor();
  unc_ema_ = at::Tensor();
}

void RankAllocator::update_ipt() {
  at::NoGradGuard no_grad;
  if (!ipt_ema_.defined()) {
    ipt_ema_ = at::zeros_like(values_);
    unc_ema_ = at::zeros_like(values_);
  }
  if (!ipt_.defined()) {  // scratch reused every step: no fresh 4 x numel allocations to page in
    ipt_ = at::empty_like(values_);
    tmp_ = at::empty_like(values_);
  }
  // The same operations, in the same order, as (values * grads).abs(), ema * b + ipt * (1 - b), ...
  auto scalar = [&](double v) { return at::scalar_tensor(v, values_.options()); };
  at::mul_out(ipt_, values_, grads_).abs_();
  ipt_ema_.mul_(beta1_).add_(at::mul_out(tmp_, ipt_, scalar(1.0 - beta1_)));
  at::sub_out(tmp_, ipt_, ipt_ema_).abs_().mul_(1.0 - beta2_);
  unc_ema_.mul_(beta2_).add_(tmp_);
}

at::Tensor RankAllocator::triplet_scores() const {
  at::NoGradGuard no_grad;
  if (!ipt_ema_.defined()) return at::zeros({total_rank_}, values_.options());
  auto s = ipt_ema_ * unc_ema_;
  auto s_a = s.narrow(0, 0, a_len_), s_e = s.narrow(0, a_len_, e_len_), s_b = s.narrow(0, a_len_ + e_len_, b_len_);
  auto dopt = values_.options().dtype(at::kDouble);
  auto mean_a = at::zeros({total_rank_}, dopt).index_add_(0, a_triplet_, s_a.to(at::kDouble)).div_(a_count_);
  auto mean_b = at::zeros({total_rank_}, dopt).index_add_(0, b_triplet_, s_b.to(at::kDouble)).div_(b_count_);
  return s_e + (mean_a.to(at::kFloat) + mean_b.to(at::kFloat));
}

static std::map<std::string, std::vector<bool>> pattern_from_mask(const at::Tensor& keep_mask,
                                                                  const std::vector<std::string>& names,
                                                                  const std::vector<int64_t>& ranks) {
  auto keep = keep_mask.to(at::kCPU).contiguous();
  const bool* k = keep.data_ptr<bool>();
  std::map<std::string, std::vector<bool>> out;
  int64_t base = 0;
  for (size_t m = 0; m < names.size(); ++m) {
    out[names[m] + ".lora_E"] = std::vector<bool>(k + base, k + base + ranks[m]);
    base += ranks[m];
  }
  return out;
}

std::map<std::string, std::vector<bool>> RankAllocator::mask_to_budget(int64_t budget) {
  at::NoGradGuard no_grad;
  auto scores = triplet_scores();
  int64_t k = total_rank_ - budget;
  at::Tensor pruned;
  if (k <= 0) {
    pruned = at::zeros({total_rank_}, scores.options().dtype(at::kBool));
  } else {
    auto threshold = std::get<0>(at::kthvalue(scores, k));
    pruned = scores.le(threshold);  // ties at the threshold are all pruned, as PEFT does
  }
  auto e = values_.narrow(0, a_len_, e_len_);
  e.masked_fill_(pruned, 0.0);
  pattern_mask_ = pruned.logical_not();
  return pattern_from_mask(pattern_mask_, names_, ranks_);
}

void RankAllocator::mask_using_rank_pattern(const std::map<std::string, std::vector<bool>>& pattern) {
  at::NoGradGuard no_grad;
  if (!pattern_mask_.defined()) {
    if (pattern.empty()) return;
    std::vector<uint8_t> keep;
    keep.reserve(total_rank_);
    for (size_t m = 0; m < names_.size(); ++m) {
      auto it = pattern.find(names_[m] + ".lora_E");
      if (it == pattern.end() || static_cast<int64_t>(it->second.size()) != ranks_[m]) {
        throw std::runtime_error("rank_pattern has no entry of " + std::to_string(ranks_[m]) + " booleans for " +
                                 names_[m] + ".lora_E");
      }
      for (bool b : it->second) keep.push_back(b ? 1 : 0);
    }
    pattern_mask_ = at::tensor(keep, at::kByte).to(at::kBool).to(values_.device());
  }
  values_.narrow(0, a_len_, e_len_).masked_fill_(pattern_mask_.logical_not(), 0.0);
}

AllocationEvent RankAllocator::update_and_allocate(AdapterConfig& config, int64_t step) {
  ++calls_;
  AllocationEvent ev;
  ev.step = step;
  ev.phase = schedule_phase(config, step);
  int64_t n = num_modules();
  int64_t final_step = config.total_step - config.tfinal;
  auto sched = budget_schedule(config, n, step);
  ev.budget = sched.budget;
  if (step < final_step) {
    update_ipt();
    if (sched.mask) {
      config.rank_pattern = mask_to_budget(sched.budget);
      ev.masked = true;
    }
  } else if (step == final_step) {
    config.rank_pattern = mask_to_budget(sched.budget);
    ev.masked = true;
    ev.final_mask = true;
    reset_ipt();
  } else {
    mask_using_rank_pattern(config.rank_pattern);
  }
  return ev;
}

std::vector<int64_t> RankAllocator::live_ranks() const {
  auto e = values_.narrow(0, a_len_, e_len_).ne(0).to(at::kCPU);
  const bool* nz = e.data_ptr<bool>();
  std::vector<int64_t> out;
  int64_t base = 0;
  for (auto r : ranks_) {
    int64_t c = 0;
    for (int64_t i = 0; i < r; ++i) c += nz[base + i];
    out.push_back(c);
    base += r;
  }
  return out;
}

std::map<std::string, at::Tensor> RankAllocator::state() const {
  std::map<std::string, at::Tensor> s;
  if (ipt_ema_.defined()) {
    s["exp_avg_ipt"] = ipt_ema_;
    s["exp_avg_unc"] = unc_ema_;
  }
  if (pattern_mask_.defined()) s["pattern_mask"] = pattern_mask_.to(at::kByte);
  s["calls"] = at::full({1}, calls_, at::kLong);
  return s;
}

void RankAllocator::load_state(const std::map<std::string, at::Tensor>& s) {
  auto dev = values_.device();
  reset_ipt();
  pattern_mask_ = at::Tensor();
  if (s.count("exp_avg_ipt")) {
    ipt_ema_ = s.at("exp_avg_ipt").to(dev).to(at::kFloat).clone();
    unc_ema_ = s.at("exp_avg_unc").to(dev).to(at::kFloat).clone();
    if (ipt_ema_.numel() != values_.numel()) throw std::runtime_error("allocator state does not match the adapter's size");
  }
  if (s.count("pattern_mask")) pattern_mask_ = s.at("pattern_mask").to(dev).to(at::kBool);
  if (s.count("calls")) calls_ = s.at("calls").item<int64_t>();
}

}  // namespace peft
