// Flat parameter and gradient buffers, and AdamW over them in a handful of tensor operations.
// Gradients land in the flat buffer because autograd accumulates in place into a preset .grad.
#include "peft/allocator/param_buffer.h"

#include <cmath>
#include <stdexcept>

namespace peft {

void ParamBuffer::assign(std::vector<std::pair<std::string, at::Tensor>> params) {
  int64_t total = 0;
  offsets_.clear();
  for (auto& [name, t] : params) {
    if (t.scalar_type() != at::kFloat) throw std::runtime_error("ParamBuffer: " + name + " is not float32");
    offsets_.push_back(total);
    total += t.numel();
  }
  auto device = params.empty() ? at::Device(at::kCPU) : params[0].second.device();
  values_ = at::empty({total}, at::TensorOptions().dtype(at::kFloat).device(device));
  grads_ = at::zeros({total}, values_.options());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    auto& t = params[i].second;
    auto n = t.numel();
    auto v = values_.narrow(0, offsets_[i], n).view(t.sizes());
    v.copy_(t.detach());
    t.set_data(v);
    t.requires_grad_(true);
    t.mutable_grad() = grads_.narrow(0, offsets_[i], n).view(t.sizes());
  }
  params_ = std::move(params);
}

void ParamBuffer::zero_grad() {
  if (grads_.defined()) grads_.zero_();
}

AdamW::AdamW(ParamBuffer& params, Options options) : params_(params), options_(options) {
  exp_avg_ = at::zeros_like(params_.values());
  exp_avg_sq_ = at::zeros_like(params_.values());
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++step_;
  auto& p = params_.values();
  auto& g = params_.grads();
  const auto& o = options_;
  if (o.weight_decay != 0) p.mul_(1.0 - o.lr * o.weight_decay);
  exp_avg_.lerp_(g, 1.0 - o.beta1);
  exp_avg_sq_.mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
  double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(step_));
  double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(step_));
  double step_size = o.lr / bias_correction1;
  if (!denom_.defined() || !denom_.is_same_size(exp_avg_sq_)) denom_ = at::empty_like(exp_avg_sq_);  // reused
  at::sqrt_out(denom_, exp_avg_sq_).div_(std::sqrt(bias_correction2)).add_(o.eps);
  p.addcdiv_(exp_avg_, denom_, -step_size);
}

}  // namespace peft
