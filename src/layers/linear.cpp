// The linear projection of every model family, with an optional adapter added to its output.
// Merging folds the adapter's delta into the base weight so inference costs nothing extra.
#include "peft/layers/linear.h"

#include <stdexcept>

#include "peft/layers/adapter.h"
#include "peft/layers/frozen_linear.h"
#include "peft/layers/lora_linear.h"

namespace peft {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias, bool fan_in_fan_out)
    : in_features_(in_features), out_features_(out_features), fan_in_fan_out_(fan_in_fan_out) {
  weight = register_parameter("weight", fan_in_fan_out ? at::empty({in_features, out_features})
                                                       : at::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", at::zeros({out_features}));
}

namespace {
// A bf16 x goes to float32 adapter factors as it is (core/bf16_lowrank reads bf16) unless dropout must
// first be applied to a float32 copy of it, as PEFT applies it.
bool adapter_reads_bf16(const AdapterLayer& adapter, const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 && adapter.dtype() == at::kFloat && x.device().is_cpu() &&
         !(adapter.dropout > 0.0 && adapter.training);
}
}  // namespace

at::Tensor LinearImpl::adapter_input(const at::Tensor& x) const {
  if (!adapter || merged || adapter->rank() == 0 || adapter_reads_bf16(*adapter, x)) return x;
  return x.to(adapter->dtype());
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return forward(x, at::Tensor()); }

at::Tensor LinearImpl::forward(const at::Tensor& x, const at::Tensor& x_adapter) {
  if (adapter && !merged && adapter->rank() > 0 && !weight.requires_grad()) {
    // Base and adapter as one function; the adapter sees x in its own dtype (float32 on a bf16 base).
    AdapterLayer::LowRank lr = adapter->low_rank();
    if (x.scalar_type() == weight.scalar_type()) {
      const at::Tensor h = adapter_reads_bf16(*adapter, x) ? x
                           : x_adapter.defined() && x_adapter.scalar_type() == lr.A.scalar_type()
                               ? adapter->apply_dropout(x_adapter)
                               : adapter->apply_dropout(x.to(lr.A.scalar_type()));
      return lora_linear(x, h, fan_in_fan_out_ ? weight.t() : weight, bias, lr.A, lr.B, lr.scale);
    }
  }
  at::Tensor y;
  if (!weight.requires_grad() && x.scalar_type() == weight.scalar_type()) {
    y = frozen_linear(x, fan_in_fan_out_ ? weight.t() : weight, bias);
  } else if (fan_in_fan_out_) {
    y = at::matmul(x, weight);
    if (bias.defined()) y = y + bias;
  } else {
    y = at::linear(x, weight, bias);
  }
  if (adapter && !merged) y = y + adapter->forward(x).to(y.scalar_type());
  return y;
}

void LinearImpl::merge(bool safe) {
  if (!adapter) throw std::runtime_error("merge: this projection has no adapter");
  if (merged) return;
  at::NoGradGuard no_grad;
  at::Tensor delta = adapter->delta_weight();  // (out, in)
  if (fan_in_fan_out_) delta = delta.t();
  delta = delta.to(weight.scalar_type());
  if (safe) {
    at::Tensor merged_w = weight + delta;
    if (!at::isfinite(merged_w).all().item<bool>()) {
      throw std::runtime_error("merge: the merged weight has NaN or infinite values; the adapter is broken");
    }
    weight.copy_(merged_w);
  } else {
    weight.add_(delta);
  }
  merged = true;
}

void LinearImpl::unmerge() {
  if (!merged) return;
  at::NoGradGuard no_grad;
  at::Tensor delta = adapter->delta_weight();
  if (fan_in_fan_out_) delta = delta.t();
  weight.sub_(delta.to(weight.scalar_type()));
  merged = false;
}

}  // namespace peft
