// The Llama family: LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM (q/k/v biases),
// with grouped-query attention, RoPE (rotate-half), RMSNorm in float32 and a tied or untied lm_head.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include "models/families.h"
#include "peft/layers/attention.h"
#include "peft/layers/frozen_linear.h"
#include "peft/layers/layers.h"

namespace peft {
namespace {

struct LlamaAttention : torch::nn::Module {
  LlamaAttention(const ModelConfig& c) : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
    q_proj = register_module("q_proj", Linear(c.hidden_size, heads * head_dim, c.attention_bias));
    k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads * head_dim, c.attention_bias));
    v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads * head_dim, c.attention_bias));
    o_proj = register_module("o_proj", Linear(heads * head_dim, c.hidden_size, c.o_proj_bias));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     KVCache* cache, size_t layer) {
    auto B = x.size(0), T = x.size(1);
    const at::Tensor xa = q_proj->adapter_input(x);  // x as the three adapters read it (one copy at most)
    auto q = q_proj->forward(x, xa).view({B, T, heads, head_dim}).transpose(1, 2);
    auto k = k_proj->forward(x, xa).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    auto v = v_proj->forward(x, xa).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    q = Rope::apply(q, cos, sin);
    k = Rope::apply(k, cos, sin);
    if (cache) cache->append(layer, k, v);
    auto out = attention(q, k, v, mask, /*causal=*/true, 1.0 / std::sqrt(static_cast<double>(head_dim)));
    return o_proj->forward(out.transpose(1, 2).reshape({B, T, heads * head_dim}));
  }

  int64_t heads, kv_heads, head_dim;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};

struct LlamaMLP : torch::nn::Module {
  LlamaMLP(const ModelConfig& c) : act(c.hidden_act) {
    gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor xa = gate_proj->adapter_input(x);
    return down_proj->forward(activation(gate_proj->forward(x, xa), act) * up_proj->forward(x, xa));
  }
  std::string act;
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};

struct LlamaDecoderLayer : torch::nn::Module {
  LlamaDecoderLayer(const ModelConfig& c) {
    self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c));
    mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
    input_layernorm = register_module("input_layernorm", std::make_shared<RMSNormImpl>(c.hidden_size, c.norm_eps));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<RMSNormImpl>(c.hidden_size, c.norm_eps));
  }
  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
  std::shared_ptr<RMSNormImpl> input_layernorm, post_attention_layernorm;
};

struct LlamaModel : torch::nn::Module {
  LlamaModel(const ModelConfig& c) {
    embed_tokens = register_module("embed_tokens", std::make_shared<EmbeddingImpl>(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(std::make_shared<LlamaDecoderLayer>(c));
    norm = register_module("norm", std::make_shared<RMSNormImpl>(c.hidden_size, c.norm_eps));
  }
  std::shared_ptr<EmbeddingImpl> embed_tokens;
  torch::nn::ModuleList layers;
  std::shared_ptr<RMSNormImpl> norm;
};

class LlamaForCausalLM : public Model {
 public:
  explicit LlamaForCausalLM(const ModelConfig& c) : Model(c), rope_(c) {
    model = register_module("model", std::make_shared<LlamaModel>(c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }

  ModelOutput forward(const Batch& b) override {
    auto B = b.input_ids.size(0), T = b.input_ids.size(1);
    int64_t past = b.cache ? b.cache->length() : 0;
    auto h = model->embed_tokens->forward(b.input_ids);
    auto positions = b.position_ids.defined()
                         ? b.position_ids
                         : at::arange(past, past + T, b.input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({B, T});
    auto [cos, sin] = rope_.cos_sin(positions, h.scalar_type());
    at::Tensor mask = causal_padding_mask(b, h.scalar_type());
    for (size_t i = 0; i < model->layers->size(); ++i) {
      auto layer = model->layers->ptr<LlamaDecoderLayer>(i);
      KVCache* cache = b.cache;
      h = run_block([layer, cos = cos, sin = sin, mask, cache, i](const at::Tensor& x) {
            at::Tensor y = x + layer->self_attn->forward(layer->input_layernorm->forward(x), cos, sin, mask, cache, i);
            return y + layer->mlp->forward(layer->post_attention_layernorm->forward(y));
          }, h, cache != nullptr);
    }
    h = model->norm->forward(h);
    ModelOutput out;
    out.logits = lm_head ? lm_head->forward(h) : tied_lm_head(h, model->embed_tokens->weight);
    if (b.labels.defined()) out.loss = causal_lm_loss(out.logits, b.labels);
    return out;
  }

  std::vector<std::string> default_target_modules() const override { return {"q_proj", "v_proj"}; }

  std::shared_ptr<LlamaModel> model;
  Linear lm_head{nullptr};

 private:
  Rope rope_;
};


void read_llama_config(const ConfigReader& r, ModelConfig& c) {
  const std::string& mt = c.model_type;
  if (c.architecture.empty()) c.architecture = mt == "llama" ? "LlamaForCausalLM"
                                             : mt == "mistral" ? "MistralForCausalLM" : "Qwen2ForCausalLM";
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_attention_heads = r.positive("num_attention_heads");
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  c.head_dim = r.has("head_dim") ? r.positive("head_dim") : c.hidden_size / c.num_attention_heads;
  if (c.head_dim <= 0)
    r.fail("num_attention_heads", "more heads (" + std::to_string(c.num_attention_heads) + ") than hidden_size (" +
                                      std::to_string(c.hidden_size) + ") leaves no head_dim");
  c.max_position_embeddings = r.has("max_position_embeddings") ? r.positive("max_position_embeddings") : 2048;
  c.norm_eps = r.number("rms_norm_eps", 1e-6);
  c.hidden_act = r.string("hidden_act", "silu");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (mt == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else if (mt == "llama") {
    c.attention_bias = r.boolean("attention_bias", false);
    c.o_proj_bias = c.attention_bias;
    c.mlp_bias = r.boolean("mlp_bias", false);
  }
  if (mt != "llama" && r.boolean("use_sliding_window", mt == "mistral")) {
    c.sliding_window = r.optional_int("sliding_window");
  }
  read_rope(r, c);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    r.fail("num_key_value_heads", "must divide num_attention_heads (" +
                                      std::to_string(c.num_attention_heads) + "), got " +
                                      std::to_string(c.num_key_value_heads));
  }
  if (c.hidden_act != "silu") r.fail("hidden_act", "\"" + c.hidden_act + "\" is not supported (supported: silu)");
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" &&
      c.architecture != "Qwen2ForCausalLM") {
    r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported_models());
  }
}

}  // namespace

ModelFamily llama_family() {
  return {"llama", {"llama", "mistral", "qwen2"},
          "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (model_type llama, mistral, qwen2)", read_llama_config,
          [](const ModelConfig& c) -> std::shared_ptr<Model> { return std::make_shared<LlamaForCausalLM>(c); }};
}

}  // namespace peft
