// Building blocks shared by the model families: embeddings, RMSNorm, LayerNorm, rotary
// position embeddings, grouped-query head repetition and activations, as transformers computes them.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>

#include "peft/formats/model_config.h"

namespace peft {

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num, int64_t dim) { weight = register_parameter("weight", at::empty({num, dim})); }
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }
  at::Tensor weight;
};

// RMSNorm in float32, cast back to the input dtype before the weight (as Llama does). A bf16 x with a
// frozen bf16 weight runs as one function (core/bf16_rms_norm), the same arithmetic in one pass.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps) : eps(eps) { weight = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps) : eps(eps), dim(dim) {
    weight = register_parameter("weight", at::ones({dim}));
    bias = register_parameter("bias", at::zeros({dim}));
  }
  at::Tensor forward(const at::Tensor& x) { return at::layer_norm(x, {dim}, weight, bias, eps); }
  at::Tensor weight, bias;
  double eps;
  int64_t dim;
};

// Rotary position embeddings, rotate-half layout. Returns (cos, sin) of shape (B, T, head_dim)
// for integer `positions` (B, T), computed in float32 and cast to `dtype`.
class Rope {
 public:
  explicit Rope(const ModelConfig& c);
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& positions, at::ScalarType dtype) const;
  static at::Tensor apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);  // x: (B, H, T, D)

 private:
  at::Tensor inv_freq_;  // (head_dim / 2), float32
};

// (B, kv_heads, T, D) -> (B, kv_heads * n_rep, T, D), each kv head repeated n_rep times in place.
at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep);

// silu, gelu (erf), gelu_new (tanh approximation), relu.
at::Tensor activation(const at::Tensor& x, const std::string& name);

// Additive attention mask (B, 1, 1, T) from a (B, T) 0/1 padding mask: 0 for tokens, the
// dtype's lowest value for padding.
at::Tensor padding_mask(const at::Tensor& attention_mask, at::ScalarType dtype);

}  // namespace peft
